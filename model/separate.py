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
pass of half-overlapping patches did and score about 0.3 dB better (the "shift trick" of
Demucs, here with the patch overlap folded into it).  The accompaniment is the input minus
the vocal estimate, so the two always sum to the input exactly and everything above the
model's band (4096 Hz for the paper preset) goes to the accompaniment, unless the high band
is asked for: then, above the model's band, the input is scaled by the vocal share the
model found in the top of its band (:data:`HIGH_BAND_FROM_HZ` up), frame by frame.  That
helps songs whose highs are mostly voice and hurts songs with bright cymbals, so it is off
unless the card or the caller switches it on.

The model card's ``offline`` settings hold the calibrations, measured on validation songs:
``mask_temperature`` divides the network's mask logits (a temperature above 1 softens an
over-confident mask) and ``high_band`` switches the high band.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from vocex.model.audio import resample
from vocex.model.backends import Backend
from vocex.model.card import ModelCard
from vocex.model.dsp import check_temperature, extend_mask, frame_weights, istft, n_frames_for, soften, stft

DEFAULT_SHIFTS = 2  # passes unless told otherwise: one network call per frame and pass
HIGH_BAND_FROM_HZ = 2000.0  # the vocal share above the model's band is the share from here up
Progress = Callable[[int, int], None]  # (done, total) patches


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


def patch_starts(n_frames: int, context_frames: int, offset: int) -> list[int]:
    """Starts of back-to-back patches covering frames ``0 .. n_frames - 1``, the first at
    ``-offset`` (``0 <= offset < context_frames``; the frames before 0 are zeros)."""
    return list(range(-offset, n_frames, context_frames))


def weighted_mask(
    backend: Backend,
    magnitude: NDArray[np.float32],
    offset: int,
    batch_size: int = 8,
    progress: Progress | None = None,
    temperature: float = 1.0,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The backend's masks of one pass's patches, softened (:func:`soften`), each times
    :func:`patch_weights`.

    Args:
        magnitude: ``(n_channels, n_bins, n_frames)`` float32, ``n_bins`` the card's.
        offset: the first patch starts ``offset`` frames before frame 0.
    Returns:
        ``(weighted_mask, weights)``: ``(n_channels, n_bins, n_frames)`` and ``(n_frames,)``;
        ``weighted_mask / weights`` is the pass's mask, in [0, 1].

    A card's ``mask_delay`` D (frame f's mask in column f + D) is undone here: the magnitude
    gets D silent frames at its end and every mask moves D frames back.  A patch's first D
    columns are the masks of frames before the patch, which it cannot see: they get a
    thousandth of their weight, so the passes that hold those frames decide them.
    """
    ctx, delay = backend.card.context_frames, backend.card.mask_delay
    if delay:
        magnitude = np.concatenate([magnitude, np.zeros(magnitude.shape[:2] + (delay,), np.float32)], axis=2)
    n_channels, n_bins, n_frames = magnitude.shape
    starts = patch_starts(n_frames, ctx, offset)
    span = starts[-1] + ctx + offset
    padded = np.zeros((n_channels, n_bins, span), dtype=np.float32)
    padded[:, :, offset : offset + n_frames] = magnitude
    w = patch_weights(ctx)
    if delay:  # a patch's first D columns hold frames before the patch: trust other passes there
        w[:delay] *= 1e-3
    weighted = np.zeros_like(padded)
    jobs = [(c, p) for p in range(len(starts)) for c in range(n_channels)]
    for i in range(0, len(jobs), batch_size):
        chunk = jobs[i : i + batch_size]
        batch = np.stack([padded[c, None, :, p * ctx : (p + 1) * ctx] for c, p in chunk])
        for (c, p), m in zip(chunk, soften(backend(batch), temperature)):
            weighted[c, :, p * ctx : (p + 1) * ctx] = m[0] * w
        if progress:
            progress(min(i + batch_size, len(jobs)), len(jobs))
    weights = np.tile(w, len(starts))
    return (np.ascontiguousarray(weighted[:, :, offset + delay : offset + n_frames]),
            np.ascontiguousarray(weights[offset + delay : offset + n_frames]))


def network_magnitude(spec: NDArray[np.complex64], card: ModelCard) -> NDArray[np.float32]:
    """What the network sees of a mixture STFT ``(n_channels, n_freqs, n_frames)``:
    ``(n_channels, n_bins, n_frames)`` magnitudes, or ``(1, n_bins, n_frames)`` of the channels'
    mean for a ``downmix`` card (its one mask then broadcasts over the channels)."""
    if card.channels == "downmix":
        spec = spec.mean(axis=0, keepdims=True)
    return np.abs(spec[:, : card.n_bins]).astype(np.float32)


def apply_mask(
    spec: NDArray[np.complex64], mask: NDArray[np.float32], card: ModelCard, n_samples: int
) -> NDArray[np.float32]:
    """Vocals at the model's rate from a mixture STFT ``(n_channels, n_freqs, n_frames)`` and a
    model-band mask ``(n_channels or 1, n_bins, n_frames)``: ``(n_samples, n_channels)``."""
    full = extend_mask(mask, spec.shape[1])
    return istft(spec * full, n_samples, card.n_fft, card.hop, card.window)


def vocal_share(
    weighted: NDArray[np.float32], magnitude: NDArray[np.float32], card: ModelCard,
    from_hz: float = HIGH_BAND_FROM_HZ,
) -> NDArray[np.float64]:
    """The vocal share of each frame's magnitude (summed over channels) from ``from_hz`` to
    the top of the model's band, times the frame's weight: ``(n_frames,)`` from one pass's
    :func:`weighted_mask` output and the magnitude it masked."""
    lo = int(np.ceil(from_hz * card.n_fft / card.sample_rate))
    top = magnitude[:, lo:]
    return (weighted[:, lo:] * top).sum(axis=(0, 1)) / np.maximum(top.sum(axis=(0, 1)), 1e-8)


def frame_centres(n_frames: int, card: ModelCard, delay: int = 0) -> NDArray[np.float64]:
    """Sample times (at the model's rate) of the centres of :func:`stft` frames of a signal
    delayed by ``delay`` samples, in the undelayed signal's time."""
    return np.arange(n_frames) * card.hop + card.hop - card.n_fft / 2 - delay


class Separator:
    """Whole-file separation with one backend in ``shifts`` blended passes (see the module doc).

    ``temperature`` and ``high_band`` default to the card's ``offline`` settings (1.0 and off).
    """

    def __init__(
        self, backend: Backend, batch_size: int = 8, shifts: int = DEFAULT_SHIFTS,
        temperature: float | None = None, high_band: bool | None = None,
    ) -> None:
        card = backend.card
        limit = min(card.hop, card.context_frames)
        if shifts < 1 or shifts > limit:
            raise ValueError(f"shifts must be in 1..{limit} (the hop and the patch width), got {shifts}")
        self.temperature = check_temperature(card.offline.get("mask_temperature", 1.0) if temperature is None
                                             else temperature)
        self.high_band = card.offline.get("high_band", False) if high_band is None else high_band
        self.backend = backend
        self.card = card
        self.batch_size = batch_size
        self.shifts = shifts

    def separate(
        self, audio: NDArray[np.float32], sample_rate: int, progress: Progress | None = None
    ) -> Separation:
        """Separate ``(n_samples, n_channels)`` float32 audio at ``sample_rate`` Hz."""
        card, shifts = self.card, self.shifts
        x = resample(audio, sample_rate, card.sample_rate)
        vocals_sum = np.zeros(x.shape, dtype=np.float64)
        weight_sum = np.zeros(x.shape[0], dtype=np.float64)
        high_band = self.high_band and sample_rate > card.sample_rate  # else there is none
        if high_band:
            t = np.arange(x.shape[0])
            share_sum = np.zeros(x.shape[0], dtype=np.float64)
            share_weight = np.zeros(x.shape[0], dtype=np.float64)
        plan = [(k * card.hop // shifts, k * card.context_frames // shifts) for k in range(shifts)]
        n_net = card.network_channels(x.shape[1])
        patches = [n_net * len(patch_starts(n_frames_for(x.shape[0] + delay, card.n_fft, card.hop),
                                            card.context_frames, offset)) for delay, offset in plan]
        for k, (delay, offset) in enumerate(plan):
            shifted = np.concatenate([np.zeros((delay, x.shape[1]), np.float32), x]) if delay else x
            spec = stft(shifted, card.n_fft, card.hop, card.window)
            pass_magnitude = network_magnitude(spec, card)
            pass_progress = None if progress is None else _pass_progress(progress, sum(patches[:k]), sum(patches))
            weighted, weights = weighted_mask(self.backend, pass_magnitude, offset, self.batch_size,
                                              pass_progress, self.temperature)
            vocals_sum += apply_mask(spec, weighted, card, shifted.shape[0])[delay:]
            weight_sum += frame_weights(weights, shifted.shape[0], card.n_fft, card.hop, card.window)[delay:]
            if high_band:
                centres = frame_centres(weights.shape[0], card, delay)
                share_sum += np.interp(t, centres, vocal_share(weighted, pass_magnitude, card))
                share_weight += np.interp(t, centres, weights)
            if k == 0:
                magnitude, mask = pass_magnitude, weighted / weights
        vocals_model = vocals_sum / weight_sum[:, None]
        if not high_band:
            vocals = resample(vocals_model.astype(np.float32), card.sample_rate, sample_rate, n_out=audio.shape[0])
            return Separation(vocals, audio - vocals, magnitude, mask)
        # vocals + share * (input - its low band), with the low band's part folded in before
        # resampling (the share varies slowly against the band edge): one resampling call.
        share = share_sum / share_weight
        low = (vocals_model - share[:, None] * x).astype(np.float32)
        share_up = np.interp(np.arange(audio.shape[0]) * (card.sample_rate / sample_rate), t, share)
        vocals = resample(low, card.sample_rate, sample_rate, n_out=audio.shape[0])
        vocals += (share_up[:, None] * audio).astype(np.float32)
        return Separation(vocals, audio - vocals, magnitude, mask)


def _pass_progress(progress: Progress, before: int, total: int) -> Progress:
    """Progress of one pass reported among all passes' patches (``before`` of them done)."""
    return lambda done, _: progress(before + done, total)
