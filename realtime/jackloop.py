"""A JACK server and a sample-accurate player/recorder, for device tests and latency benchmarks.

``JackServer`` starts ``jackd`` with the dummy driver under its own server name (so it
never touches a user's running JACK) and stops it afterwards.  ``PlayRecord`` is two JACK
clients: a player that feeds a signal into some input ports and a recorder that captures
some output ports, both time-stamped with JACK frame times, so that the recording is
aligned with the playback to the sample.

Processes that should use the server need ``JACK_DEFAULT_SERVER=<name>`` in their
environment (``JackServer.env``).
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray


class JackUnavailable(RuntimeError):
    """jackd or the JACK Python client is not installed, or the server did not start."""


_SHM_CHECKED = False  # clear_stale_jack_shm() has had its one chance in this process


def _jackd_running() -> bool:
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() in ("jackd", "jackdbus"):
                return True
        except OSError:
            continue
    return False


def clear_stale_jack_shm(shm: Path = Path("/dev/shm")) -> list[str]:
    """Remove what killed JACK servers left in shared memory, if no JACK server runs at all.

    jackd registers itself in ``/dev/shm/jack-shm-registry`` (eight server slots); one that is
    killed with SIGKILL (as the device tests do, to play a crashed audio server) never frees its
    slot, and after eight of them every new server fails with "Too many servers already
    active".  Only this user's files are removed, and only while no jackd process is alive."""
    if _jackd_running() or not shm.is_dir():
        return []
    removed = []
    for path in shm.iterdir():
        if path.name.startswith(("jack-", "jack_")) and path.stat().st_uid == os.getuid():
            if path.is_dir():  # jack_<server>_<uid>_0: a stale server's socket folder
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


class JackServer:
    """``jackd -n NAME -d dummy -r RATE -p PERIOD`` for the lifetime of a ``with`` block."""

    def __init__(self, name: str | None = None, sample_rate: int = 48000, period: int = 256) -> None:
        self.name = name or f"vocex-{os.getpid()}"
        self.sample_rate = sample_rate
        self.period = period
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "JACK_DEFAULT_SERVER": self.name, "JACK_NO_AUDIO_RESERVATION": "1"}

    def start(self, timeout: float = 10.0) -> JackServer:
        jackd = shutil.which("jackd")
        if jackd is None:
            raise JackUnavailable("jackd not found (apt-get install jackd2)")
        try:
            import jack
        except (ImportError, OSError) as exc:
            raise JackUnavailable(f"JACK-Client not usable: {exc}") from None
        global _SHM_CHECKED
        if not _SHM_CHECKED:
            # once per process, before this process opens any JACK client: libjack keeps the
            # registry it first attached, so removing it under a process that has used JACK
            # would hide every later server from that process
            _SHM_CHECKED = True
            clear_stale_jack_shm()
        cmd = [jackd, "-n", self.name, "-d", "dummy", "-r", str(self.sample_rate), "-p", str(self.period)]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise JackUnavailable(f"jackd exited: {err.strip().splitlines()[-1:] or ''}")
            try:
                client = jack.Client("vocex-probe", servername=self.name, no_start_server=True)
                client.close()
                return self
            except jack.JackError:
                time.sleep(0.1)
        self.stop()
        raise JackUnavailable("jackd did not come up")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> JackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Recording:
    """``audio`` ``(n_samples, n_channels)``: what the recorder captured, ``audio[0]`` being
    the frame in which the player played the first sample of its signal."""

    audio: NDArray[np.float32]
    xruns: int
    started_unix: float = 0.0  # when the signal started (wall clock, about)
    xrun_times_s: list[float] = field(default_factory=list)  # after started_unix


class PlayRecord:
    """Play ``signal`` into ``targets`` and record ``sources`` on a JACK server.

    Args:
        server: the server's name.
        signal: ``(n_samples, n_channels)`` float32 at the server's rate.
        targets: input port names to feed (one per channel), e.g. ``PortAudio:in_1``.
        sources: output port names to record (one per channel).
        tail: seconds recorded after the signal has ended.
        preroll: seconds of silence played once every port is connected, before the signal
            (a connection made while the server runs can miss a cycle or two while the graph
            is re-sorted; the signal's first samples would be lost in them).
    """

    def __init__(self, server: str, signal: NDArray[np.float32], targets: list[str], sources: list[str],
                 tail: float = 1.0, preroll: float = 0.1) -> None:
        import jack

        self.signal = np.ascontiguousarray(signal, dtype=np.float32)
        n_ch = signal.shape[1]
        self.player = jack.Client("vocex-player", servername=server, no_start_server=True)
        self.recorder = jack.Client("vocex-recorder", servername=server, no_start_server=True)
        self.outs = [self.player.outports.register(f"out_{c + 1}") for c in range(n_ch)]
        self.ins = [self.recorder.inports.register(f"in_{c + 1}") for c in range(n_ch)]
        rate = self.player.samplerate
        self.total = signal.shape[0] + int(tail * rate)
        block = self.player.blocksize
        self.recorded = np.zeros((self.total + 2 * block, n_ch), dtype=np.float32)
        self.start_frame: int | None = None
        self.preroll = -(-int(preroll * rate) // block) * block  # whole cycles
        self.connected = threading.Event()
        self.done = threading.Event()
        self.xrun_unix: list[float] = []  # when the server reported each xrun
        self.targets, self.sources = targets, sources
        self.player.set_process_callback(self._play)
        self.recorder.set_process_callback(self._record)
        self.player.set_xrun_callback(self._xrun)

    def _xrun(self, delay: float) -> None:
        self.xrun_unix.append(time.time())

    def _play(self, frames: int) -> None:
        if self.start_frame is None and self.connected.is_set():
            self.start_frame = self.player.last_frame_time + self.preroll
        pos = -frames if self.start_frame is None else self.player.last_frame_time - self.start_frame
        if pos < 0:  # not connected yet, or the preroll: silence
            for port in self.outs:
                port.get_array()[:] = 0.0
            return
        k = max(0, min(frames, len(self.signal) - pos))
        for c, port in enumerate(self.outs):
            buf = port.get_array()
            buf[:k] = self.signal[pos : pos + k, c]
            buf[k:] = 0.0

    def _record(self, frames: int) -> None:
        if self.start_frame is None or self.done.is_set():
            return
        pos = self.recorder.last_frame_time - self.start_frame
        if pos < 0:
            return
        if pos >= self.total:  # a stalled machine: the driver skipped frames past the end
            self.done.set()
            return
        end = min(pos + frames, self.total)
        for c, port in enumerate(self.ins):
            self.recorded[pos:end, c] = port.get_array()[: end - pos]
        if end >= self.total:
            self.done.set()

    def run(self, timeout: float | None = None) -> Recording:
        """Connect, play, wait until the recording is complete; returns it."""
        rate = self.player.samplerate
        timeout = timeout if timeout is not None else self.total / rate + 10
        gc.disable()  # no collection inside the real-time callbacks while recording
        with self.recorder, self.player:
            for src, port in zip(self.sources, self.ins):
                self.recorder.connect(src, port)
            for port, dst in zip(self.outs, self.targets):
                self.player.connect(port, dst)
            self.connected.set()
            started = time.time() + self.preroll / rate
            try:
                if not self.done.wait(timeout):
                    raise TimeoutError("recording did not complete")
            finally:
                gc.enable()
        times = [round(t - started, 3) for t in self.xrun_unix]
        return Recording(self.recorded[: self.total].copy(), len(times), started, times)


def wait_for_ports(server: str, pattern: str, count: int, timeout: float = 20.0, is_input: bool | None = None,
                   proc: subprocess.Popen | None = None) -> list[str]:
    """Names of ``count`` audio ports matching ``pattern`` once they exist; if ``proc`` (the
    process that should create them) exits first, its last stderr line is the error."""
    import jack

    client = jack.Client("vocex-watch", servername=server, no_start_server=True)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            kw = {} if is_input is None else {"is_input": is_input}
            ports = [p.name for p in client.get_ports(pattern, is_audio=True, **kw)]
            if len(ports) >= count:
                return sorted(ports)[:count]
            if proc is not None and proc.poll() is not None:
                err = proc.stderr.read() if proc.stderr else ""
                raise RuntimeError(f"exited before its ports appeared: {err.strip().splitlines()[-1:]}")
            time.sleep(0.1)
    finally:
        client.close()
    raise TimeoutError(f"no {count} JACK ports matching {pattern!r}")
