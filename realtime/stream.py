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

import time
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import soxr
from numpy.typing import NDArray

from vocex.model.backends import STATEFUL_PERIOD, Backend, newest_columns
from vocex.model.card import ModelCard
from vocex.model.dsp import analysis_window, check_temperature, extend_mask, soften, synthesis_support, synthesis_window

MODES = ("karaoke", "vocals")
FADE_MS = 5.0  # a change of mode, mix or bypass crossfades over this long
RESAMPLER_QUALITY = "LQ"  # soxr: 0.5 ms (44.1 -> 48 kHz) / 10 ms (48 -> 44.1 kHz) of delay


@dataclass(frozen=True)
class StreamingSettings:
    """How the live path uses a model: an inference every ``hop_batch`` (K) hops, whose newest
    K mask columns are used after ``lookahead_frames`` (L) further frames of future context,
    softened by ``mask_temperature`` (:func:`vocex.model.dsp.soften`).  A card with
    ``mask_delay`` D puts frame f's mask in column f + D, so its K columns are then the
    window's ``[-L-K+D, -L+D)`` and L must be at least D.

    A card that streams in the stateful form (``card.streaming``) has no window: each
    inference is one step of the stateful network over the K new columns, which gives their
    K masks (frames ``[-K-D, -D)``); the masks are kept L - D further frames.  The latency is
    the same formula for both forms."""

    hop_batch: int = 1
    lookahead_frames: int = 0
    mask_temperature: float = 1.0
    resampler_quality: str = RESAMPLER_QUALITY

    def validate(self, card: ModelCard) -> None:
        if self.hop_batch < 1 or self.lookahead_frames < 0:
            raise ValueError("hop batch K must be >= 1 and lookahead L >= 0")
        if card.streaming == "window" and self.hop_batch + self.lookahead_frames > card.context_frames:
            raise ValueError(f"K + L must be at most context_frames ({card.context_frames})")
        if self.lookahead_frames < card.mask_delay:
            raise ValueError(f"this model gives each frame's mask {card.mask_delay} frame(s) late: "
                             f"lookahead L must be at least {card.mask_delay}")
        check_temperature(self.mask_temperature)

    def mask_columns(self, card: ModelCard) -> slice:
        """The K columns of the network's window that hold the masks of the frames an
        inference outputs (the oldest first)."""
        lo = card.context_frames - self.lookahead_frames - self.hop_batch + card.mask_delay
        return slice(lo, lo + self.hop_batch)

    def columns_needed(self, card: ModelCard) -> int:
        """How many of the window's newest mask columns an inference needs (K + L - mask
        delay): its K columns are the oldest of them.  The stateful form computes exactly the
        K new columns of a step (the L - D after them were kept from earlier steps): K."""
        if card.streaming == "stateful":
            return self.hop_batch
        return card.context_frames - self.mask_columns(card).start

    def model_latency(self, card: ModelCard) -> int:
        """Algorithmic latency at the model's rate, in samples, without resampling: the
        synthesis window's support (``n_fft``, or ``2 * hop`` for a low-delay window) less one, and
        a hop for each further frame of the batch and of the lookahead."""
        support = synthesis_support(card.n_fft, card.hop, card.window)
        return support - 1 + (self.hop_batch - 1 + self.lookahead_frames) * card.hop

    def describe(self, card: ModelCard) -> dict[str, Any]:
        return {"hop_batch": self.hop_batch, "lookahead_frames": self.lookahead_frames,
                "mask_temperature": self.mask_temperature,
                "model_latency_ms": round(1000 * self.model_latency(card) / card.sample_rate, 2)}


HOP_BATCHES = (1, 2, 4, 8)  # the K that --hop-batch auto chooses from
AUTO_LOAD = 0.5  # the share of the time between inferences that auto K leaves to inference


def choose_hop_batch(card: ModelCard, inference_seconds: float, lookahead: int = 0,
                     target_load: float = AUTO_LOAD) -> int:
    """The smallest K of :data:`HOP_BATCHES` (least latency) at which one inference of
    ``inference_seconds`` takes at most ``target_load`` of the K hops it has to keep up with;
    the largest K that fits the context when none does."""
    hop_seconds = card.hop / card.sample_rate
    fits = [k for k in HOP_BATCHES if k + lookahead <= card.context_frames] or [1]
    return next((k for k in fits if inference_seconds <= target_load * k * hop_seconds), fits[-1])


def inference_times(backend: Backend, n_items: int, runs: int, warm_up: int = 3, columns: int = 1) -> NDArray[np.float64]:
    """Seconds of each of ``runs`` calls on a random window of ``n_items`` network items, for
    its newest ``columns`` mask columns (the card's ``context_frames``: the whole window),
    after ``warm_up`` untimed calls.

    A card that streams statefully is timed the way it streams: ``warm_up`` untimed, then
    ``runs`` timed steps of ``columns`` random columns each (the hop batch K), and at least
    one whole period of the layers' phases (64 / K steps), so every step kind is timed."""
    card = backend.card
    if card.streaming == "stateful":
        stream = backend.open_stream(n_items, columns)
        step = np.random.default_rng(0).random((n_items, 1, card.n_bins, columns), dtype=np.float32)
        for _ in range(warm_up):
            stream.step(step)
        times = np.empty(max(runs, STATEFUL_PERIOD // np.gcd(columns, STATEFUL_PERIOD)))
        for i in range(len(times)):
            t0 = time.perf_counter()
            stream.step(step)
            times[i] = time.perf_counter() - t0
        return times
    window = np.random.default_rng(0).random((n_items, 1, card.n_bins, card.context_frames), dtype=np.float32)
    for _ in range(warm_up):
        newest_columns(backend, window, columns)
    times = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        newest_columns(backend, window, columns)
        times[i] = time.perf_counter() - t0
    return times


def time_inference(backend: Backend, n_channels: int, runs: int = 30, percentile: float = 90,
                   warm_up: int = 3, columns: int = 1) -> float:
    """A percentile, in seconds, of one streaming inference (the window of ``n_channels``
    channels, or of their downmix for a ``downmix`` card, and its newest ``columns`` mask
    columns), after ``warm_up`` untimed calls."""
    n_net = backend.card.network_channels(n_channels)
    return float(np.percentile(inference_times(backend, n_net, runs, warm_up, columns), percentile))


def streaming_settings(card: ModelCard, hop_batch: int | None = None, lookahead: int | None = None,
                       mask_temperature: float | None = None) -> StreamingSettings:
    """Settings with the card's live defaults (``card.live``) filled in."""
    live = card.live
    s = StreamingSettings(hop_batch if hop_batch is not None else int(live.get("hop_batch", 1)),
                          lookahead if lookahead is not None else int(live.get("lookahead_frames", card.mask_delay)),
                          mask_temperature if mask_temperature is not None
                          else float(live.get("mask_temperature", 1.0)))
    s.validate(card)
    return s


@numba.njit(cache=True, nogil=True)
def _overlap_add(acc: np.ndarray, frames: np.ndarray, synth: np.ndarray, hop: int,
                 out: np.ndarray, out_pos: int) -> None:  # pragma: no cover - compiled
    """Overlap-add ``frames`` (C, K, S) into ``acc`` (C, S) one after another, S the synthesis
    support (the newest samples of each frame that its synthesis window writes); after each
    frame the first ``hop`` samples of ``acc`` are final: they go to
    ``out[:, out_pos + k*hop : ...]`` and ``acc`` shifts left by ``hop``."""
    n_ch, n_frames, support = frames.shape
    for c in range(n_ch):
        for k in range(n_frames):
            for i in range(support):
                acc[c, i] += frames[c, k, i] * synth[i]
            base = out_pos + k * hop
            for i in range(hop):
                out[c, base + i] = acc[c, i]
            for i in range(support - hop):
                acc[c, i] = acc[c, i + hop]
            for i in range(support - hop, support):
                acc[c, i] = 0.0


class TimingRing:
    """The most recent ``capacity`` durations (seconds), preallocated, plus the max since the
    last ``clear``."""

    def __init__(self, capacity: int = 1 << 16) -> None:
        self.values = np.zeros(capacity, dtype=np.float64)
        self.clear()

    def clear(self) -> None:
        self.count = 0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        self.values[self.count % len(self.values)] = seconds
        self.count += 1
        if seconds > self.max:
            self.max = seconds

    def recent(self) -> NDArray[np.float64]:
        return self.values[: min(self.count, len(self.values))]

    def summary_ms(self) -> dict[str, float]:
        """``{p50, p99, max}`` in milliseconds (zeros before the first inference)."""
        v = self.recent()
        if not v.size:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0}
        p50, p99 = np.percentile(v, [50, 99])
        return {"p50": round(1000 * p50, 3), "p99": round(1000 * p99, 3), "max": round(1000 * self.max, 3)}


class _Fifo:
    """Fixed-capacity FIFO of ``(n_channels, capacity)`` float32 (no allocation after init)."""

    def __init__(self, n_channels: int, capacity: int) -> None:
        self.buf = np.zeros((n_channels, capacity), dtype=np.float32)
        self.cap = capacity
        self.start = 0
        self.size = 0

    def push(self, data: NDArray[np.float32]) -> None:  # data (n_channels, n)
        n = data.shape[1]
        if self.size + n > self.cap:
            raise OverflowError("FIFO overflow")
        pos = (self.start + self.size) % self.cap
        first = min(n, self.cap - pos)
        self.buf[:, pos : pos + first] = data[:, :first]
        self.buf[:, : n - first] = data[:, first:]
        self.size += n

    def push_zeros(self, n: int) -> None:
        pos = (self.start + self.size) % self.cap
        first = min(n, self.cap - pos)
        self.buf[:, pos : pos + first] = 0.0
        self.buf[:, : n - first] = 0.0
        self.size += n

    def pop_into(self, out: NDArray[np.float32]) -> int:  # out (n_channels, n); returns n popped
        n = min(out.shape[1], self.size)
        first = min(n, self.cap - self.start)
        out[:, :first] = self.buf[:, self.start : self.start + first]
        out[:, first:n] = self.buf[:, : n - first]
        self.start = (self.start + n) % self.cap
        self.size -= n
        return n

    def clear(self) -> None:
        self.start = self.size = 0


class MaskStream:
    """The model-rate core: samples in, time-aligned vocal estimate out, in bursts.

    ``push(x)`` takes ``(n_channels, n)`` float32 at the model rate and returns how many new
    vocal samples became final; they are appended to ``self.vocals`` (a :class:`_Fifo`).
    The vocal stream is aligned with the input: its sample ``i`` estimates input sample ``i``.

    A card that streams statefully (``card.streaming``) steps the backend's stateful stream
    (``backend.open_stream``) over each K new columns instead of running the network on a
    window; its masks are those of :meth:`vocex.model.stateful.StatefulUNet.offline` over
    the stream since its start (or its last ``reset``).  Skipping an inference
    (``bypass``) restarts that network's memory: the following masks are those of a stream
    started after the skipped frames.
    """

    def __init__(self, backend: Backend, n_channels: int, settings: StreamingSettings, max_push: int = 4096) -> None:
        card = backend.card
        settings.validate(card)
        self.backend, self.card, self.settings = backend, card, settings
        self.n_channels = n_channels
        n_fft, hop, ctx = card.n_fft, card.hop, card.context_frames
        self.n_fft, self.hop, self.ctx, self.n_bins = n_fft, hop, ctx, card.n_bins
        self.K, self.L = settings.hop_batch, settings.lookahead_frames
        self.need = settings.columns_needed(card)  # the newest mask columns an inference asks for
        n_freqs = n_fft // 2 + 1
        self.window = analysis_window(n_fft, hop, card.window)
        # only the newest `support` samples of a frame are synthesised (all but for a low-delay window)
        self.support = synthesis_support(n_fft, hop, card.window)
        self.synth = synthesis_window(n_fft, hop, card.window)[n_fft - self.support :]
        self.frame_in = np.zeros((n_channels, n_fft), dtype=np.float32)
        self.windowed = np.zeros((n_channels, n_fft), dtype=np.float32)
        self.spec = np.zeros((n_channels, n_freqs), dtype=np.complex64)
        hist = self.K + self.L
        self.spec_hist = np.zeros((n_channels, hist, n_freqs), dtype=np.complex64)
        # the network sees each channel, or one downmix (card.channels == "downmix")
        self.downmix = card.channels == "downmix" and n_channels > 1
        n_net = 1 if self.downmix else n_channels
        self.mix_spec = np.zeros((1, n_freqs), dtype=np.complex64)
        self.stateful = card.streaming == "stateful"
        # the magnitude columns: the window's ring, or the K new columns of a stateful step
        self.mag_ring = np.zeros((n_net, 1, card.n_bins, self.K if self.stateful else ctx), dtype=np.float32)
        if self.stateful:
            open_stream = getattr(backend, "open_stream", None)
            if open_stream is None:
                raise ValueError(f"the {getattr(backend, 'name', 'given')} backend cannot run the stateful form")
            self.state_stream = open_stream(n_net, self.K)
            # the newest K + L - D mask columns: the oldest K are the frames an inference outputs
            self.mask_hist = np.zeros((n_net, 1, card.n_bins, self.K + self.L - card.mask_delay), dtype=np.float32)
        else:
            self.window_in = np.zeros((n_net, 1, card.n_bins, ctx), dtype=np.float32)
        self.masked = np.zeros((n_channels, self.K, n_freqs), dtype=np.complex64)
        self.zero_mask = np.zeros((n_net, n_freqs, self.K), dtype=np.float32)
        self.frames = np.zeros((n_channels, self.K, n_fft), dtype=np.float32)
        self.frames_tail = self.frames[:, :, n_fft - self.support :]
        self.acc = np.zeros((n_channels, self.support), dtype=np.float32)
        self.burst = np.zeros((n_channels, self.K * hop), dtype=np.float32)
        # one push of max_push samples finalises at most max_push + K * hop samples
        self.max_push = max_push
        self.vocals = _Fifo(n_channels, max_push + n_fft + (self.K + self.L + 2) * hop)
        self.timings = TimingRing()
        self.bypass = False  # when True, inference is skipped and the mask is 0 (dry output)
        self.reset()

    def reset(self) -> None:
        for a in (self.frame_in, self.spec_hist, self.mag_ring, self.acc):
            a[...] = 0
        if self.stateful:
            self.state_stream.reset()
            self.mask_hist[...] = 0
        self.fill = self.n_fft - self.hop  # the first frame sees n_fft - hop zeros (as offline)
        self.n_frames = 0
        self.discard = self.support - self.hop  # OLA output before the signal's start
        self.vocals.clear()

    def final_after(self, n_in: int) -> int:
        """How many vocal samples are final after ``n_in`` input samples (counts only)."""
        frames = n_in // self.hop
        events = frames // self.K
        done_frames = events * self.K - self.L  # frames whose OLA head is final
        return max(0, done_frames * self.hop - (self.support - self.hop))

    def push(self, x: NDArray[np.float32]) -> int:
        n, pos, made = x.shape[1], 0, 0
        while pos < n:
            take = min(self.n_fft - self.fill, n - pos)
            self.frame_in[:, self.fill : self.fill + take] = x[:, pos : pos + take]
            self.fill += take
            pos += take
            if self.fill == self.n_fft:
                made += self._on_frame()
                self.frame_in[:, : self.n_fft - self.hop] = self.frame_in[:, self.hop :]
                self.fill = self.n_fft - self.hop
        return made

    def _on_frame(self) -> int:
        j = self.n_frames
        np.multiply(self.frame_in, self.window, out=self.windowed)
        np.fft.rfft(self.windowed, axis=1, out=self.spec)
        hist = self.K + self.L
        self.spec_hist[:, j % hist] = self.spec
        if self.downmix:
            np.mean(self.spec, axis=0, keepdims=True, out=self.mix_spec)
            np.abs(self.mix_spec[:, : self.n_bins], out=self.mag_ring[:, 0, :, j % self.mag_ring.shape[-1]])
        else:
            np.abs(self.spec[:, : self.n_bins], out=self.mag_ring[:, 0, :, j % self.mag_ring.shape[-1]])
        self.n_frames = j + 1
        if self.n_frames % self.K:
            return 0
        return self._infer()

    def _infer(self) -> int:
        j = self.n_frames - 1
        ctx, K, L = self.ctx, self.K, self.L
        if self.bypass:
            full = self.zero_mask
            if self.stateful:  # the network missed these columns: its memory starts again
                self.state_stream.reset()
                self.mask_hist[...] = 0
        else:
            if self.stateful:
                t0 = time.perf_counter()
                new = self.state_stream.step(self.mag_ring)  # masks of columns j-K+1 .. j
                self.timings.add(time.perf_counter() - t0)
                mask = self.mask_hist  # its oldest K columns are the frames' masks
                mask[..., : mask.shape[-1] - K] = mask[..., K:]
                mask[..., mask.shape[-1] - K :] = new
            else:
                start = (j + 1) % ctx  # oldest column of the window in the ring
                self.window_in[..., : ctx - start] = self.mag_ring[..., start:]
                self.window_in[..., ctx - start :] = self.mag_ring[..., :start]
                t0 = time.perf_counter()
                mask = newest_columns(self.backend, self.window_in, self.need)  # (C or 1, 1, n_bins, need)
                self.timings.add(time.perf_counter() - t0)
            # a model that returns NaN/Inf never reaches the output: NaN -> 0, clip to [0, 1]
            mask = np.nan_to_num(mask[:, 0, :, :K], nan=0.0, posinf=1.0, neginf=0.0)
            mask = soften(np.clip(mask, 0.0, 1.0), self.settings.mask_temperature)
            full = extend_mask(mask, self.spec.shape[1])  # (C or 1, n_freqs, K)
        hist = K + L
        first = j - L - K + 1  # oldest frame the mask columns belong to
        for k in range(K):
            f = first + k
            if f < 0:
                self.masked[:, k] = 0
            else:
                np.multiply(self.spec_hist[:, f % hist], full[:, :, k], out=self.masked[:, k])
        np.fft.irfft(self.masked, n=self.n_fft, axis=2, out=self.frames)
        _overlap_add(self.acc, self.frames_tail, self.synth, self.hop, self.burst, 0)
        produced = K * self.hop
        # frames before the stream start (f < 0) emit nothing, and the first support - hop
        # samples of the OLA are the left padding of frame 0: drop both
        lo = min(max(0, -first) * self.hop, produced)
        skip = min(self.discard, produced - lo)
        self.discard -= skip
        lo += skip
        self.vocals.push(self.burst[:, lo:produced])
        return produced - lo


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
        self.vocal_fifo = _Fifo(n_channels, self._latency + max_block + most)
        self.dry_fifo = _Fifo(n_channels, self._latency + max_block + 1)
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

    def warm_up(self) -> None:
        """Run every stage on silence until the model has run (numba compiles, the runtime
        allocates on its first calls), then :meth:`reset`: the first real block is not slow."""
        core = self.core
        n = 4 * core.K * core.hop * self.sample_rate // self.card.sample_rate + 1
        self.process_block(np.zeros((n, self.n_channels), dtype=np.float32))
        self.reset()

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
    sep = StreamingSeparator(backend, audio.shape[1], sample_rate, settings, mode="vocals",
                             max_block=max(block_size, 1))
    out = np.empty((audio.shape[0] + sep.latency_samples, audio.shape[1]), dtype=np.float32)
    for a in range(0, audio.shape[0], block_size):
        b = min(a + block_size, audio.shape[0])
        sep.process_block(audio[a:b], out[a:b])
    out[audio.shape[0] :] = sep.flush()
    return out[sep.latency_samples :]


def reference_vocals(
    backend: Backend, audio: NDArray[np.float32], settings: StreamingSettings
) -> NDArray[np.float32]:
    """What the streaming core computes, done offline with batched inference: for testing.

    Args:
        audio: ``(n_samples, n_channels)`` float32 at the model's rate.
    Returns:
        ``(n_samples, n_channels)`` float32 vocals, aligned with the input.
    """
    from vocex.model.dsp import istft, stft
    from vocex.model.separate import network_magnitude

    card = backend.card
    K, L, ctx, hop = settings.hop_batch, settings.lookahead_frames, card.context_frames, card.hop
    n, n_ch = audio.shape
    tail = (K + L + -(-card.n_fft // hop) + 1) * hop
    padded = np.concatenate([audio, np.zeros((tail, n_ch), dtype=np.float32)])
    spec = stft(padded, card.n_fft, hop, card.window)
    mag = network_magnitude(spec, card)
    n_net, _, n_frames = mag.shape
    mag = np.concatenate([np.zeros((n_net, card.n_bins, ctx), dtype=np.float32), mag], axis=2)
    mask = np.zeros((n_net, card.n_bins, n_frames), dtype=np.float32)
    columns = settings.mask_columns(card)
    for j in range(K - 1, n_frames, K):
        win = mag[:, None, :, j + 1 : j + 1 + ctx]  # frames j-ctx+1 .. j
        cols = backend(np.ascontiguousarray(win))[:, 0, :, columns]
        first = j - L - K + 1
        for k in range(K):
            if 0 <= first + k < n_frames:
                mask[:, :, first + k] = soften(np.clip(cols[:, :, k], 0.0, 1.0), settings.mask_temperature)
    full = extend_mask(mask, spec.shape[1])
    return istft(spec * full, padded.shape[0], card.n_fft, hop, card.window)[:n]
