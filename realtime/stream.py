"""The streaming separator: any host block size in, the same block size out, with an exactly
known delay.  No I/O happens here; ``vocex-live`` and ``vocex-separate --streaming`` drive it.

Signal path (per channel)::

    device rate --soxr--> model rate --STFT (frame every hop)--> |X| columns
        -> sliding window of the newest context_frames columns
        -> every K hops: U-Net on the window; mask columns [-L-K, -L) of the window
        -> mask * X for those K frames -> inverse FFT -> overlap-add (numba) of the
           synthesis window's support (all n_fft samples, or the newest 2 hops for a
           low-delay window, dsp.LOW_DELAY: what the window adds to the latency)
        -> model rate --soxr--> device rate vocal estimate, delayed by latency_samples
    output = vocals mode:  mix * vocals + (1 - mix) * dry
             karaoke mode: dry - mix * vocals            (dry = input delayed by the same amount)
             bypass:       dry
    a change of mode, mix or bypass ramps the output's two gains (dry, vocals) linearly from
    the old to the new values over fade_ms: a crossfade, so a change never clicks

Every stage is time-aligned (soxr's streams compensate their own delay, the STFT/OLA drops
its padding), so the only delay is the prefill of the output FIFO, ``latency_samples``: the
smallest prefill that never runs dry for any host block size, computed from the sample
counts of the stages.  Output sample ``t`` is therefore exactly the offline computation of
sample ``t - latency_samples``.
"""
from __future__ import annotations

import numba
import numpy as np
import soxr
from numpy.typing import NDArray

from vocex.model.backends import Backend
from vocex.realtime.maskstream import Fifo, MaskStream
from vocex.realtime.settings import StreamingSettings, streaming_settings
from vocex.realtime.timing import TimingRing, time_inference

MODES = ("karaoke", "vocals")
FADE_MS = 5.0  # a change of mode, mix or bypass crossfades over this long


@numba.njit(cache=True, nogil=True)
def _finite_copy(src: np.ndarray, dst: np.ndarray) -> int:  # pragma: no cover - compiled
    """Copy ``src`` (n, C) into ``dst``, NaN and +-Inf replaced by 0; returns how many were."""
    bad = 0
    for i in range(src.shape[0]):
        for c in range(src.shape[1]):
            v = src[i, c]
            if np.isfinite(v):
                dst[i, c] = v
            else:
                dst[i, c] = 0.0
                bad += 1
    return bad


@numba.njit(cache=True, nogil=True)
def _mix_out(voc: np.ndarray, dry: np.ndarray, out: np.ndarray, dry_from: float, voc_from: float,
             dry_to: float, voc_to: float, pos: int, fade: int) -> int:  # pragma: no cover - compiled
    """``out[t, c] = g_dry * dry[c, t] + g_voc * voc[c, t]``, ``voc``/``dry`` ``(C, n)``, ``out``
    ``(n, C)``: the gains ramp linearly from ``*_from`` to ``*_to`` over ``fade`` samples, of
    which ``pos`` are done before this call; returns how many are done after it."""
    for t in range(out.shape[0]):
        if pos < fade:
            pos += 1
            w = pos / fade
            g_dry, g_voc = dry_from + w * (dry_to - dry_from), voc_from + w * (voc_to - voc_from)
        else:
            g_dry, g_voc = dry_to, voc_to
        for c in range(out.shape[1]):
            out[t, c] = g_dry * dry[c, t] + g_voc * voc[c, t]
    return pos


class StreamingSeparator:
    """Streaming vocal separation at a device's sample rate.

    Args:
        backend: an inference backend (its card gives the model's front end).
        n_channels: channels in and out; separated as the card's ``channels`` policy says.
        sample_rate: the host's rate in Hz; soxr streams convert to and from the model's.
        settings: hop batch K, lookahead L, resampler quality.
        mode: ``karaoke`` (the input without its vocals) or ``vocals``.
        mix: wet amount in [0, 1] (0 gives the dry input).
        max_block: largest piece processed at once (longer host blocks are split); only
            sizes the internal buffers, never changes the output.
        fade_ms: how long a change of ``mode``, ``mix`` or ``bypass`` crossfades, in
            milliseconds (0: at once, with a click where the two outputs differ).

    ``process_block(block, out)``: ``block`` and ``out`` are ``(n_samples, n_channels)``
    float32, any ``n_samples``; ``out[t]`` is the result for input sample
    ``t - latency_samples``.  Everything is allocated here, in ``__init__``.  Non-finite
    input samples (NaN, +-Inf) are taken as 0 and counted in ``nonfinite_samples``, so one
    bad sample cannot poison the context window or reach the output.

    ``mode``, ``mix`` and ``bypass`` (the dry input, delayed by ``latency_samples`` like
    every output; inference goes on, so leaving bypass needs no new context) may be set
    between blocks, also from another thread: the next block crossfades to them over
    ``fade_ms``.
    """

    def __init__(
        self,
        backend: Backend,
        n_channels: int,
        sample_rate: int,
        settings: StreamingSettings | None = None,
        mode: str = "karaoke",
        mix: float = 1.0,
        max_block: int = 1024,
        fade_ms: float = FADE_MS,
    ) -> None:
        if n_channels < 1 or sample_rate <= 0:
            raise ValueError("need at least one channel and a positive sample rate")
        if not 0.0 <= fade_ms <= 1000.0:
            raise ValueError(f"fade_ms must be in [0, 1000], got {fade_ms}")
        self.fade_samples = round(fade_ms * sample_rate / 1000)
        self._mode, self._mix, self._bypass = "karaoke", 1.0, False
        self.mode, self.mix = mode, mix  # checked by the setters
        card = backend.card
        self.card = card
        self.settings = settings or streaming_settings(card)
        ratio = card.sample_rate / sample_rate
        self.core = MaskStream(backend, n_channels, self.settings, max_push=int(np.ceil(max_block * ratio)) + 64)
        self.n_channels, self.sample_rate = n_channels, sample_rate
        self.max_block = max_block
        self.resampling = sample_rate != card.sample_rate
        self._latency = self._compute_latency()
        most = int(np.ceil(self.core.vocals.cap / ratio)) + 64  # device samples from one chunk
        self.vocal_fifo = Fifo(n_channels, self._latency + max_block + most)
        self.dry_fifo = Fifo(n_channels, self._latency + max_block + 1)
        self.vocal_chunk = np.zeros((n_channels, self.core.vocals.cap), dtype=np.float32)
        self.voc_out = np.zeros((n_channels, max_block), dtype=np.float32)
        self.dry_out = np.zeros((n_channels, max_block), dtype=np.float32)
        self.clean_in = np.zeros((max_block, n_channels), dtype=np.float32)
        self.underruns = 0
        self.nonfinite_samples = 0
        self.reset()

    @property
    def latency_samples(self) -> int:
        """Exact algorithmic latency at ``sample_rate``: STFT window, hop batch, lookahead
        and both resamplers."""
        return self._latency

    @property
    def mode(self) -> str:
        """``karaoke`` (the input without its vocals) or ``vocals``; settable (crossfaded)."""
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {value!r}")
        self._mode = value
        self._retarget()

    @property
    def mix(self) -> float:
        """Wet amount in [0, 1] (0: the dry input); settable (crossfaded)."""
        return self._mix

    @mix.setter
    def mix(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:  # NaN fails this too
            raise ValueError(f"mix must be in [0, 1], got {value}")
        self._mix = float(value)
        self._retarget()

    @property
    def bypass(self) -> bool:
        """True: the output is the dry input (delayed by ``latency_samples``, inference goes
        on); settable (crossfaded)."""
        return self._bypass

    @bypass.setter
    def bypass(self, value: bool) -> None:
        self._bypass = bool(value)
        self._retarget()

    def _retarget(self) -> None:
        """The output's (dry, vocals) gains for the current mode, mix and bypass, set in one
        assignment: a worker thread reads them once per piece (``_process``)."""
        if self._bypass:
            self._target = (1.0, 0.0)
        elif self._mode == "vocals":
            self._target = (1.0 - self._mix, self._mix)
        else:
            self._target = (1.0, -self._mix)

    def _new_resamplers(self) -> None:
        q = self.settings.resampler_quality
        if self.resampling:
            self.rs_in = soxr.ResampleStream(self.sample_rate, self.card.sample_rate, self.n_channels, dtype="float32", quality=q)
            self.rs_out = soxr.ResampleStream(self.card.sample_rate, self.sample_rate, self.n_channels, dtype="float32", quality=q)

    def _compute_latency(self) -> int:
        """Smallest FIFO prefill that never runs dry, from the stages' sample counts."""
        core, card = self.core, self.card
        steady = core.settings.model_latency(card) + core.K * card.hop
        if not self.resampling:
            n = np.arange(1, 2 * steady + 1)
            finals = np.array([core.final_after(int(i)) for i in n])
            return int(np.max(n - finals))
        q = self.settings.resampler_quality
        rs_in = soxr.ResampleStream(self.sample_rate, card.sample_rate, 1, dtype="float32", quality=q)
        rs_out = soxr.ResampleStream(card.sample_rate, self.sample_rate, 1, dtype="float32", quality=q)
        one = np.zeros((1, 1), dtype=np.float32)
        ratio = self.sample_rate / card.sample_rate
        # long enough for both resamplers' start-up and many periods of the rate ratio
        n_dev = int(np.ceil(3 * steady * ratio)) + 2 * self.sample_rate
        m = made = out = lag = 0
        for i in range(1, n_dev + 1):
            m += rs_in.resample_chunk(one).shape[0]
            final = core.final_after(m)
            if final > made:
                out += rs_out.resample_chunk(np.zeros((final - made, 1), dtype=np.float32)).shape[0]
                made = final
            lag = max(lag, i - out)
        return int(lag)

    @property
    def timings(self) -> TimingRing:
        """How long each inference of this stream took (seconds), since :meth:`warm_up`."""
        return self.core.timings

    def warm_up(self) -> None:
        """Run every stage on silence until the model has run (numba compiles, the runtime
        allocates on its first calls), then :meth:`reset` and clear :attr:`timings`: the
        first real block is not slow, and the timings are the stream's own."""
        core = self.core
        n = 4 * core.K * core.hop * self.sample_rate // self.card.sample_rate + 1
        self.process_block(np.zeros((n, self.n_channels), dtype=np.float32))
        self.reset()
        core.timings.clear()

    def measure_inference(self, runs: int = 30, percentile: float = 90, warm_up: int = 3) -> float:
        """A percentile, in seconds, of one inference as this separator runs it (its channels,
        the mask columns or the stateful step of its hop batch), timed on random input apart
        from the stream, which it leaves as it is (:func:`vocex.realtime.timing.time_inference`)."""
        return time_inference(self.core.backend, self.n_channels, runs, percentile, warm_up, self.core.need)

    def reset(self) -> None:
        """Forget all signal history; the next block starts a new stream."""
        self.core.reset()
        self._new_resamplers()
        self.vocal_fifo.clear()
        self.dry_fifo.clear()
        self.vocal_fifo.push_zeros(self._latency)
        self.dry_fifo.push_zeros(self._latency)
        self.underruns = 0
        # a new stream starts at the current gains, without a fade
        self._gains_from = self._gains_to = self._target
        self._fade_pos = self.fade_samples

    def process_block(
        self, block: NDArray[np.float32], out: NDArray[np.float32] | None = None, skip_inference: bool = False
    ) -> NDArray[np.float32]:
        """Process ``(n_samples, n_channels)`` float32; returns ``out`` (allocated if None).

        ``skip_inference=True`` skips inference for the frames this block completes (their
        mask is 0: karaoke mode plays the dry input, vocals mode silence) but keeps every
        buffer and the timing intact, so a late host can catch up without a glitch in
        alignment."""
        self.core.bypass = skip_inference
        if block.ndim != 2 or block.shape[1] != self.n_channels:
            raise ValueError(f"block must be (n_samples, {self.n_channels}), got {block.shape}")
        if out is None:
            out = np.empty_like(block, dtype=np.float32)
        for a in range(0, block.shape[0], self.max_block):
            b = min(a + self.max_block, block.shape[0])
            self._process(block[a:b], out[a:b])
        return out

    def _process(self, block: NDArray[np.float32], out: NDArray[np.float32]) -> None:
        n = block.shape[0]
        self.nonfinite_samples += _finite_copy(block, self.clean_in[:n])
        block = self.clean_in[:n]
        x = self.rs_in.resample_chunk(block) if self.resampling else block
        # soxr releases what it withheld in one go at the start: feed the core in pieces
        piece = self.core.max_push
        for a in range(0, x.shape[0], piece):
            made = self.core.push(x[a : a + piece].T)
            if made:
                k = self.core.vocals.pop_into(self.vocal_chunk[:, :made])
                if self.resampling:
                    y = self.rs_out.resample_chunk(np.ascontiguousarray(self.vocal_chunk[:, :k].T))
                    self.vocal_fifo.push(y.T)
                else:
                    self.vocal_fifo.push(self.vocal_chunk[:, :k])
        self.dry_fifo.push(block.T)
        voc, dry = self.voc_out[:, :n], self.dry_out[:, :n]
        got = self.vocal_fifo.pop_into(voc)
        if got < n:  # cannot happen with the computed latency; counted, never silent garbage
            voc[:, got:] = 0.0
            self.underruns += 1
        self.dry_fifo.pop_into(dry)
        target = self._target  # one read: another thread may set mode, mix or bypass
        if target != self._gains_to:  # crossfade from wherever the gains are now
            w = min(self._fade_pos / self.fade_samples, 1.0) if self.fade_samples else 1.0
            (d0, v0), (d1, v1) = self._gains_from, self._gains_to
            self._gains_from = (d0 + w * (d1 - d0), v0 + w * (v1 - v0))
            self._gains_to, self._fade_pos = target, 0
        self._fade_pos = _mix_out(voc, dry, out, *self._gains_from, *self._gains_to, self._fade_pos,
                                  self.fade_samples)

    def flush(self) -> NDArray[np.float32]:
        """Push ``latency_samples`` of silence: returns the last ``(latency_samples,
        n_channels)`` output, completing the response to everything pushed so far."""
        zeros = np.zeros((self._latency, self.n_channels), dtype=np.float32)
        return self.process_block(zeros)


def separate_streaming(
    backend: Backend,
    audio: NDArray[np.float32],
    sample_rate: int,
    settings: StreamingSettings | None = None,
    block_size: int = 4096,
) -> NDArray[np.float32]:
    """Vocals of a whole signal through the streaming separator, aligned by its latency.

    Args:
        audio: ``(n_samples, n_channels)`` float32 at ``sample_rate``.
    Returns:
        ``(n_samples, n_channels)`` float32 vocal estimate (what ``vocex-live --mode vocals``
        plays, shifted back by ``latency_samples``).
    """
    stream = AlignedStream(backend, audio.shape[1], sample_rate, settings, block_size)
    return np.concatenate([stream.push(audio)[0], stream.finish()[0]])


class AlignedStream:
    """The live separator (:class:`StreamingSeparator`, vocals mode) over a signal given in
    blocks, its output shifted back by its latency: ``push``/``finish``/``picture`` like
    :class:`~vocex.model.separate.SeparationStream` (no picture).  :meth:`push` takes the next
    ``(n, n_channels)`` float32 block at ``sample_rate`` and returns ``(vocals,
    accompaniment)`` of the input samples now final; :meth:`finish` the rest."""

    def __init__(self, backend: Backend, n_channels: int, sample_rate: int, settings: StreamingSettings | None,
                 block_size: int) -> None:
        self._sep = StreamingSeparator(backend, n_channels, sample_rate, settings, mode="vocals",
                                       max_block=max(block_size, 1))
        self._block = max(block_size, 1)
        self._skip = self._sep.latency_samples
        self._input = np.zeros((0, n_channels), np.float32)
        self.n_channels = n_channels

    def push(self, block: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        out = np.empty_like(block)
        for a in range(0, block.shape[0], self._block):
            self._sep.process_block(block[a : a + self._block], out[a : a + self._block])
        self._input = np.concatenate([self._input, block])
        return self._pair(out)

    def finish(self) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        return self._pair(self._sep.flush())

    def picture(self) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        empty = np.zeros((self.n_channels, 0, 0), np.float32)
        return empty, empty

    def _pair(self, out: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        drop = min(self._skip, out.shape[0])
        self._skip -= drop
        vocals = out[drop : drop + self._input.shape[0]]
        audio, self._input = self._input[: vocals.shape[0]], self._input[vocals.shape[0] :]
        return vocals, audio - vocals
