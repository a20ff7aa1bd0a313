"""``vocex-bench soak``: vocex-live for N minutes on a JACK dummy server with a real song
looped into its inputs: xruns, late blocks, load, and the resident memory of the vocex-live
process sampled every few seconds (growth per minute from a least-squares fit after the
first minute's warm-up).  ``cpu_hog`` N runs N processes spinning on the cores beside it
(a busy machine: a browser, a game, a build), started before the control run and always
stopped at the end.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from vocex.realtime.jackloop import JackServer, wait_for_ports


@contextmanager
def cpu_hogs(n: int) -> Iterator[list[subprocess.Popen]]:
    """``n`` processes that each spin on a core for as long as the block runs; always stopped
    (terminated, killed after 5 s) when it ends, however it ends."""
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def rss_mib(pid: int) -> float:
    """Resident set size of a process from /proc, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class LoopPlayer:
    """A JACK client that plays ``signal`` in a loop into ``targets`` until closed."""

    def __init__(self, server: str, signal: np.ndarray, targets: list[str]) -> None:
        import jack

        self.signal = np.ascontiguousarray(signal, dtype=np.float32)
        self.client = jack.Client("vocex-looper", servername=server, no_start_server=True)
        self.ports = [self.client.outports.register(f"out_{c + 1}") for c in range(signal.shape[1])]
        self.pos = 0
        self.xruns = 0  # every xrun the server reports to its clients, whoever caused it
        self.client.set_process_callback(self._process)
        self.client.set_xrun_callback(self._xrun)
        self.targets = targets

    def _xrun(self, delay_usecs: float) -> None:
        self.xruns += 1

    def _process(self, frames: int) -> None:
        # no allocation here: this runs in JACK's real-time thread, holding the GIL
        n = len(self.signal)
        first = min(frames, n - self.pos)
        for c, port in enumerate(self.ports):
            buf = port.get_array()
            buf[:first] = self.signal[self.pos : self.pos + first, c]
            if first < frames:
                buf[first:] = self.signal[: frames - first, c]
        self.pos = (self.pos + frames) % n

    def __enter__(self) -> LoopPlayer:
        gc.disable()  # a collection in the real-time callback would be a harness xrun
        self.client.activate()
        for port, dst in zip(self.ports, self.targets):
            self.client.connect(port, dst)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.deactivate()
        self.client.close()
        gc.enable()


def run(song: np.ndarray, minutes: float, model: str | None, rate: int = 48000, block: int = 256,
        sample_every: float = 5.0, extra: list[str] | None = None) -> dict[str, Any]:
    seconds = minutes * 60
    with tempfile.TemporaryDirectory() as tmp, JackServer(f"vocex-soak-{time.time_ns()}", rate, block) as server:
        stats_path = Path(tmp) / "stats.json"
        cmd = [sys.executable, "-m", "vocex.realtime.live", "-d", "JACK", "--blocksize", str(block),
               "--duration", str(seconds), "--stats-json", str(stats_path), "--no-status", *(extra or [])]
        if model:
            cmd += ["--model", model]
        proc = subprocess.Popen(cmd, env=server.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        samples: list[tuple[float, float]] = []
        try:
            ins = wait_for_ports(server.name, "PortAudio:in", 2, proc=proc)
            with LoopPlayer(server.name, song, ins) as player:
                started = time.monotonic()
                while proc.poll() is None and time.monotonic() - started < seconds - 1:
                    try:
                        samples.append((time.monotonic() - started, rss_mib(proc.pid)))
                    except (OSError, RuntimeError):
                        break
                    time.sleep(sample_every)
                proc.wait(timeout=seconds + 60)
                server_xruns = player.xruns
        finally:
            _, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"vocex-live failed: {err.strip().splitlines()[-1:]}")
        stats = json.loads(stats_path.read_text())
    t = np.array([s[0] for s in samples])
    m = np.array([s[1] for s in samples])
    steady = t >= min(60.0, seconds / 4)
    slope = float(np.polyfit(t[steady] / 60, m[steady], 1)[0]) if steady.sum() >= 3 else float("nan")
    return {"minutes": minutes, "sample_rate": rate, "block": block, "stats": stats,
            "xruns": stats["xruns"], "late_blocks": stats["late_blocks"], "load": stats["load"],
            "server_xruns": server_xruns,
            "inference_ms": stats["inference_ms"],
            "rss_mib": {"first": round(float(m[0]), 2) if m.size else None,
                        "after_warmup": round(float(m[steady][0]), 2) if steady.any() else None,
                        "last": round(float(m[-1]), 2) if m.size else None,
                        "max": round(float(m.max()), 2) if m.size else None,
                        "growth_mib_per_min": round(slope, 4),
                        "growth_after_warmup_mib": round(float(m[steady][-1] - m[steady][0]), 3) if steady.any() else None},
            "rss_samples": [[round(a, 1), round(b, 2)] for a, b in samples]}


def control(song: np.ndarray, minutes: float, rate: int = 48000, block: int = 256) -> dict[str, Any]:
    """The same JACK dummy server and looping player for ``minutes`` without vocex-live: the
    xruns that the machine alone gives the server (scheduling stalls, not vocex)."""
    with JackServer(f"vocex-control-{time.time_ns()}", rate, block) as server:
        with LoopPlayer(server.name, song, []) as player:
            time.sleep(minutes * 60)
            xruns = player.xruns
    return {"minutes": minutes, "sample_rate": rate, "block": block, "server_xruns": xruns}


def table(report: dict[str, Any]) -> str:
    r = report["rss_mib"]
    ctl = report.get("control")
    ctl_line = (f"\ncontrol, the server and player alone for {ctl['minutes']} min: {ctl['server_xruns']} server xruns"
                if ctl else "")
    hogs = report.get("cpu_hog", 0)
    ctl_line += f"\nwith {hogs} process(es) spinning on the cores throughout" if hogs else ""
    return (f"soak {report['minutes']} min @ {report['sample_rate']} Hz, block {report['block']}: "
            f"xruns {report['xruns']}, late blocks {report['late_blocks']}, load {report['load']:.2f} "
            f"(p99 {report['inference_ms']['p99']:.2f} ms), RSS {r['after_warmup']} -> {r['last']} MiB "
            f"({r['growth_mib_per_min']:+.3f} MiB/min); server xruns {report.get('server_xruns')}" + ctl_line)
