"""Offline separation of whole signals.

The signal is resampled to the model's rate and separated in ``shifts`` passes.  Pass
``k`` delays the signal by ``k * hop // shifts`` samples, cuts the STFT magnitude into
back-to-back ``context_frames``-wide patches starting ``k * context_frames // shifts``
frames later than pass 0's, and masks each patch with the backend.  Every frame thus gets
one mask per pass, from patches whose borders and STFT frames all fall elsewhere.  The
passes are blended in the time domain with a triangular weight over each patch, so a frame
near a patch border (where the network sees context on one side only) leans on the passes
in which it sits near a patch centre; the weights enter exactly as :func:`istft` applies
them (:func:`frame_weights`), so a constant mask still scales the input exactly.

The cost is one network call per frame and pass.  Two passes (the default) cost what one
pass of half-overlapping patches does and score better (the "shift trick" of
Demucs, here with the patch overlap folded into it).  The accompaniment is the input minus
the vocal estimate, so the two always sum to the input exactly and everything above the
model's band (4096 Hz for the paper preset) goes to the accompaniment, unless the high band
is asked for: then, above the model's band, the input is scaled by the vocal share the
model found in the top of its band (:data:`HIGH_BAND_FROM_HZ` up), frame by frame.  That
helps songs whose highs are mostly voice and hurts songs with bright cymbals, so it is off
unless the card or the caller switches it on.

The work is done in blocks (:class:`SeparationStream`): soxr's streaming resampler in and
out, each pass's STFT frames, patches and overlap-add carried across block borders, so a
long file is separated in memory that does not grow with its length and gives the same
output as one whole-signal pass would.  :meth:`Separator.separate` feeds an in-memory
signal through the same blocks.

The model card's ``offline`` settings hold the calibrations, measured on validation songs:
``mask_temperature`` divides the network's mask logits (a temperature above 1 softens an
over-confident mask) and ``high_band`` switches the high band.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import soxr
from numpy.typing import NDArray

from vocex.model.backends import Backend
from vocex.model.card import ModelCard
from vocex.model.dsp import check_temperature, extend_mask, frame_weights, istft, n_frames_for, soften, stft

DEFAULT_SHIFTS = 2  # passes unless told otherwise: one network call per frame and pass
HIGH_BAND_FROM_HZ = 2000.0  # the vocal share above the model's band is the share from here up
Progress = Callable[[float, float], None]  # (done, in all) seconds of the input


@dataclass
class Separation:
    """Result of :meth:`Separator.separate`.

    ``vocals`` / ``accompaniment``: ``(n_samples, n_channels)`` float32 at the input rate.
    ``magnitude`` / ``mask``: ``(n_channels, n_bins, n_frames)`` at the model's rate (for plots;
    one channel for a ``downmix`` card; the first pass's).
    """

    vocals: NDArray[np.float32]
    accompaniment: NDArray[np.float32]
    magnitude: NDArray[np.float32]
    mask: NDArray[np.float32]


def patch_weights(context_frames: int) -> NDArray[np.float32]:
    """Triangular weight over a patch's frames: ``1 - 1 / context_frames`` at its two centre
    frames, ``1 / context_frames`` at its two border frames (never 0, so a single pass still
    covers every frame)."""
    centre = (np.arange(context_frames) + 0.5) / (context_frames / 2)
    return (1.0 - np.abs(centre - 1.0)).astype(np.float32)


def mask_patches(
    backend: Backend, patches: NDArray[np.float32], weights: NDArray[np.float32], batch_size: int = 8,
    temperature: float = 1.0,
) -> NDArray[np.float32]:
    """The backend's masks of back-to-back patches, softened (:func:`soften`), each times ``weights``.

    Args:
        patches: ``(n_net, n_bins, n_patches * context_frames)`` float32 magnitudes.
        weights: ``(context_frames,)`` weight of each column of a patch.
    Returns:
        ``(n_net, n_bins, n_patches * context_frames)`` float32.
    """
    ctx = backend.card.context_frames
    n_net, _, n_frames = patches.shape
    out = np.empty_like(patches)
    jobs = [(c, p) for p in range(n_frames // ctx) for c in range(n_net)]
    for i in range(0, len(jobs), batch_size):
        chunk = jobs[i : i + batch_size]
        batch = np.stack([patches[c, None, :, p * ctx : (p + 1) * ctx] for c, p in chunk])
        for (c, p), m in zip(chunk, soften(backend(batch), temperature)):
            out[c, :, p * ctx : (p + 1) * ctx] = m[0] * weights
    return out


def delayed_patch_weights(card: ModelCard) -> NDArray[np.float32]:
    """:func:`patch_weights` with a card's ``mask_delay`` D: a patch's first D columns hold the
    masks of frames before the patch, which it cannot see, and get a thousandth of their weight."""
    w = patch_weights(card.context_frames)
    w[: card.mask_delay] *= 1e-3
    return w


def network_magnitude(spec: NDArray[np.complex64], card: ModelCard) -> NDArray[np.float32]:
    """What the network sees of a mixture STFT ``(n_channels, n_freqs, n_frames)``:
    ``(n_channels, n_bins, n_frames)`` magnitudes, or ``(1, n_bins, n_frames)`` of the channels'
    mean for a ``downmix`` card (its one mask then broadcasts over the channels)."""
    if card.channels == "downmix":
        spec = spec.mean(axis=0, keepdims=True)
    return np.abs(spec[:, : card.n_bins]).astype(np.float32)


def vocal_share(
    weighted: NDArray[np.float32], magnitude: NDArray[np.float32], card: ModelCard,
    from_hz: float = HIGH_BAND_FROM_HZ,
) -> NDArray[np.float64]:
    """The vocal share of each frame's magnitude (summed over channels) from ``from_hz`` to
    the top of the model's band, times the frame's weight: ``(n_frames,)`` from one pass's
    weighted mask (:func:`mask_patches`) and the magnitude it masked."""
    lo = int(np.ceil(from_hz * card.n_fft / card.sample_rate))
    top = magnitude[:, lo:]
    return (weighted[:, lo:] * top).sum(axis=(0, 1)) / np.maximum(top.sum(axis=(0, 1)), 1e-8)


def frame_centres(n_frames: int, card: ModelCard, delay: int = 0) -> NDArray[np.float64]:
    """Sample times (at the model's rate) of the centres of :func:`stft` frames of a signal
    delayed by ``delay`` samples, in the undelayed signal's time."""
    return np.arange(n_frames) * card.hop + card.hop - card.n_fft / 2 - delay


class Separator:
    """Separation with one backend in ``shifts`` blended passes (see the module doc).

    ``temperature`` and ``high_band`` default to the card's ``offline`` settings (1.0 and off).
    :meth:`separate` takes a signal in memory; :meth:`stream` a signal in blocks (a long file).
    """

    def __init__(
        self, backend: Backend, batch_size: int = 8, shifts: int = DEFAULT_SHIFTS,
        temperature: float | None = None, high_band: bool | None = None,
    ) -> None:
        card = backend.card
        limit = min(card.hop, card.context_frames)
        if shifts < 1 or shifts > limit:
            raise ValueError(f"shifts must be in 1..{limit} (the hop and the patch width), got {shifts}")
        if batch_size < 1:
            raise ValueError(f"the batch size must be at least 1, got {batch_size}")
        self.temperature = check_temperature(card.offline.get("mask_temperature", 1.0) if temperature is None
                                             else temperature)
        self.high_band = card.offline.get("high_band", False) if high_band is None else high_band
        self.backend = backend
        self.card = card
        self.batch_size = batch_size
        self.shifts = shifts

    def block_size(self, sample_rate: int, n_channels: int) -> int:
        """Input samples per block that give each pass about ``batch_size`` patches to mask
        (at least one patch): the block size :meth:`separate` feeds :meth:`stream` with."""
        card = self.card
        patches = max(1, -(-self.batch_size // card.network_channels(n_channels)))
        return int(np.ceil(patches * card.context_frames * card.hop * sample_rate / card.sample_rate))

    def stream(
        self, sample_rate: int, n_channels: int, n_samples: int | None = None,
        progress: Progress | None = None, picture: int | None = 0,
    ) -> SeparationStream:
        """A :class:`SeparationStream` for a signal of ``n_channels`` at ``sample_rate`` Hz."""
        return SeparationStream(self, sample_rate, n_channels, n_samples, progress, picture)

    def separate(
        self, audio: NDArray[np.float32], sample_rate: int, progress: Progress | None = None
    ) -> Separation:
        """Separate ``(n_samples, n_channels)`` float32 audio at ``sample_rate`` Hz (in memory:
        the blocks of :meth:`stream`, with the whole first pass's magnitude and mask kept)."""
        n, n_channels = audio.shape
        stream = self.stream(sample_rate, n_channels, n, progress, picture=None)
        vocals = np.empty((n, n_channels), np.float32)
        accompaniment = np.empty((n, n_channels), np.float32)
        done = 0

        def take(out: tuple[NDArray[np.float32], NDArray[np.float32]]) -> None:
            nonlocal done
            vocals[done : done + out[0].shape[0]], accompaniment[done : done + out[0].shape[0]] = out
            done += out[0].shape[0]

        step = self.block_size(sample_rate, n_channels)
        for a in range(0, n, step):
            take(stream.push(audio[a : a + step]))
        take(stream.finish())
        return Separation(vocals, accompaniment, *stream.picture())


class SeparationStream:
    """:class:`Separator`'s passes over a signal given in blocks, in memory that does not grow
    with its length.

    :meth:`push` takes the next ``(n, n_channels)`` float32 block at ``sample_rate`` and returns
    the vocals and accompaniment of the samples now final (fewer than pushed: the patches and
    the resamplers hold some back); :meth:`finish` returns the rest.  All returned blocks
    together are as long as the input and equal what one whole-signal pass gives.

    Each pass runs its patches as soon as the samples under their frames have arrived: a
    group of patches gets its STFT frames (from the samples kept back for it), its masks, and
    the overlap-add of its masked frames and frame weights into running sums, which are final
    for a sample once every pass has added all the frames that overlap it.

    ``n_samples`` (if known) serves the progress report (``progress(seconds done, seconds in
    all)`` of the input) and the picture; ``picture`` is how many frames of the first pass's
    magnitude and mask :meth:`picture` keeps: ``None`` all, ``0`` none, else about that many
    (every k-th frame).
    """

    def __init__(
        self, separator: Separator, sample_rate: int, n_channels: int, n_samples: int | None = None,
        progress: Progress | None = None, picture: int | None = 0,
    ) -> None:
        card = self.card = separator.card
        self.separator, self.sample_rate, self.n_channels = separator, sample_rate, n_channels
        self.n_samples, self.progress = n_samples, progress
        shifts = separator.shifts
        self._plan = [(k * card.hop // shifts, k * card.context_frames // shifts) for k in range(shifts)]
        self._high_band = separator.high_band and sample_rate > card.sample_rate  # else there is none
        self._weights = delayed_patch_weights(card)
        self._lead = -(-card.n_fft // card.hop) - 1  # frames before a segment's first whole frame
        self._group = max(4, -(-separator.batch_size // card.network_channels(n_channels)))
        resampled = sample_rate != card.sample_rate
        self._down = (soxr.ResampleStream(sample_rate, card.sample_rate, n_channels, dtype="float32", quality="HQ")
                      if resampled else None)
        self._up = (soxr.ResampleStream(card.sample_rate, sample_rate, n_channels, dtype="float32", quality="HQ")
                    if resampled else None)
        # model-rate input from sample _x0 on, and _n_model samples of it received
        self._x, self._x0, self._n_model = np.zeros((0, n_channels), np.float32), 0, 0
        # running sums over the passes from model sample _done (the first not yet returned) on
        self._done = 0
        self._vocal_sum = np.zeros((0, n_channels), np.float64)
        self._weight_sum = np.zeros(0, np.float64)
        self._share_sum = np.zeros(0, np.float64)
        self._share_weight = np.zeros(0, np.float64)
        self._next_patch = [0] * shifts
        self._share_next = [0] * shifts  # high band: first model sample whose share a pass has not added
        self._share_last: list[tuple[float, float, float] | None] = [None] * shifts  # (centre, share, weight)
        # input-rate side: the input not yet returned, the vocals not yet returned
        self._input = np.zeros((0, n_channels), np.float32)
        self._pending = np.zeros((0, n_channels), np.float32)
        self._n_in, self._n_out = 0, 0
        self._share, self._share0 = np.zeros(0, np.float64), 0  # high band: share per model sample from _share0
        self._final = False
        self._picture = picture
        self._picture_step = 1
        if picture and n_samples:
            frames = n_frames_for(int(np.ceil(n_samples * card.sample_rate / sample_rate)), card.n_fft, card.hop)
            self._picture_step = max(1, -(-frames // picture))
        self._magnitude: list[NDArray[np.float32]] = []
        self._mask: list[NDArray[np.float32]] = []

    def push(self, block: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Take ``(n, n_channels)`` float32 input; returns ``(vocals, accompaniment)``, each
        ``(m, n_channels)`` float32, of the next ``m`` input samples now final."""
        if self._final:
            raise ValueError("push after finish")
        if block.ndim != 2 or block.shape[1] != self.n_channels:
            raise ValueError(f"expected a block of shape (n, {self.n_channels}), got {block.shape}")
        block = np.ascontiguousarray(block, dtype=np.float32)
        self._input = np.concatenate([self._input, block])
        self._n_in += block.shape[0]
        self._take_model(self._down.resample_chunk(block) if self._down else block)
        return self._advance()

    def finish(self) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """End of input: returns ``(vocals, accompaniment)`` of all samples not yet returned."""
        if self._final:
            raise ValueError("finish called twice")
        if self._down:
            self._take_model(self._down.resample_chunk(np.zeros((0, self.n_channels), np.float32), last=True))
        self._final = True
        return self._advance()

    def picture(self) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """The first pass's ``(magnitude, mask)``, each ``(n_net, n_bins, n_frames)`` float32 at
        the model's rate (every k-th frame when decimated; empty when not kept)."""
        if not self._magnitude:
            empty = np.zeros((self.card.network_channels(self.n_channels), self.card.n_bins, 0), np.float32)
            return empty, empty.copy()
        return np.concatenate(self._magnitude, axis=2), np.concatenate(self._mask, axis=2)

    def _take_model(self, x: NDArray[np.float32]) -> None:
        self._x = np.concatenate([self._x, x]) if self._x.shape[0] else np.ascontiguousarray(x)
        self._n_model += x.shape[0]

    def _n_frames(self, delay: int) -> int:
        """Frames of a pass delayed by ``delay`` once the length is known (as :func:`stft`)."""
        return n_frames_for(self._n_model + delay, self.card.n_fft, self.card.hop)

    def _advance(self) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        card = self.card
        ctx, hop, mask_delay = card.context_frames, card.hop, card.mask_delay
        for k, (delay, offset) in enumerate(self._plan):
            if self._final:  # every patch with an output frame before the last frame
                end = -(-(self._n_frames(delay) + offset + mask_delay) // ctx)
            else:  # every patch whose input frames have all their samples
                end = ((self._n_model + delay) // hop + offset) // ctx
            while self._next_patch[k] < end:
                p0 = self._next_patch[k]
                p1 = min(end, p0 + self._group)
                self._run_patches(k, p0, p1)
                self._next_patch[k] = p1
            if self._final and self._high_band:  # the last frame's share holds to the end
                self._add_share(k, np.zeros(0), np.zeros(0), np.zeros(0), self._n_model)
        return self._emit()

    def _samples(self, a: int, b: int) -> NDArray[np.float32]:
        """Model-rate input samples ``a .. b - 1``, zeros outside ``0 .. n_model - 1``."""
        out = np.zeros((b - a, self.n_channels), np.float32)
        lo, hi = max(a, 0), min(b, self._n_model)
        if hi > lo:
            out[lo - a : hi - a] = self._x[lo - self._x0 : hi - self._x0]
        return out

    def _run_patches(self, k: int, p0: int, p1: int) -> None:
        """Patches ``p0 .. p1 - 1`` of pass ``k``: their masks, and their masked frames and frame
        weights overlap-added into the running sums."""
        card, sep = self.card, self.separator
        ctx, hop, n_fft, mask_delay = card.context_frames, card.hop, card.n_fft, card.mask_delay
        delay, offset = self._plan[k]
        first, end = p0 * ctx - offset, p1 * ctx - offset  # the patches' input frames
        out_a, out_b = max(0, first - mask_delay), end - mask_delay  # the frames they mask
        if self._final:
            out_b = min(out_b, self._n_frames(delay))
        if out_b <= out_a:
            return
        lead = self._lead
        seg_start = (out_a - lead) * hop - delay  # frame j of the pass covers (j + 1) * hop - n_fft - delay ..
        spec = stft(self._samples(seg_start, end * hop - delay), n_fft, hop, card.window)[:, :, lead : lead + end - out_a]
        magnitude = network_magnitude(spec, card)  # frames out_a .. end - 1
        patches = np.zeros((magnitude.shape[0], card.n_bins, end - first), np.float32)
        lo = max(first, 0)
        patches[:, :, lo - first :] = magnitude[:, :, lo - out_a :]
        weighted = mask_patches(sep.backend, patches, self._weights, sep.batch_size, sep.temperature)
        # column c of the patches masks frame first + c - mask_delay
        cols = slice(out_a - first + mask_delay, out_b - first + mask_delay)
        weighted = weighted[:, :, cols]
        weights = np.tile(self._weights, p1 - p0)[cols]
        n_out = out_b - out_a
        spec, magnitude = spec[:, :, :n_out], magnitude[:, :, :n_out]
        masked = np.concatenate([np.zeros(spec.shape[:2] + (lead,), spec.dtype),
                                 spec * extend_mask(weighted, spec.shape[1])], axis=2)
        n = (lead + n_out) * hop
        vocals = istft(masked, n, n_fft, hop, card.window)
        frame_w = frame_weights(np.concatenate([np.zeros(lead), weights]), n, n_fft, hop, card.window)
        start = max(seg_start, self._done)  # before it only the zero lead frames reach (or nothing)
        self._grow(seg_start + n)
        i = start - self._done
        self._vocal_sum[i : i + n - (start - seg_start)] += vocals[start - seg_start :]
        self._weight_sum[i : i + n - (start - seg_start)] += frame_w[start - seg_start :]
        if self._high_band:
            centres = frame_centres(n_out, card, delay) + out_a * hop
            self._add_share(k, centres, vocal_share(weighted, magnitude, card), weights.astype(np.float64),
                            int(np.floor(centres[-1])) + 1)
        if k == 0 and self._picture != 0:
            keep = np.flatnonzero((np.arange(out_a, out_b) % self._picture_step) == 0)
            self._magnitude.append(magnitude[:, :, keep])
            self._mask.append(weighted[:, :, keep] / weights[keep])

    def _add_share(self, k: int, centres: NDArray[np.float64], share: NDArray[np.float64],
                   weights: NDArray[np.float64], end: int) -> None:
        """High band: a pass's vocal share and weight per frame, linearly interpolated between
        frame centres (held before the first and after the last), added for model samples up
        to ``end``."""
        last = self._share_last[k]
        if last is not None:
            centres, share, weights = (np.concatenate([[v], a]) for v, a in zip(last, (centres, share, weights)))
        if centres.shape[0] == 0:
            return
        self._share_last[k] = (float(centres[-1]), float(share[-1]), float(weights[-1]))
        t0 = self._share_next[k]
        if end <= t0:
            return
        t = np.arange(t0, end)
        self._grow(end)
        self._share_sum[t0 - self._done : end - self._done] += np.interp(t, centres, share)
        self._share_weight[t0 - self._done : end - self._done] += np.interp(t, centres, weights)
        self._share_next[k] = end

    def _grow(self, end: int) -> None:
        """Extend the running sums with zeros to cover model samples up to ``end``."""
        extra = end - self._done - self._weight_sum.shape[0]
        if extra > 0:
            self._vocal_sum = np.concatenate([self._vocal_sum, np.zeros((extra, self.n_channels))])
            self._weight_sum, self._share_sum, self._share_weight = (
                np.concatenate([a, np.zeros(extra)]) for a in (self._weight_sum, self._share_sum, self._share_weight))

    def _ready(self) -> int:
        """Model samples final in every pass."""
        if self._final:
            return self._n_model
        card = self.card
        ready = self._n_model
        for k, (delay, offset) in enumerate(self._plan):
            next_frame = self._next_patch[k] * card.context_frames - offset - card.mask_delay
            ready = min(ready, (next_frame + 1) * card.hop - card.n_fft - delay)
            if self._high_band:
                ready = min(ready, self._share_next[k])
        return max(ready, self._done)

    def _emit(self) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        ready = self._ready()
        n = ready - self._done
        vocals = self._vocal_sum[:n] / self._weight_sum[:n, None]
        if self._high_band:  # vocals + share * (input - its low band): the low band's part now
            share = self._share_sum[:n] / self._share_weight[:n]
            vocals = vocals - share[:, None] * self._x[self._done - self._x0 : ready - self._x0]
            self._share = np.concatenate([self._share, share])
        low = vocals.astype(np.float32)
        self._vocal_sum, self._weight_sum, self._share_sum, self._share_weight = (
            a[n:] for a in (self._vocal_sum, self._weight_sum, self._share_sum, self._share_weight))
        self._done = ready
        self._trim_input()
        if self._up:
            low = self._up.resample_chunk(low, last=self._final)
        self._pending = np.concatenate([self._pending, low]) if self._pending.shape[0] else low
        if self._final:  # exactly as long as the input
            n_left = self._n_in - self._n_out
            fixed = np.zeros((n_left, self.n_channels), np.float32)
            fixed[: min(n_left, self._pending.shape[0])] = self._pending[:n_left]
            self._pending = fixed
        m = self._pending.shape[0] if self._final or not self._high_band else self._high_band_ready()
        vocals_out, self._pending = self._pending[:m], self._pending[m:]
        audio, self._input = self._input[:m], self._input[m:]
        if self._high_band:
            vocals_out = vocals_out + (self._share_up(m)[:, None] * audio).astype(np.float32)
        self._n_out += m
        if self.progress is not None:
            total = max(self.n_samples or 0, self._n_in) / self.sample_rate
            self.progress(self._n_out / self.sample_rate, total)
        return np.ascontiguousarray(vocals_out), audio - vocals_out

    def _high_band_ready(self) -> int:
        """Pending vocals whose input-rate position has the share on both sides."""
        share_end = self._share0 + self._share.shape[0]
        last = int(np.floor((share_end - 1) * self.sample_rate / self.card.sample_rate))
        return int(np.clip(last + 1 - self._n_out, 0, self._pending.shape[0]))

    def _share_up(self, m: int) -> NDArray[np.float64]:
        """The model-rate share at input samples ``n_out .. n_out + m - 1``, interpolated
        (held after the last model sample); drops share values no longer needed."""
        if self._share.shape[0] == 0:
            return np.zeros(m)
        pos = np.arange(self._n_out, self._n_out + m) * (self.card.sample_rate / self.sample_rate)
        up = np.interp(pos, np.arange(self._share0, self._share0 + self._share.shape[0]), self._share)
        keep = max(int(np.floor((self._n_out + m) * self.card.sample_rate / self.sample_rate)) - 1, self._share0)
        self._share, self._share0 = self._share[keep - self._share0 :], keep
        return up

    def _trim_input(self) -> None:
        """Drop model-rate input that no later patch and no high band needs."""
        card = self.card
        keep = self._done
        for k, (delay, offset) in enumerate(self._plan):
            out_a = max(0, self._next_patch[k] * card.context_frames - offset - card.mask_delay)
            keep = min(keep, (out_a - self._lead) * card.hop - delay)
        keep = max(keep, 0)
        if keep > self._x0:
            self._x = self._x[keep - self._x0 :]
            self._x0 = keep
