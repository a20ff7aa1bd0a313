"""Device I/O for ``vocex-live``: a duplex device stream between two ring buffers.

The device side (PortAudio's callback thread) only moves samples between the device and the
rings; the worker thread reads the input ring and writes the output ring, which starts
prefilled with silence.  :class:`AudioIO` is what the engine uses; two implementations:

- :class:`RtmixerIO` (``--io rtmixer``, the default): python-rtmixer's C callback plays the
  output ring and records into the input ring, no Python on the audio thread.  rtmixer ends
  playback when the output ring runs dry and recording when the input ring overflows
  (:meth:`AudioIO.stalled`); the engine then restarts both with the same prefill.
- :class:`CallbackIO` (``--io callback``): a sounddevice ``Stream`` whose Python callback
  copies between the device buffers and the rings; a short output ring is played as silence
  and counted.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from vocex.model.errors import DeviceError

_abandoned = False  # set when the device died under a stream that cannot be closed


def abandoned() -> bool:
    """Whether a stream was left open because its device died (see :meth:`AudioIO.close`):
    the process should then end at once, without waiting for PortAudio's teardown."""
    return _abandoned


@dataclass
class IOCounts:
    """What the device side counted: ``blocks`` it ran, ``xruns`` (over- and underflows
    PortAudio reported), ``late`` (blocks it found the output ring short for)."""

    blocks: int = 0
    xruns: int = 0
    late: int = 0


class AudioIO(ABC):
    """A duplex device stream of ``n_channels`` float32 channels at ``sample_rate`` Hz in
    blocks of ``block_size`` samples, between two ring buffers.

    The main thread calls :meth:`open`, :meth:`start`, :meth:`xruns` (while it runs),
    :meth:`stop` and :meth:`close`; the worker thread the ring side (:attr:`readable`,
    :meth:`read_into`, :attr:`queued`, :meth:`write`) and :meth:`stalled` /
    :meth:`drop_backlog` / :meth:`resume`.  Arrays are ``(n_samples, n_channels)`` float32.
    """

    name = ""

    def __init__(self, device: tuple[int | None, int | None], n_channels: int, sample_rate: int, block_size: int,
                 latency: str | float | None = None) -> None:
        self.device, self.n_channels, self.sample_rate = device, n_channels, sample_rate
        self.block_size, self.latency = block_size, latency
        self.prefill = 0
        self.stream = None
        self.lost = False  # the device went away: close() abandons the stream

    def open(self, prefill: int, ring_size: int) -> tuple[float, float]:
        """Open the device (not started) and two rings of ``ring_size`` samples (a power of
        two); the output ring will start with ``prefill`` samples of silence.  Returns
        PortAudio's (input, output) latency in seconds; raises :class:`DeviceError`."""
        import rtmixer
        import sounddevice as sd

        self.prefill = prefill
        self.ring_in = rtmixer.RingBuffer(4 * self.n_channels, ring_size)
        self.ring_out = rtmixer.RingBuffer(4 * self.n_channels, ring_size)
        try:
            self.stream = self._open_stream(device=self.device, channels=self.n_channels,
                                            samplerate=self.sample_rate, blocksize=self.block_size,
                                            latency=self.latency)
        except (sd.PortAudioError, ValueError) as exc:
            raise DeviceError(f"cannot open the audio device: {exc}") from None
        in_lat, out_lat = self.stream.latency
        return float(in_lat), float(out_lat)

    @abstractmethod
    def _open_stream(self, **kwargs):
        """The device stream (sounddevice's names for the arguments)."""

    @abstractmethod
    def start(self) -> None:
        """Start the device with the output ring prefilled."""

    @property
    def active(self) -> bool:
        """Whether the device stream still runs (False: the device or its server is gone)."""
        return bool(self.stream.active)

    # -- worker side -------------------------------------------------------------------------

    @property
    def readable(self) -> int:
        """Input samples waiting in the input ring."""
        return self.ring_in.read_available

    def read_into(self, buf: NDArray[np.float32]) -> int:
        return self.ring_in.readinto(buf)

    @property
    def queued(self) -> int:
        """Output samples in the output ring that the device has not played yet."""
        return self.ring_out.read_available

    def write(self, data: NDArray[np.float32]) -> int:
        """Append to the output ring; returns how many samples fitted."""
        return self.ring_out.write(data)

    def stalled(self) -> bool:
        """Whether the device side stopped moving samples while the stream runs; the worker
        then calls :meth:`drop_backlog` and :meth:`resume`."""
        return False

    def drop_backlog(self, give_up: threading.Event) -> bool:
        """Stop moving samples and empty both rings (False: the device died or ``give_up``
        was set while waiting)."""
        self.ring_in.flush()
        self.ring_out.flush()
        return True

    def resume(self) -> None:
        """Move samples again, the output ring prefilled as at the start."""
        self._prefill()

    def _prefill(self) -> None:
        self.ring_out.write(np.zeros((self.prefill, self.n_channels), dtype=np.float32))

    # -- main thread -------------------------------------------------------------------------

    @abstractmethod
    def xruns(self) -> int:
        """Device xruns so far, while the stream runs."""

    @abstractmethod
    def counts(self) -> IOCounts:
        """What is counted so far (all of it after :meth:`stop`)."""

    def stop(self) -> IOCounts:
        """Stop the device stream; returns the final counts."""
        self.stream.stop()
        return self.counts()

    def close(self) -> None:
        """Close the device stream, unless its device is gone (:attr:`lost`): PortAudio's JACK
        host then waits forever for a process callback that never comes (in
        ``Pa_StopStream``, ``Pa_CloseStream`` and, at exit, ``Pa_Terminate``), so the stream
        is abandoned and sounddevice's exit handler unregistered; the process is about to end
        anyway (:func:`abandoned`)."""
        if self.stream is None:
            return
        if self.lost:
            import atexit

            import sounddevice as sd

            global _abandoned
            _abandoned = True
            atexit.unregister(sd._exit_handler)
            return
        self.stream.close()


class RtmixerIO(AudioIO):
    """python-rtmixer's C callback plays the output ring and records the input ring.

    rtmixer's stream is not thread-safe: each of ``actions``, ``cancel``, ``play_ringbuffer``
    and ``fetch_and_reset_stats`` drains one result queue through one shared pointer, and
    the worker (:meth:`stalled`, :meth:`drop_backlog`, :meth:`resume`) and the main thread
    (:meth:`xruns`) both call them. Every call goes through ``_lock``."""

    name = "rtmixer"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen = IOCounts()  # rtmixer's counters, fetched and summed while it runs
        self._stats_action = None
        self._lock = threading.Lock()

    def _open_stream(self, **kwargs):
        import rtmixer

        return rtmixer.MixerAndRecorder(**kwargs)

    def _actions(self) -> set:
        with self._lock:
            return set(self.stream.actions)

    def start(self) -> None:
        self.stream.start()
        self.resume()

    def resume(self) -> None:
        self._prefill()
        with self._lock:
            self.play_action = self.stream.play_ringbuffer(self.ring_out)
            self.rec_action = self.stream.record_ringbuffer(self.ring_in)

    def stalled(self) -> bool:
        actions = self._actions()
        return self.play_action not in actions or self.rec_action not in actions

    def drop_backlog(self, give_up: threading.Event) -> bool:
        actions = self._actions()
        for action in (self.play_action, self.rec_action):
            if action in actions:
                with self._lock:
                    cancel = self.stream.cancel(action)
                while cancel in self._actions():  # rtmixer's wait(), but not past a dead device
                    if not self.stream.active or give_up.is_set():
                        return False
                    time.sleep(0.002)
        return super().drop_backlog(give_up)

    def xruns(self) -> int:
        """rtmixer exposes its counters only on a stopped stream, so a running count is
        polled with fetch-and-reset actions and summed."""
        action = self._stats_action
        if action is not None and action not in self._actions():
            self._add(action.stats)
            action = None
        if action is None:
            with self._lock:
                self._stats_action = self.stream.fetch_and_reset_stats()
        return self.seen.xruns

    def counts(self) -> IOCounts:
        return IOCounts(self.seen.blocks, self.seen.xruns)

    def stop(self) -> IOCounts:
        self.stream.stop()
        if self._stats_action is not None and self._stats_action not in self._actions():
            self._add(self._stats_action.stats)
        self._add(self.stream.stats)
        return self.counts()

    def _add(self, st) -> None:  # st: rtmixer's struct stats
        self.seen.blocks += int(st.blocks)
        self.seen.xruns += int(st.input_overflows + st.input_underflows + st.output_overflows + st.output_underflows)


class CallbackIO(AudioIO):
    """A sounddevice ``Stream`` whose Python callback copies between the device and the rings."""

    name = "callback"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.counted = IOCounts()

    def _open_stream(self, **kwargs):
        import sounddevice as sd

        return sd.Stream(callback=self._callback, dtype="float32", **kwargs)

    def _callback(self, indata, outdata, frames, time_info, status) -> None:
        counted = self.counted
        counted.blocks += 1
        if status.input_overflow or status.output_underflow or status.input_underflow or status.output_overflow:
            counted.xruns += 1
        self.ring_in.write(indata)
        got = self.ring_out.readinto(outdata)
        if got < frames:
            outdata[got:] = 0.0
            counted.late += 1

    def start(self) -> None:
        self._prefill()  # the callback reads the ring from its first block
        self.stream.start()

    def xruns(self) -> int:
        return self.counted.xruns

    def counts(self) -> IOCounts:
        return IOCounts(self.counted.blocks, self.counted.xruns, self.counted.late)


IO_KINDS: dict[str, type[AudioIO]] = {"rtmixer": RtmixerIO, "callback": CallbackIO}
