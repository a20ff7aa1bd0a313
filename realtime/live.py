"""``vocex-live``: the song without its vocals (karaoke) or the vocals alone, live.

    vocex-live -l                          # list audio devices
    vocex-live --device 3                  # karaoke from device 3's input to its output
    vocex-live -i "USB" -o "Speakers" --mode vocals --duration 60 --stats-json s.json

Threads: the audio callback is python-rtmixer's C callback; it only moves samples between
the device and two ring buffers.  A worker thread reads the input ring, runs the streaming
separator (STFT, U-Net, overlap-add) and writes the output ring, which starts prefilled.  If
the worker falls behind (the output ring holds less than one block), it skips inference for
what it is late on (karaoke plays the dry input, vocals mode silence; ``--on-late silence``
silences both), counts ``late_blocks``, and catches up.

While it plays, keys typed in its terminal change the mode, the mix and bypass (see
:data:`KEYS_HELP`); a thread of its own reads them, and the separator crossfades each change.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vocex.model.backends import default_model_path, load_backend, resolve_model
from vocex.model.cli import add_model_arguments, console
from vocex.model.errors import EXIT_OK, DeviceError, InputError, OutputError, raise_as
from vocex.model.files import atomic_path
from vocex.realtime.settings import AUTO_LOAD, choose_hop_batch, streaming_settings
from vocex.realtime.stream import MODES, StreamingSeparator
from vocex.realtime.timing import time_inference

PROG = "vocex-live"
MIX_STEP = 0.1  # what one + or - key adds to or takes from the mix
KEYS_HELP = """keys while it plays (in a terminal, unless --no-status):
  k  karaoke (the song without its vocals)     v  vocals only
  +  mix up 10 %      -  mix down 10 %          b  bypass on/off (the dry input)
  q  quit (as --duration ends it)
each change crossfades over a few milliseconds and shows in the status line"""
_ABANDONED_STREAM = False  # set when the device died under a stream that cannot be closed


def live_model_path() -> Path:
    """The shipped live model (falls back to the shipped default model)."""
    live = default_model_path().with_name("live.json")
    return live if live.exists() else default_model_path()


def resolve_device(spec: str | None, kind: str) -> int | None:
    """sounddevice device id from a number or a name substring (``None``: the default).

    Substrings match ``"<device name>, <host API name>"`` as in sounddevice, so ``JACK`` finds
    the JACK device; an ambiguous substring is an error that lists the candidates."""
    import sounddevice as sd

    if spec is None:
        return None
    try:
        devices = sd.query_devices()
    except sd.PortAudioError as exc:
        raise DeviceError(f"cannot list audio devices: {exc}") from None
    key = "max_input_channels" if kind == "input" else "max_output_channels"
    if spec.strip().isdigit():
        index = int(spec)
        if not 0 <= index < len(devices):
            raise DeviceError(f"no audio device {index} (vocex-live -l lists them)")
        if devices[index][key] < 1:
            raise DeviceError(f"device {index} ({devices[index]['name']}) has no {kind} channels")
        return index
    try:
        return int(sd.query_devices(spec, kind)["index"])
    except ValueError as exc:
        first = str(exc).splitlines()[0]
        if "multiple" in first.lower():
            raise DeviceError(f"{spec!r} matches several {kind} devices; give the number (vocex-live -l)") from None
        raise DeviceError(f"no {kind} device matches {spec!r} (vocex-live -l lists them)") from None


@dataclass
class LiveStats:
    """What a live run reports; ``to_json`` is the ``--stats-json`` document."""

    sample_rate: int
    model: str
    algorithmic_latency_ms: float
    device_latency_ms: float
    buffer_latency_ms: float
    hop_ms: float
    inference_interval_ms: float
    xruns: int = 0
    late_blocks: int = 0
    blocks: int = 0
    worker_chunks: int = 0
    restarts: int = 0
    clipped_samples: int = 0
    inference_ms: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    started_unix: float = 0.0
    xrun_times_s: list[float] = field(default_factory=list)
    ended_by: str = "duration"
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def total_latency_ms(self) -> float:
        """Input to output: algorithmic + vocex's buffering + what PortAudio reports for the device."""
        return round(self.algorithmic_latency_ms + self.buffer_latency_ms + self.device_latency_ms, 2)

    @property
    def load(self) -> float:
        return round(self.inference_ms.get("p99", 0.0) / self.inference_interval_ms, 4) if self.inference_interval_ms else 0.0

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items()}
        d["load"] = self.load
        d["total_latency_ms"] = self.total_latency_ms
        return d


class Levels:
    """Running input / output / vocal-reduction levels for the status line."""

    def __init__(self) -> None:
        self.in_energy = self.out_energy = 0.0
        self.n = 0

    def add(self, block_in: np.ndarray, block_out: np.ndarray) -> None:
        self.in_energy += float(np.dot(block_in.ravel(), block_in.ravel()))
        self.out_energy += float(np.dot(block_out.ravel(), block_out.ravel()))
        self.n += block_in.size

    def take(self) -> tuple[float, float, float]:
        """(input dBFS, output dBFS, output/input dB) since the last call."""
        if not self.n:
            return -math.inf, -math.inf, 0.0
        db = lambda e: 10 * math.log10(e / self.n + 1e-12)  # noqa: E731
        result = (db(self.in_energy), db(self.out_energy), db(self.out_energy) - db(self.in_energy))
        self.in_energy = self.out_energy = 0.0
        self.n = 0
        return result


class KeyControl:
    """Keys typed in a terminal change a separator's mode, mix and bypass while it plays.

    ``start()`` puts the terminal ``fd`` in cbreak mode (keys arrive one by one, unechoed;
    Ctrl-C still interrupts) and reads it on a thread of its own, never the audio thread;
    ``close()`` stops the thread and gives the terminal its settings back.  Every change is
    recorded in ``events`` (when, as Unix time; the key; the new mode, mix and bypass)."""

    def __init__(self, separator: StreamingSeparator, stop_event: threading.Event, fd: int = 0) -> None:
        self.sep, self.stop_event, self.fd = separator, stop_event, fd
        self.events: list[dict[str, Any]] = []
        self.quit = False
        self._saved: list | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def apply(self, key: str) -> bool:
        """Act on one key; returns whether it was one of :data:`KEYS_HELP`."""
        sep = self.sep
        if key in "kv":
            sep.mode = "karaoke" if key == "k" else "vocals"
        elif key in "+=-_":
            step = MIX_STEP if key in "+=" else -MIX_STEP
            sep.mix = min(1.0, max(0.0, round(sep.mix + step, 6)))
        elif key == "b":
            sep.bypass = not sep.bypass
        elif key == "q":
            self.quit = True
            self.stop_event.set()
        else:
            return False
        self.events.append({"unix": round(time.time(), 3), "key": key, "mode": sep.mode, "mix": sep.mix,
                            "bypass": sep.bypass})
        return True

    def start(self) -> bool:
        """Returns False (and changes nothing) if the terminal refuses cbreak mode."""
        import termios
        import tty

        try:
            self._saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd, termios.TCSANOW)
        except (termios.error, OSError):
            self._saved = None
            return False
        self._thread = threading.Thread(target=self._read, name="vocex-keys", daemon=True)
        self._thread.start()
        return True

    def _read(self) -> None:
        while not self._done.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if not ready:
                continue
            data = os.read(self.fd, 64)
            if not data:  # the terminal is gone
                return
            for key in data.decode(errors="ignore"):
                self.apply(key)

    def close(self) -> None:
        """Stop reading and restore the terminal (safe to call twice, or before ``start``)."""
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self._saved is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None


def keys_wanted(no_status: bool, stdin=None) -> bool:
    """Key control runs unless ``--no-status``, only when stdin is a terminal, and not in
    the background (``vocex-live &``: changing the terminal's settings would stop it)."""
    if no_status:
        return False
    try:
        fd = (sys.stdin if stdin is None else stdin).fileno()
        if not os.isatty(fd):
            return False
    except (AttributeError, ValueError, OSError):  # no stdin, or a closed one
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:  # a terminal that is not our controlling one: no job control to mind
        return True


class LiveEngine:
    """Device I/O (rtmixer or a copying sounddevice callback) around a streaming separator."""

    def __init__(self, separator: StreamingSeparator, stats: LiveStats, block_size: int, io: str = "rtmixer",
                 on_late: str = "dry", device: tuple[int | None, int | None] = (None, None),
                 latency: str | float | None = None, prefill_blocks: int | None = None) -> None:
        self.sep = separator
        self.stats = stats
        self.block_size = block_size
        self.io = io
        self.on_late = on_late
        self.device = device
        self.latency = latency
        n_ch = separator.n_channels
        self.n_ch = n_ch
        chunk = 1 << max(10, (4 * block_size - 1).bit_length())
        self.chunk = chunk
        self.prefill_blocks = prefill_blocks
        self.buf_in = np.zeros((chunk, n_ch), dtype=np.float32)
        self.buf_out = np.zeros((chunk, n_ch), dtype=np.float32)
        self.levels = Levels()
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.device_lost = False
        self.seen = {"blocks": 0, "xruns": 0}
        self._stats_action = None

    # -- device side -------------------------------------------------------------------------

    def warm_up(self) -> float:
        """Run the whole separator before the stream starts (numba compiles, the runtime
        allocates on its first calls); returns the median inference time in seconds."""
        core = self.sep.core
        self.sep.warm_up()
        core.timings.clear()  # the run's statistics start with the run
        return time_inference(core.backend, self.n_ch, runs=5, percentile=50, warm_up=0, columns=core.need)

    def open(self) -> None:
        import rtmixer
        import sounddevice as sd

        t_inf = self.warm_up()
        if self.prefill_blocks is None:
            # room for one block in flight plus three typical inferences of jitter
            block_s = self.block_size / self.sep.sample_rate
            self.prefill_blocks = 2 + math.ceil(3 * t_inf / block_s)
        self.prefill = self.prefill_blocks * self.block_size
        # how long the worker may spend on one chunk (it starts one block after the device
        # read it) before the device reads past the prefilled output: a longer stall is late
        self.stats.details["prefill_slack_ms"] = round(1000 * (self.prefill_blocks - 1) * self.block_size
                                                       / self.sep.sample_rate, 3)

        ring_size = 1 << max(14, (8 * self.chunk).bit_length())
        self.ring_in = rtmixer.RingBuffer(4 * self.n_ch, ring_size)
        self.ring_out = rtmixer.RingBuffer(4 * self.n_ch, ring_size)
        kwargs = dict(device=self.device, channels=self.n_ch, samplerate=self.sep.sample_rate,
                      blocksize=self.block_size, latency=self.latency)
        try:
            if self.io == "rtmixer":
                self.stream = rtmixer.MixerAndRecorder(**kwargs)
            else:
                self.late_callbacks = 0
                self.stream = sd.Stream(callback=self._callback, dtype="float32", **kwargs)
        except (sd.PortAudioError, ValueError) as exc:
            raise DeviceError(f"cannot open the audio device: {exc}") from None
        in_lat, out_lat = self.stream.latency
        rate = self.sep.sample_rate
        # the device side as PortAudio reports it, and vocex's own buffering: the output ring's
        # prefill plus the one block that the worker needs between two callbacks
        self.stats.device_latency_ms = round(1000 * (in_lat + out_lat), 2)
        self.stats.buffer_latency_ms = round(1000 * (self.prefill + self.block_size) / rate, 3)
        self.stats.details["portaudio_latency_ms"] = [round(1000 * in_lat, 2), round(1000 * out_lat, 2)]
        self.stats.details["ring_prefill_samples"] = self.prefill
        self.stats.details["buffer_latency_samples"] = self.prefill + self.block_size

    def _callback(self, indata, outdata, frames, time_info, status) -> None:  # sounddevice fallback
        if status.input_overflow or status.output_underflow or status.input_underflow or status.output_overflow:
            self.stats.xruns += 1
        self.ring_in.write(indata)
        got = self.ring_out.readinto(outdata)
        if got < frames:
            outdata[got:] = 0.0
            self.late_callbacks += 1

    def _start_playback(self) -> None:
        self.ring_out.write(np.zeros((self.prefill, self.n_ch), dtype=np.float32))
        if self.io == "rtmixer":
            self.play_action = self.stream.play_ringbuffer(self.ring_out)

    def _start_recording(self) -> None:
        if self.io == "rtmixer":
            self.rec_action = self.stream.record_ringbuffer(self.ring_in)

    # -- worker side -------------------------------------------------------------------------

    def _worker(self) -> None:
        try:
            sr = self.sep.sample_rate
            idle = self.block_size / sr / 4
            while not self.stop_event.is_set():
                if self.io == "rtmixer":
                    actions = self.stream.actions
                    if self.play_action not in actions or self.rec_action not in actions:
                        if not self.stream.active:
                            return  # the device is gone: the main thread reports it
                        self._recover()
                avail = self.ring_in.read_available
                if avail < self.block_size:
                    time.sleep(idle)
                    continue
                n = min(avail - avail % self.block_size, self.chunk)
                self.ring_in.readinto(self.buf_in[:n])
                late = self.ring_out.read_available < self.block_size
                if late:
                    self.stats.late_blocks += -(-n // self.block_size)
                out = self.buf_out[:n]
                self.sep.process_block(self.buf_in[:n], out, skip_inference=late)
                if late and self.on_late == "silence":
                    out[...] = 0.0
                self._limit(out)
                self.levels.add(self.buf_in[:n], out)
                self.stats.worker_chunks += 1
                if self.ring_out.write(out) < n:
                    self.stats.late_blocks += 1  # output ring full: cannot happen while the device runs
        except BaseException as exc:  # surfaces in the main thread
            self.error = exc
            self.stop_event.set()

    def _limit(self, out: np.ndarray) -> None:
        """Output is always finite and within [-1, 1]; clipped samples are counted."""
        if not np.isfinite(out).all():
            np.nan_to_num(out, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
        over = np.abs(out) > 1.0
        if over.any():
            self.stats.clipped_samples += int(over.sum())
            np.clip(out, -1.0, 1.0, out=out)

    def _recover(self) -> None:
        """The output ring ran dry (rtmixer then ends playback) or the input ring overflowed
        (rtmixer ends recording): drop the backlog, restart both with the same prefill, so
        the latency stays what was reported."""
        self.stats.late_blocks += 1
        self.stats.restarts += 1
        actions = self.stream.actions
        for action in (self.play_action, self.rec_action):
            if action in actions:
                cancel = self.stream.cancel(action)
                while cancel in self.stream.actions:  # rtmixer's wait(), but not past a dead device
                    if not self.stream.active or self.stop_event.is_set():
                        return
                    time.sleep(0.002)
        self.ring_in.flush()
        self.ring_out.flush()
        self.sep.reset()
        self._start_playback()
        self._start_recording()

    # -- run ---------------------------------------------------------------------------------

    def run(self, duration: float | None, status_line: bool) -> None:
        """Play until ``duration`` seconds, a stop request, Ctrl-C or a device failure."""
        worker = threading.Thread(target=self._worker, name="vocex-worker", daemon=True)
        started = time.monotonic()
        self.stats.started_unix = round(time.time(), 3)
        if self.io != "rtmixer":
            self._start_playback()  # the copying callback reads the ring from its first block
        try:
            self.stream.start()
            if self.io == "rtmixer":
                self._start_playback()
                self._start_recording()
            worker.start()
            try:
                while not self.stop_event.is_set():
                    if duration is not None and time.monotonic() - started >= duration:
                        break
                    self.stop_event.wait(0.25)
                    if not self.stream.active:
                        self.device_lost = True
                        raise DeviceError("the audio stream stopped (device or audio server gone)")
                    before = self.seen["xruns"]
                    xruns = self.xruns_now()
                    if self.seen["xruns"] > before:  # when they happened, for the record
                        self.stats.xrun_times_s.append(round(time.monotonic() - started, 2))
                    if status_line:
                        self._print_status(xruns)
            finally:
                self.stop_event.set()
                worker.join(timeout=0.5 if self.device_lost else 2.0)
                self._collect(started)
        finally:
            self.stats.inference_ms = self.sep.core.timings.summary_ms()
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Close the device stream, unless its server is gone: PortAudio's JACK host then
        waits forever for a process callback that never comes (in ``Pa_StopStream``,
        ``Pa_CloseStream`` and, at exit, ``Pa_Terminate``), so the stream is abandoned and
        sounddevice's exit handler is unregistered; the process is about to end anyway."""
        if getattr(self, "stream", None) is None:
            return
        if self.device_lost:
            import atexit

            import sounddevice as sd

            global _ABANDONED_STREAM
            _ABANDONED_STREAM = True
            atexit.unregister(sd._exit_handler)
            return
        self.stream.close()

    def _collect(self, started: float) -> None:
        self.stats.seconds = round(time.monotonic() - started, 2)
        if self.device_lost:  # the counters live in the stream, which can no longer be stopped
            self.stats.details["stats_error"] = "device lost: counts are those polled while it ran"
            self.stats.blocks, self.stats.xruns = self.seen["blocks"], self.seen["xruns"]
            return
        try:
            self.stream.stop()
            if self.io == "rtmixer":
                if self._stats_action is not None and self._stats_action not in self.stream.actions:
                    self._add_counts(self._stats_action.stats)
                self._add_counts(self.stream.stats)
                self.stats.blocks, self.stats.xruns = self.seen["blocks"], self.seen["xruns"]
        except Exception as exc:  # the server may be gone; the counts so far stand
            self.stats.details["stats_error"] = str(exc)
        if self.io != "rtmixer":
            self.stats.late_blocks += self.late_callbacks

    def xruns_now(self) -> int:
        """Device xruns so far.  rtmixer exposes its counters only on a stopped stream, so a
        running count is polled with fetch-and-reset actions and summed in ``self.seen``."""
        if self.io != "rtmixer":
            return self.stats.xruns
        action = self._stats_action
        if action is not None and action not in self.stream.actions:
            self._add_counts(action.stats)
            action = None
        if action is None:
            self._stats_action = self.stream.fetch_and_reset_stats()
        return self.seen["xruns"]

    def _add_counts(self, st) -> None:  # st: rtmixer's struct stats
        self.seen["blocks"] += int(st.blocks)
        self.seen["xruns"] += int(st.input_overflows + st.input_underflows + st.output_overflows + st.output_underflows)

    def _print_status(self, xruns: int) -> None:
        lin, lout, red = self.levels.take()
        t = self.sep.core.timings
        recent = t.recent()
        load = (np.percentile(recent, 99) * 1000 / self.stats.inference_interval_ms) if recent.size else 0.0
        sep = self.sep
        line = (f"{sep.mode:<7} mix {100 * sep.mix:3.0f} %{'  BYPASS' if sep.bypass else '        '}  "
                f"in {lin:6.1f} dBFS  out {lout:6.1f} dBFS  change {red:+5.1f} dB  load {load:4.2f}  "
                f"latency {self.stats.total_latency_ms:5.1f} ms  xruns {xruns}  "
                f"late {self.stats.late_blocks}")
        print("\r" + line, end="", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0], epilog=KEYS_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-l", "--list-devices", action="store_true", help="list audio devices and exit")
    p.add_argument("-d", "--device", help="input and output device (numeric id or name substring)")
    p.add_argument("-i", "--input-device", help="input device (id or name substring)")
    p.add_argument("-o", "--output-device", help="output device (id or name substring)")
    p.add_argument("--samplerate", type=int, help="device sample rate in Hz (default: the device's own)")
    p.add_argument("--blocksize", type=int, default=256, help="device block size in samples")
    p.add_argument("--latency", help="PortAudio latency: 'low', 'high' or seconds (default: low)", default="low")
    p.add_argument("--channels", type=int, default=2, help="1 (mono) or 2 (stereo); each separated on its own")
    p.add_argument("--mode", choices=MODES, default="karaoke", help="karaoke: without vocals; vocals: vocals only")
    p.add_argument("--mix", type=float, default=1.0, help="wet amount 0..1 (0 = the dry input)")
    add_model_arguments(p, backends=("onnx", "torchscript"))
    p.add_argument("--hop-batch", help="K: hops per inference, or 'auto': the smallest K whose measured "
                   "inference time takes at most half the time between inferences (default: the model card's)")
    p.add_argument("--lookahead", type=int, help="L: lookahead frames (default: the model card's)")
    p.add_argument("--io", choices=("rtmixer", "callback"), default="rtmixer",
                   help="device I/O: rtmixer's C callback (default) or a copying sounddevice callback")
    p.add_argument("--prefill-blocks", type=int,
                   help="output ring prefill in blocks (default: from the measured inference time)")
    p.add_argument("--on-late", choices=("dry", "silence"), default="dry",
                   help="what plays while the worker is late")
    p.add_argument("--duration", type=float, help="stop after this many seconds (exit 0)")
    p.add_argument("--stats-json", type=Path, help="write run statistics here on exit")
    p.add_argument("--no-status", action="store_true", help="no status line and no keys")
    return p


def _device_rate(device: int | None, fallback: int) -> int:
    """The output device's own default rate (a JACK server's rate), else the model's."""
    import sounddevice as sd

    try:
        return int(sd.query_devices(device, "output")["default_samplerate"])
    except (ValueError, sd.PortAudioError):
        return fallback


def _latency_arg(value: str) -> str | float:
    if value in ("low", "high"):
        return value
    try:
        return float(value)
    except ValueError:
        raise DeviceError(f"--latency must be 'low', 'high' or seconds, got {value!r}") from None


@console(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_devices:
        with raise_as(DeviceError, Exception, message=lambda exc: f"cannot list audio devices: {exc}"):
            import sounddevice as sd  # PortAudio missing or broken: exit 5

            print(sd.query_devices())
        return EXIT_OK
    if args.channels not in (1, 2):
        raise InputError("--channels must be 1 or 2")
    if not 0.0 <= args.mix <= 1.0:
        raise InputError("--mix must be between 0 and 1")
    if args.stats_json is not None and not args.stats_json.parent.is_dir():
        raise OutputError(f"{args.stats_json.parent}: folder for --stats-json does not exist")
    files = resolve_model(args.model or live_model_path())
    backend = load_backend(files, args.backend, args.accel, args.threads or 1)
    card = files.card
    auto: dict[str, Any] = {}
    if args.hop_batch not in (None, "auto") and not args.hop_batch.isdigit():
        raise InputError(f"--hop-batch must be a whole number of hops or 'auto', got {args.hop_batch!r}")
    # auto starts from K=1 (the least context it needs) with the card's or the given lookahead
    hop_batch = 1 if args.hop_batch == "auto" else None if args.hop_batch is None else int(args.hop_batch)
    with raise_as(InputError, ValueError):
        settings = streaming_settings(card, hop_batch, args.lookahead)
    if args.hop_batch == "auto":
        seconds = time_inference(backend, args.channels, columns=settings.columns_needed(card))  # at K=1
        settings = replace(settings, hop_batch=choose_hop_batch(card, seconds, settings.lookahead_frames))
        auto = {"hop_batch_auto": {"inference_ms_p90": round(1000 * seconds, 3), "target_load": AUTO_LOAD}}
        print(f"{PROG}: --hop-batch auto: inference p90 {1000 * seconds:.2f} ms -> K={settings.hop_batch}",
              file=sys.stderr)
    latency = _latency_arg(args.latency)
    dev_in = resolve_device(args.input_device or args.device, "input")
    dev_out = resolve_device(args.output_device or args.device, "output")
    rate = args.samplerate or _device_rate(dev_out, card.sample_rate)
    separator = StreamingSeparator(backend, args.channels, rate, settings, args.mode, args.mix,
                                   max_block=max(4096, args.blocksize))
    stats = LiveStats(
        sample_rate=rate, model=str(files.card_path),
        algorithmic_latency_ms=round(1000 * separator.latency_samples / rate, 2), device_latency_ms=0.0,
        buffer_latency_ms=0.0,
        hop_ms=round(1000 * card.hop / card.sample_rate, 3),
        inference_interval_ms=round(1000 * settings.hop_batch * card.hop / card.sample_rate, 3),
        details={"mode": args.mode, "mix": args.mix, "backend": backend.name, "device": backend.device,
                 "channels": args.channels, "blocksize": args.blocksize, "io": args.io,
                 "algorithmic_latency_samples": separator.latency_samples, **settings.describe(card), **auto},
    )
    engine = LiveEngine(separator, stats, args.blocksize, args.io, args.on_late, (dev_in, dev_out), latency,
                        args.prefill_blocks)
    engine.open()

    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: engine.stop_event.set())
    status = not args.no_status and sys.stderr.isatty()
    keys = KeyControl(separator, engine.stop_event) if keys_wanted(args.no_status) else None
    try:
        if keys is not None and keys.start():
            print(f"{PROG}: keys: k karaoke, v vocals, +/- mix, b bypass, q quit", file=sys.stderr)
        engine.run(args.duration, status)
        stats.ended_by = "duration" if args.duration is not None and not engine.error else "signal"
        if keys is not None and keys.quit:
            stats.ended_by = "key q"
    except KeyboardInterrupt:
        stats.ended_by = "ctrl-c"
        raise
    except DeviceError as exc:
        stats.ended_by = f"device error: {exc}"
        raise
    finally:
        if keys is not None:  # the terminal's settings come back on every way out
            keys.close()
            stats.details["controls"] = keys.events
        signal.signal(signal.SIGTERM, previous)
        engine.close()
        if stats.inference_ms == {}:
            stats.inference_ms = separator.core.timings.summary_ms()
        if status:
            print(file=sys.stderr)
        if args.stats_json is not None:
            with atomic_path(args.stats_json) as tmp:
                tmp.write_text(json.dumps(stats.to_json(), indent=2) + "\n")
        print(f"{PROG}: {stats.seconds:.1f} s, {separator.mode}, latency {stats.total_latency_ms:.1f} ms "
              f"(algorithmic {stats.algorithmic_latency_ms:.1f} + buffers {stats.buffer_latency_ms:.1f} + device "
              f"{stats.device_latency_ms:.1f}), load {stats.load:.2f}, xruns {stats.xruns}, "
              f"late blocks {stats.late_blocks}", file=sys.stderr)
    return EXIT_OK


def cli() -> None:
    """Console-script entry point: ``main()``, then exit.  After the audio server died, the
    abandoned stream's PortAudio/JACK threads can hold up interpreter teardown for seconds,
    so the process then ends at once (the statistics file and the summary are already out)."""
    code = main()
    if _ABANDONED_STREAM:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    cli()
