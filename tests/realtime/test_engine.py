"""The live engine over a fake device I/O (no audio server): what it plays, and what it
counts when the worker is late or the device goes away."""

from __future__ import annotations

import os
import threading
import time
import types

import numpy as np
import pytest

from vocex.model.errors import DeviceError
from vocex.realtime.audio_io import AudioIO, CallbackIO, IOCounts, RtmixerIO
from vocex.realtime.engine import LiveEngine
from vocex.realtime.sched import DEFAULT_RT_PRIORITY
from vocex.realtime.stats import LiveStats
from vocex.realtime.stream import StreamingSeparator

from tests.conftest import TINY, tone_mix

RATE, BLOCK = TINY["sample_rate"], 64


class _Ring:
    """A numpy stand-in for rtmixer's RingBuffer: ``(n, n_channels)`` float32 in and out."""

    def __init__(self, n_channels: int) -> None:
        self.data = np.zeros((0, n_channels), np.float32)
        self.lock = threading.Lock()

    @property
    def read_available(self) -> int:
        return len(self.data)

    def readinto(self, out) -> int:
        with self.lock:
            n = min(len(out), len(self.data))
            out[:n] = self.data[:n]
            self.data = self.data[n:]
        return n

    def write(self, block) -> int:
        with self.lock:
            self.data = np.concatenate([self.data, block])
        return len(block)

    def flush(self) -> None:
        with self.lock:
            self.data = self.data[:0]


class FakeIO(AudioIO):
    """A device that plays ``song`` in blocks on a thread of its own, in lock step with the
    worker (it takes a block of output once the worker has answered the block before), and
    records what it is given; ``die_after`` blocks, it goes away."""

    name = "fake"

    def __init__(self, song: np.ndarray, die_after: int | None = None) -> None:
        super().__init__((None, None), song.shape[1], RATE, BLOCK)
        self.song, self.die_after = song, die_after
        self.played: list[np.ndarray] = []
        self.running = False
        self.worker_thread: dict = {}

    def open(self, prefill: int, ring_size: int) -> tuple[float, float]:
        self.prefill = prefill
        self.ring_in, self.ring_out = _Ring(self.n_channels), _Ring(self.n_channels)
        self.stream = self
        return 0.001, 0.002

    def _open_stream(self, **kwargs):  # pragma: no cover - open() is the fake's own
        raise NotImplementedError

    def start(self) -> None:
        self._prefill()
        self.running = True
        self.thread = threading.Thread(target=self._device, daemon=True)
        self.thread.start()

    def _device(self) -> None:
        out = np.zeros((BLOCK, self.n_channels), np.float32)
        for i, a in enumerate(range(0, len(self.song) - BLOCK + 1, BLOCK)):
            if self.die_after is not None and i == self.die_after:
                self.running = False
                return
            self.ring_in.write(self.song[a : a + BLOCK])
            for _ in range(20000):  # lock step: the worker has answered this block
                if self.ring_out.read_available >= self.prefill + BLOCK or not self.running:
                    break
                threading.Event().wait(0.0005)
            self.ring_out.readinto(out)
            self.played.append(out.copy())
            self._look_at_the_worker()
        self.done.set()

    def _look_at_the_worker(self) -> None:
        if not self.worker_thread:
            worker = next((t for t in threading.enumerate() if t.name == "vocex-worker"), None)
            if worker is not None and worker.native_id is not None:
                tid = worker.native_id
                self.worker_thread.update(policy=os.sched_getscheduler(tid), nice=os.getpriority(os.PRIO_PROCESS, tid),
                                          priority=os.sched_getparam(tid).sched_priority)

    @property
    def active(self) -> bool:
        return self.running

    def xruns(self) -> int:
        return 0

    def counts(self) -> IOCounts:
        return IOCounts(blocks=len(self.played))

    def stop(self) -> IOCounts:
        self.running = False
        return self.counts()

    def close(self) -> None:
        self.running = False


def _engine(tiny_backend, io: FakeIO, **kwargs) -> LiveEngine:
    sep = StreamingSeparator(tiny_backend, io.n_channels, RATE, mode="karaoke", max_block=4096)
    stats = LiveStats(RATE, "tiny", 0.0, 0.0, 0.0, 4.0, 4.0)
    engine = LiveEngine(sep, stats, io, prefill_blocks=3, **kwargs)
    io.done = engine.stop_event  # the song's end ends the run
    engine.open()
    return engine


def test_the_engine_plays_the_separator_between_the_rings(tiny_backend):
    song = tone_mix(40 * BLOCK, RATE)
    io = FakeIO(song)
    engine = _engine(tiny_backend, io)
    engine.run(None, status_line=False)
    engine.close()
    played = np.concatenate(io.played)
    expected = StreamingSeparator(tiny_backend, 2, RATE, mode="karaoke").process_block(song)
    prefill = 3 * BLOCK
    assert engine.stats.late_blocks == 0 and engine.stats.blocks == 40
    np.testing.assert_array_equal(played[:prefill], 0.0)  # the prefill, then the stream
    np.testing.assert_allclose(played[prefill:], expected[: len(song) - prefill], atol=1e-5)
    assert engine.stats.details["buffer_latency_samples"] == prefill + BLOCK
    assert engine.stats.inference_ms["p50"] > 0 and engine.stats.worker_chunks == 40


def test_a_device_that_goes_away_is_a_device_error(tiny_backend):
    io = FakeIO(tone_mix(400 * BLOCK, RATE), die_after=5)
    engine = _engine(tiny_backend, io)
    with pytest.raises(DeviceError, match="audio stream stopped"):
        engine.run(None, status_line=False)
    assert engine.device_lost and io.lost
    assert "device lost" in engine.stats.details["stats_error"] and engine.stats.blocks == 5


def test_both_device_ios_share_the_interface():
    for cls in (RtmixerIO, CallbackIO):
        io = cls((None, None), 2, 48000, 256, "low")
        assert isinstance(io, AudioIO) and io.name in ("rtmixer", "callback")
        assert io.counts() == IOCounts()


class _Action:
    stats = types.SimpleNamespace(blocks=1, input_overflows=0, input_underflows=1,
                                  output_overflows=0, output_underflows=0)


class _OneThreadStream:
    """Stands in for rtmixer's stream, which is not thread-safe: every call that drains its
    result queue goes through one shared pointer. Counts calls that overlap."""

    def __init__(self) -> None:
        self.inside = threading.Lock()
        self.overlaps = 0
        self.live = set()

    def _call(self, result=None):
        if not self.inside.acquire(blocking=False):
            self.overlaps += 1
            return result
        try:
            time.sleep(0.0002)  # rtmixer's drain loop, stretched so that overlaps would show
            return result
        finally:
            self.inside.release()

    @property
    def actions(self):
        return self._call(set(self.live))

    def play_ringbuffer(self, ring):
        self.live.add(ring_action := _Action())
        return self._call(ring_action)

    record_ringbuffer = play_ringbuffer

    def fetch_and_reset_stats(self):
        return self._call(_Action())  # done at once: not among the live actions


def test_rtmixer_is_called_from_one_thread_at_a_time():
    """The worker polls stalled() while the main thread polls xruns(); rtmixer's stream breaks
    (KeyError, then AssertionError in its _drain_result_q) when two calls interleave."""
    io = RtmixerIO((None, None), 2, 48000, 256, "low")
    io.ring_out = io.ring_in = _Ring(2)
    io.stream = _OneThreadStream()
    io.resume()
    done = threading.Event()

    def worker():
        while not done.is_set():
            io.stalled()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        for _ in range(300):
            io.xruns()
    finally:
        done.set()
        thread.join()
    assert io.stream.overlaps == 0 and io.xruns() == 300  # each fetch summed once


def _scheduled_run(tiny_backend, capsys, **kwargs):
    io = FakeIO(tone_mix(20 * BLOCK, RATE))
    engine = _engine(tiny_backend, io, **kwargs)
    main_thread = threading.get_native_id()
    before = os.sched_getscheduler(main_thread), os.getpriority(os.PRIO_PROCESS, main_thread)
    announced = []
    engine.run(None, status_line=False, started_line=lambda: announced.append(engine.scheduling))
    engine.close()
    # only the worker thread changed
    assert (os.sched_getscheduler(main_thread), os.getpriority(os.PRIO_PROCESS, main_thread)) == before
    assert announced == [engine.scheduling] and engine.scheduling is not None  # known when the run starts
    got = engine.stats.scheduling
    assert engine.stats.to_json()["scheduling"] == got == engine.scheduling.to_json()
    engine._print_status()
    assert f"worker {engine.scheduling.label()}" in capsys.readouterr().err
    return got, io.worker_thread, before


def test_the_worker_gets_real_time_scheduling_and_says_so(tiny_backend, capsys):
    got, worker, (main_policy, main_nice) = _scheduled_run(tiny_backend, capsys)
    if got["kind"] == "fifo":  # permitted here (root, CAP_SYS_NICE or an rtprio limit)
        assert worker["policy"] == os.SCHED_FIFO and worker["priority"] == got["value"]
        assert 1 <= got["value"] <= DEFAULT_RT_PRIORITY and got["text"] == f"SCHED_FIFO {got['value']}"
    elif got["kind"] == "nice":  # refused: the next best thing, and why
        assert worker["policy"] == main_policy and worker["nice"] == got["value"] < main_nice
        assert "SCHED_FIFO refused" in got["reason"]
    else:
        assert got["kind"] == "none" and "refused" in got["reason"] and worker["nice"] == main_nice


def test_a_refused_real_time_policy_is_reported_with_its_fallback(tiny_backend, capsys, monkeypatch):
    def refuse(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    got, worker, (main_policy, main_nice) = _scheduled_run(tiny_backend, capsys)
    assert worker["policy"] == main_policy and "SCHED_FIFO refused" in got["reason"] in got["text"]
    assert got["kind"] in ("nice", "none") and (got["kind"] == "none" or worker["nice"] == got["value"])


def test_no_realtime_leaves_the_worker_alone(tiny_backend, capsys):
    got, worker, (main_policy, main_nice) = _scheduled_run(tiny_backend, capsys, realtime=False)
    assert got == {"kind": "none", "value": 0, "reason": "not asked for: --no-realtime",
                   "text": "normal scheduling (not asked for: --no-realtime)"}
    assert worker["policy"] == main_policy and worker["nice"] == main_nice
