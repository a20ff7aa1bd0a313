"""PlayRecord's callbacks without a server: the frame clock is faked."""

import threading
from types import SimpleNamespace

import numpy as np

from vocex.realtime.jackloop import PlayRecord


class _Port:
    def __init__(self, frames: int, value: float) -> None:
        self.buf = np.full(frames, value, dtype=np.float32)

    def get_array(self) -> np.ndarray:
        return self.buf


def _recorder(total: int, frames: int) -> PlayRecord:
    rec = PlayRecord.__new__(PlayRecord)  # no JACK clients: only the state _record reads
    rec.total = total
    rec.recorded = np.zeros((total + 2 * frames, 1), dtype=np.float32)
    rec.start_frame = 1000
    rec.done = threading.Event()
    rec.ins = [_Port(frames, 1.0)]
    rec.recorder = SimpleNamespace(last_frame_time=1000)
    return rec


def test_record_fills_cycles_and_finishes_at_total():
    rec = _recorder(total=300, frames=128)
    for cycle in range(3):
        rec.recorder.last_frame_time = 1000 + 128 * cycle
        rec._record(128)
    assert rec.done.is_set()
    assert np.all(rec.recorded[:300] == 1.0) and np.all(rec.recorded[300:] == 0.0)


def test_record_finishes_when_the_clock_skips_past_the_end():
    # a stalled dummy driver advances its frame time by the cycles it missed: the next
    # callback can start beyond the recording, which must end it (it raised, and hung run())
    rec = _recorder(total=300, frames=128)
    rec._record(128)
    rec.recorder.last_frame_time = 1000 + 3 * 128  # cycles at 128 and 256 missed
    rec._record(128)
    assert rec.done.is_set()
    assert np.all(rec.recorded[:128] == 1.0) and np.all(rec.recorded[128:] == 0.0)


def test_play_waits_for_the_connections_and_the_preroll():
    # cycles run before the ports are connected and while the graph is re-sorted: the signal
    # must start after them, on the frame the recording counts from
    play = PlayRecord.__new__(PlayRecord)
    play.signal = np.arange(1, 1001, dtype=np.float32)[:, None]
    play.outs = [_Port(128, -1.0)]
    play.player = SimpleNamespace(last_frame_time=5000)
    play.start_frame, play.preroll, play.connected = None, 256, threading.Event()
    out = []
    for cycle in range(6):
        if cycle == 2:
            play.connected.set()
        play.player.last_frame_time = 5000 + 128 * cycle
        play._play(128)
        out.append(play.outs[0].buf.copy())
    out = np.concatenate(out)
    assert play.start_frame == 5000 + 2 * 128 + 256
    assert np.all(out[: 4 * 128] == 0.0)  # two unconnected cycles, two of preroll
    assert np.array_equal(out[4 * 128 :], play.signal[: 2 * 128, 0])
