"""The live engine: device I/O (:mod:`vocex.realtime.audio_io`) around a streaming separator.

Threads: the device side only moves samples between the device and two ring buffers.  A
worker thread reads the input ring, runs the streaming separator (STFT, U-Net, overlap-add)
and writes the output ring, which starts prefilled.  If the worker falls behind (the output
ring holds less than one block), it skips inference for what it is late on (karaoke plays
the dry input, vocals mode silence; ``on_late="silence"`` silences both), counts
``late_blocks``, and catches up.  The main thread watches the device, polls its xruns and
draws the status line.

The worker asks for the scheduling a real-time audio program uses (SCHED_FIFO below the
audio server's priority, else a raised nice value: :mod:`vocex.realtime.sched`) as it
starts, and records what it got in ``stats.scheduling``.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable

import numpy as np

from vocex.model.errors import DeviceError
from vocex.realtime.audio_io import AudioIO
from vocex.realtime.sched import Scheduling, raise_worker_priority
from vocex.realtime.stats import Levels, LiveStats
from vocex.realtime.stream import StreamingSeparator


class LiveEngine:
    """Plays ``separator`` between the rings of ``io``, recording what happens in ``stats``.

    Args:
        separator: the streaming separator (its ``n_channels`` and ``sample_rate`` are the
            device's).
        stats: filled in as it runs (latencies at :meth:`open`, counts at the end of :meth:`run`).
        io: the device I/O, not yet opened.
        on_late: what plays while the worker is late: ``dry`` (karaoke plays the dry input,
            vocals mode silence) or ``silence``.
        prefill_blocks: the output ring's prefill in blocks (None: from the inference time
            measured at :meth:`open`).
        realtime: whether the worker thread asks for real-time scheduling (False: it keeps
            the process's).
    """

    def __init__(self, separator: StreamingSeparator, stats: LiveStats, io: AudioIO, on_late: str = "dry",
                 prefill_blocks: int | None = None, realtime: bool = True) -> None:
        self.sep, self.stats, self.io, self.on_late, self.realtime = separator, stats, io, on_late, realtime
        self.scheduling: Scheduling | None = None  # what the worker got, once it runs
        self.worker_ready = threading.Event()
        self.block_size = io.block_size
        self.n_ch = n_ch = separator.n_channels
        self.chunk = chunk = 1 << max(10, (4 * self.block_size - 1).bit_length())
        self.prefill_blocks = prefill_blocks
        self.buf_in = np.zeros((chunk, n_ch), dtype=np.float32)
        self.buf_out = np.zeros((chunk, n_ch), dtype=np.float32)
        self.levels = Levels()
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.device_lost = False

    # -- device side -------------------------------------------------------------------------

    def warm_up(self) -> float:
        """Run the whole separator before the stream starts (numba compiles, the runtime
        allocates on its first calls); returns the median inference time in seconds."""
        self.sep.warm_up()  # the run's statistics start with the run
        return self.sep.measure_inference(runs=5, percentile=50, warm_up=0)

    def open(self) -> None:
        t_inf = self.warm_up()
        rate = self.sep.sample_rate
        if self.prefill_blocks is None:
            # room for one block in flight plus three typical inferences of jitter
            self.prefill_blocks = 2 + math.ceil(3 * t_inf / (self.block_size / rate))
        self.prefill = self.prefill_blocks * self.block_size
        # how long the worker may spend on one chunk (it starts one block after the device
        # read it) before the device reads past the prefilled output: a longer stall is late
        self.stats.details["prefill_slack_ms"] = round(1000 * (self.prefill_blocks - 1) * self.block_size / rate, 3)
        in_lat, out_lat = self.io.open(self.prefill, ring_size=1 << max(14, (8 * self.chunk).bit_length()))
        # the device side as PortAudio reports it, and vocex's own buffering: the output ring's
        # prefill plus the one block that the worker needs between two callbacks
        self.stats.device_latency_ms = round(1000 * (in_lat + out_lat), 2)
        self.stats.buffer_latency_ms = round(1000 * (self.prefill + self.block_size) / rate, 3)
        self.stats.details["portaudio_latency_ms"] = [round(1000 * in_lat, 2), round(1000 * out_lat, 2)]
        self.stats.details["ring_prefill_samples"] = self.prefill
        self.stats.details["buffer_latency_samples"] = self.prefill + self.block_size

    # -- worker side -------------------------------------------------------------------------

    def _schedule(self) -> None:
        """Real-time scheduling for this thread, the worker (or not, when not asked for);
        what it got goes into the statistics."""
        try:
            got = raise_worker_priority() if self.realtime else Scheduling("none", 0, "not asked for: --no-realtime")
            self.scheduling = got
            self.stats.scheduling = got.to_json()
        finally:
            self.worker_ready.set()

    def _worker(self) -> None:
        try:
            self._schedule()
            io, sep, block = self.io, self.sep, self.block_size
            idle = block / sep.sample_rate / 4
            while not self.stop_event.is_set():
                if io.stalled():
                    if not io.active:
                        return  # the device is gone: the main thread reports it
                    self._recover()
                avail = io.readable
                if avail < block:
                    time.sleep(idle)
                    continue
                n = min(avail - avail % block, self.chunk)
                io.read_into(self.buf_in[:n])
                late = io.queued < block
                if late:
                    self.stats.late_blocks += -(-n // block)
                out = self.buf_out[:n]
                sep.process_block(self.buf_in[:n], out, skip_inference=late)
                if late and self.on_late == "silence":
                    out[...] = 0.0
                self._limit(out)
                self.levels.add(self.buf_in[:n], out)
                self.stats.worker_chunks += 1
                if io.write(out) < n:
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
        """The device side stopped (rtmixer ends playback when the output ring runs dry and
        recording when the input ring overflows): drop the backlog, restart with the same
        prefill, so the latency stays what was reported."""
        self.stats.late_blocks += 1
        self.stats.restarts += 1
        if not self.io.drop_backlog(self.stop_event):
            return
        self.sep.reset()
        self.io.resume()

    # -- run ---------------------------------------------------------------------------------

    def run(self, duration: float | None, status_line: bool, started_line: Callable[[], None] | None = None) -> None:
        """Play until ``duration`` seconds, a stop request, Ctrl-C or a device failure;
        ``started_line()`` is called once the worker runs (its scheduling known)."""
        worker = threading.Thread(target=self._worker, name="vocex-worker", daemon=True)
        started = time.monotonic()
        self.stats.started_unix = round(time.time(), 3)
        try:
            self.io.start()
            worker.start()
            try:
                self.worker_ready.wait(2.0)
                if started_line is not None:
                    started_line()
                while not self.stop_event.is_set():
                    if duration is not None and time.monotonic() - started >= duration:
                        break
                    self.stop_event.wait(0.25)
                    if not self.io.active:
                        self.device_lost = self.io.lost = True
                        raise DeviceError("the audio stream stopped (device or audio server gone)")
                    before = self.stats.xruns
                    self.stats.xruns = self.io.xruns()
                    if self.stats.xruns > before:  # when they happened, for the record
                        self.stats.xrun_times_s.append(round(time.monotonic() - started, 2))
                    if status_line:
                        self._print_status()
            finally:
                self.stop_event.set()
                worker.join(timeout=0.5 if self.device_lost else 2.0)
                self._collect(started)
        finally:
            self.stats.inference_ms = self.sep.timings.summary_ms()
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Close the device (abandoned if it was lost: :meth:`vocex.realtime.audio_io.AudioIO.close`)."""
        self.io.close()

    def _collect(self, started: float) -> None:
        self.stats.seconds = round(time.monotonic() - started, 2)
        if self.device_lost:  # the counters live in the stream, which can no longer be stopped
            self.stats.details["stats_error"] = "device lost: counts are those polled while it ran"
            counts = self.io.counts()
        else:
            try:
                counts = self.io.stop()
            except Exception as exc:  # the server may be gone; the counts so far stand
                self.stats.details["stats_error"] = str(exc)
                counts = self.io.counts()
        self.stats.blocks, self.stats.xruns = counts.blocks, counts.xruns
        self.stats.late_blocks += counts.late

    def _print_status(self) -> None:
        lin, lout, red = self.levels.take()
        recent = self.sep.timings.recent()
        load = (np.percentile(recent, 99) * 1000 / self.stats.inference_interval_ms) if recent.size else 0.0
        sep = self.sep
        line = (f"{sep.mode:<7} mix {100 * sep.mix:3.0f} %{'  BYPASS' if sep.bypass else '        '}  "
                f"in {lin:6.1f} dBFS  out {lout:6.1f} dBFS  change {red:+5.1f} dB  load {load:4.2f}  "
                f"latency {self.stats.total_latency_ms:5.1f} ms  xruns {self.stats.xruns}  "
                f"late {self.stats.late_blocks}  worker {self.scheduling.label() if self.scheduling else '?'}")
        print("\r" + line, end="", file=sys.stderr, flush=True)
