"""vocex-live's keys: mode, mix and bypass while it plays.  Unit tests of the key handling and
the terminal, then vocex-live in a pseudo-terminal on the JACK dummy server, typed at."""

import json
import os
import select
import subprocess
import sys
import termios
import threading
import time

import numpy as np
import pytest

import vocex
from vocex.model.backends import resolve_model
from vocex.realtime.jackloop import PlayRecord, wait_for_ports
from vocex.realtime.keys import KEYS_HELP, KeyControl, keys_wanted
from vocex.realtime.live import build_parser
from vocex.realtime.stream import FADE_MS, StreamingSeparator
from tests.conftest import TINY
from tests.realtime.test_live_jack import (ATTEMPTS, PERIOD, RATE, SHIFTS, WINDOW_MODEL, Unjudged, _db, _song,  # noqa: F401
                                           _stalled, _unglitched, brief, jack_server, offline_phases)

# the keys act on the engine's output, whatever the model: the window-form live model keeps the
# offline reference to a hop batch's phases (a stateful card's would be 64)
MODEL = WINDOW_MODEL


@pytest.fixture
def separator(tiny_backend):
    return StreamingSeparator(tiny_backend, 2, TINY["sample_rate"], mode="karaoke", mix=0.85)


def test_keys_set_mode_mix_and_bypass(separator):
    stop = threading.Event()
    keys = KeyControl(separator, stop)
    for key, (mode, mix, bypass) in [("v", ("vocals", 0.85, False)), ("+", ("vocals", 0.95, False)),
                                     ("+", ("vocals", 1.0, False)), ("=", ("vocals", 1.0, False)),
                                     ("k", ("karaoke", 1.0, False)), ("-", ("karaoke", 0.9, False)),
                                     ("b", ("karaoke", 0.9, True)), ("b", ("karaoke", 0.9, False))]:
        assert keys.apply(key)
        assert (separator.mode, separator.mix, separator.bypass) == (mode, mix, bypass), key
    for _ in range(12):
        keys.apply("-")
    assert separator.mix == 0.0
    assert not keys.apply("x") and not keys.apply("\n")
    assert not stop.is_set() and keys.apply("q") and stop.is_set() and keys.quit
    assert [e["key"] for e in keys.events][:3] == ["v", "+", "+"] and keys.events[0]["mode"] == "vocals"


def test_keys_are_read_in_cbreak_mode_and_the_terminal_is_restored(separator):
    master, slave = os.openpty()
    try:
        before = termios.tcgetattr(slave)
        assert before[3] & termios.ICANON and before[3] & termios.ECHO
        keys = KeyControl(separator, threading.Event(), fd=slave)
        assert keys.start()
        during = termios.tcgetattr(slave)
        assert not during[3] & termios.ICANON and not during[3] & termios.ECHO
        os.write(master, b"vb")  # no newline: cbreak hands over each key as it comes
        deadline = time.monotonic() + 5
        while len(keys.events) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (separator.mode, separator.bypass) == ("vocals", True)
        keys.close()
        assert termios.tcgetattr(slave) == before
        keys.close()  # twice is harmless
    finally:
        os.close(master)
        os.close(slave)


def test_keys_only_with_status_and_a_terminal_on_stdin():
    master, slave = os.openpty()
    r, w = os.pipe()
    try:
        with open(slave, closefd=False) as tty, open(r, closefd=False) as pipe:
            assert keys_wanted(False, tty)  # a terminal (not this process's controlling one)
            assert not keys_wanted(True, tty)  # --no-status
            assert not keys_wanted(False, pipe)  # stdin not a terminal: no keys, as before
    finally:
        for fd in (master, slave, r, w):
            os.close(fd)


def test_the_crossfade_fit_tells_a_fade_from_a_click():
    """The JACK test's judge of a change: the live output's crossfade explains the change to far
    above MATCH_DB; a hard switch, or a fade of twice the length, does not."""
    rng = np.random.default_rng(0)
    t = np.arange(RATE)[:, None] / RATE
    a = (0.3 * np.sin(2 * np.pi * 220 * t + [0, 1]) + 0.05 * rng.standard_normal((RATE, 2))).astype(np.float32)
    b = (0.3 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.standard_normal((RATE, 2))).astype(np.float32)
    fade, at = round(FADE_MS * RATE / 1000), 20000
    ramp = lambda n: np.clip((np.arange(RATE) - at + 1) / n, 0, 1)[:, None]  # noqa: E731
    start, snr = _fit_crossfade(a + ramp(fade) * (b - a), a, b, at - 5000, at + 5000, fade)
    assert start == at and snr > 100
    for y in (np.where(np.arange(RATE)[:, None] < at, a, b), a + ramp(2 * fade) * (b - a)):
        assert _fit_crossfade(y, a, b, at - 5000, at + 5000, fade)[1] < MATCH_DB - 5


def test_help_lists_the_keys():
    text = build_parser().format_help()
    assert KEYS_HELP in text and "bypass" in text


# -- vocex-live in a pseudo-terminal on the JACK dummy server ------------------------------------

# a new session's first terminal becomes its controlling one: the launcher opens the pty, makes
# it stdin, stdout and stderr, and becomes vocex-live (so Ctrl-C typed there is a real SIGINT)
LAUNCH = ("import os, sys; fd = os.open(sys.argv[1], os.O_RDWR); [os.dup2(fd, i) for i in range(3)]; "
          "os.execv(sys.executable, [sys.executable, '-m', 'vocex.realtime.live', *sys.argv[2:]])")


class Terminal:
    """A process in a pseudo-terminal of its own; what it writes there is collected in ``text``."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, self.slave = os.openpty()  # the test keeps the slave: its settings outlive the process
        self.settings = termios.tcgetattr(self.slave)
        self.proc = subprocess.Popen([sys.executable, "-c", LAUNCH, os.ttyname(self.slave), *args], env=env,
                                     start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.text = ""
        self._done = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._done.is_set():
            if select.select([self.master], [], [], 0.05)[0]:
                self.text += os.read(self.master, 4096).decode(errors="replace")

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def wait_for(self, text: str, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while text not in self.text and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return text in self.text

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._done.set()
        self._reader.join()
        os.close(self.master)
        os.close(self.slave)


SONG_S = 20.0
# (song second, keys typed then, 0.1 s apart, the output's (dry, vocal) gains after them, what
# the status line shows then, whether the keys make one change whose crossfade is fitted);
# vocex-live starts in vocals mode.  "-----" is a staircase of five small changes (its
# segments are judged).  Each fitted change moves the dry gain, so that the accompaniment,
# always there, tells where it happened (a change of the vocal gain alone vanishes while the
# singer pauses)
PLAN = [(0.0, "", (0.0, 1.0), "vocals  mix 100 %", False),
        (4.0, "k", (1.0, -1.0), "karaoke mix 100 %", True),
        (8.0, "-----", (1.0, -0.5), "karaoke mix  50 %", False),
        (12.0, "v", (0.5, 0.5), "vocals  mix  50 %", True),
        (16.0, "b", (1.0, 0.0), "BYPASS", True)]
SETTLE_S = 0.3  # a segment is judged from this long after its keys to this long before the next
MATCH_DB = 30.0  # as the karaoke test: the live output against the offline computation
AT_ONCE_S = 0.1  # the crossfade starts within this of the key (vocex's worker and the test's clocks)


def _placed(plan, voc: np.ndarray, dry: np.ndarray, reach: float = 0.5, window: float = 0.1):
    """``plan`` with each single change moved (at most ``reach`` seconds) to where the two
    outputs it switches between differ most: a change where they hardly differ (the singer
    pauses, and the change only scales the vocals) can neither click nor be located."""
    placed = list(plan)
    for k, (second, keys, gains, status, one_change) in enumerate(plan):
        if not one_change:
            continue
        before = plan[k - 1][2]
        diff = (gains[0] - before[0]) * dry + (gains[1] - before[1]) * voc
        lo, hi = int((second - reach) * RATE), int((second + reach) * RATE)
        energy = np.convolve(np.sum(diff[lo:hi] ** 2, axis=1), np.ones(int(window * RATE)), "same")
        placed[k] = (round((lo + int(np.argmax(energy))) / RATE, 3), keys, gains, status, one_change)
    return placed


def _candidates(voc: list[np.ndarray], dry: np.ndarray, gains: tuple[float, float]) -> list[np.ndarray]:
    """The output at ``gains`` for each hop-batch phase."""
    return [gains[0] * dry + gains[1] * v for v in voc]


def _best_alignment(cands, live, lo, hi):
    """(SNR dB, phase, shift) of ``live[lo:hi]`` against the best aligned candidate (a dropped
    cycle moves the stream by whole periods: ``SHIFTS``)."""
    seg = live[lo:hi]
    best = None
    for p, c in enumerate(cands):
        for d in SHIFTS:
            if lo + d < 0 or hi + d > len(c):
                continue
            ref = c[lo + d : hi + d]
            snr = _db(float(np.sum(ref**2)), float(np.sum((seg - ref) ** 2)))
            if best is None or snr > best[0]:
                best = (snr, p, d)
    return best


def _fit_crossfade(live, a, b, lo, hi, fade):
    """Where, in ``[lo, hi)``, a linear ``fade``-sample crossfade from ``a`` to ``b`` best explains
    ``live``; returns (start, dB of the change ``b - a`` over what the crossfade leaves
    unexplained, from a fade before its start to a fade after its end: a hard switch, or a
    fade twice as long, leaves about 15 dB)."""
    err_a = np.cumsum(np.sum((live - a) ** 2, axis=1))
    err_b = np.cumsum(np.sum((live - b) ** 2, axis=1)[::-1])[::-1]  # from each sample to the end
    starts = np.arange(lo, hi)
    coarse = starts[np.argmin(err_a[starts - 1] + err_b[starts + fade])]

    def error(s):
        t = np.arange(s - fade, s + 2 * fade)
        ramp = np.clip((t - s + 1) / fade, 0, 1)[:, None]
        return float(np.sum((live[t] - (1 - ramp) * a[t] - ramp * b[t]) ** 2))

    s = min(range(coarse - fade, coarse + fade + 1), key=error)
    return s, _db(float(np.sum((b - a)[s - fade : s + 2 * fade] ** 2)), error(s))


def _judge(voc, dry, rec, stats, notes: list[str]):
    """None if the live output follows the keys: each segment matches the offline output at the
    gains its keys set, and each fitted change is a linear crossfade starting at the key;
    ``Unjudged`` where xruns leave a segment under a second; else what is wrong.  What was
    measured goes to ``notes``."""
    buffer = stats["details"]["buffer_latency_samples"]
    n = len(dry)
    live = rec.audio[buffer : buffer + n]
    keep = _unglitched(rec, stats, buffer, n)
    events = stats["details"]["controls"]
    times, i = [], 0  # song sample of each group's first and last key, from vocex-live's record
    for _, keys, _, _, _ in PLAN[1:]:
        group = events[i : i + len(keys)]
        i += len(keys)
        assert "".join(e["key"] for e in group) == keys, events
        times.append([int((e["unix"] - rec.started_unix) * RATE) for e in (group[0], group[-1])])
    bounds = [(0, 0)] + times + [(n, n)]
    problems, alignments = [], []
    for k, (_, keys, gains, _, _) in enumerate(PLAN):
        lo, hi = bounds[k][1] + int(SETTLE_S * RATE), bounds[k + 1][0] - int(SETTLE_S * RATE)
        judged = keep[lo:hi]
        if judged.sum() < RATE:
            return Unjudged(f"xruns leave segment {k} ({keys!r}) under a second")
        # the longest unglitched stretch of the segment
        edges = np.flatnonzero(np.diff(np.r_[0, judged.astype(np.int8), 0]))
        a, b = max(zip(edges[::2], edges[1::2]), key=lambda e: e[1] - e[0])
        snr, p, d = _best_alignment(_candidates(voc, dry, gains), live, lo + a, lo + b)
        alignments.append((p, d))
        notes.append(f"segment {k}: {snr:.1f} dB over {(b - a) / RATE:.1f} s")
        if snr < MATCH_DB:
            problems.append(f"segment {k} after {keys!r}: {snr:.1f} dB against the output at gains {gains}")
    fade = round(FADE_MS * RATE / 1000)
    for k in range(1, len(PLAN)):
        keys, one_change = PLAN[k][1], PLAN[k][4]
        if not one_change:
            continue
        at = bounds[k][1]
        lo, hi = at - int(0.3 * RATE), at + int(0.3 * RATE)
        if not keep[lo - 2 * fade : hi + 2 * fade].all():
            continue  # an xrun near the change: the segments around it are judged anyway
        p, d = alignments[k - 1]
        shift = lambda c: np.roll(c, -d, axis=0)  # noqa: E731 (d periods, far from the ends)
        a, b = (shift(_candidates(voc, dry, PLAN[j][2])[p]) for j in (k - 1, k))
        start, snr = _fit_crossfade(live, a, b, lo, hi, fade)
        notes.append(f"change {keys!r}: crossfade fitted at {start - at:+d} samples from the key, explains it to "
                     f"{snr:.1f} dB")
        if snr < MATCH_DB or abs(start - at) > AT_ONCE_S * RATE:
            problems.append(f"change {keys!r}: a {fade}-sample crossfade fitted best at {start - at:+d} samples "
                            f"from the key explains it to {snr:.1f} dB only")
    return "; ".join(problems) or None


def _typed_run(server, folder, song, plan):
    """vocex-live in a pseudo-terminal, the song played and recorded, the keys of ``plan``
    typed at their times, then Ctrl-C; returns (recording, stats, terminal text)."""
    args = ["-i", "JACK", "-o", "JACK", "--blocksize", str(PERIOD), "--model", MODEL, "--mode", "vocals",
            "--stats-json", str(folder / "stats.json")]
    term = Terminal(args, server.env)
    try:
        assert term.wait_for("keys: k karaoke", timeout=90), term.text
        ins = wait_for_ports(server.name, "PortAudio:in", 2)
        outs = wait_for_ports(server.name, "PortAudio:out", 2)
        time.sleep(1.0)  # let vocex-live settle into its steady state
        player = PlayRecord(server.name, song, ins, outs, tail=1.5)
        result = {}
        thread = threading.Thread(target=lambda: result.update(rec=player.run()))
        thread.start()
        assert player.connected.wait(20)
        t0 = time.time() + player.preroll / RATE  # when the song starts
        shown = []
        for second, keys, _, status, _ in plan:
            for key in keys:
                time.sleep(max(0.0, t0 + second - time.time()))
                term.type(key)
                second += 0.1
            shown.append(term.wait_for(status, timeout=3.0))
        thread.join(SONG_S + 30)
        assert "rec" in result, "the recording did not complete"
        assert all(shown), f"the status line did not show every change: {shown}\n{term.text[-2000:]}"
        term.type("\x03")  # Ctrl-C
        term.proc.wait(30)
        assert term.proc.returncode == 130, term.text[-2000:]
        # the terminal has its settings back (vocex-live ran it in cbreak mode)
        assert termios.tcgetattr(term.slave) == term.settings
    finally:
        term.close()
    stats = json.loads((folder / "stats.json").read_text())
    assert stats["ended_by"] == "ctrl-c"
    return result["rec"], stats, term.text


@pytest.mark.jack
@pytest.mark.slow
def test_keys_change_the_live_output_at_once_without_a_click(jack_server, tmp_path):
    song = _song(SONG_S)
    n = len(song)
    voc, _, latency = offline_phases(resolve_model(MODEL), song, "vocals")  # the offline vocal estimate
    dry = np.concatenate([np.zeros((latency, 2), np.float32), song])[:n]

    failures = []
    for attempt in range(1, ATTEMPTS + 1):
        folder = tmp_path / f"attempt{attempt}"
        folder.mkdir()
        rec, stats, _ = _typed_run(jack_server, folder, song, _placed(PLAN, voc[0], dry))
        # the API's stream reports the latency vocex-live reports for the same settings
        assert vocex.stream(sample_rate=RATE, channels=2, model=MODEL).latency_samples == \
            stats["details"]["algorithmic_latency_samples"]
        notes = []
        verdict = _judge(voc, dry, rec, stats, notes)
        if verdict is None and stats["late_blocks"] == 0 and stats["restarts"] == 0:
            print("; ".join(notes))
            if failures:
                print(f"clean on attempt {attempt}; earlier: {brief(failures)}")
            return
        failures.append({"attempt": attempt, "check": verdict, "late_blocks": stats["late_blocks"],
                         "restarts": stats["restarts"], "xruns_s": stats["xrun_times_s"],
                         "harness_xruns_s": rec.xrun_times_s,
                         "stalled": isinstance(verdict, Unjudged) or _stalled(stats)})
    if all(f["stalled"] for f in failures):
        pytest.skip(f"machine stalls in all {ATTEMPTS} runs, no run could be judged: {brief(failures)}")
    pytest.fail(f"no clean run in {ATTEMPTS}: {brief(failures)}")
