"""The model-rate core of the streaming separator: samples in, STFT frames, the network's
masks (on a sliding window, or a stateful step), inverse FFT and overlap-add, time-aligned
vocal estimate out (:class:`MaskStream`), and the fixed-capacity FIFO it and the separator
keep their samples in (:class:`Fifo`)."""

from __future__ import annotations

import time

import numba
import numpy as np
from numpy.typing import NDArray

from vocex.model.backends import Backend, newest_columns
from vocex.model.dsp import analysis_window, extend_mask, soften, synthesis_support, synthesis_window
from vocex.realtime.settings import StreamingSettings
from vocex.realtime.timing import TimingRing


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


class Fifo:
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
    vocal samples became final; they are appended to ``self.vocals`` (a :class:`Fifo`).
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
        self.vocals = Fifo(n_channels, max_push + n_fft + (self.K + self.L + 2) * hop)
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

