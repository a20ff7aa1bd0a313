"""Offline separation of whole signals.

The signal is resampled to the model's rate, its STFT magnitude is cut into
``context_frames``-wide patches overlapping by half (each frame takes its mask from the
patch in which it sits in the central half), the patches go through the backend in
batches, and the masked STFT is inverted and resampled back.  The accompaniment is the
input minus the vocal estimate, so the two always sum to the input exactly and everything
above the model's band (4096 Hz for the paper preset) goes to the accompaniment.

With ``shifts`` > 1 the whole separation is repeated on copies of the signal delayed by
fractions of a hop (``k * hop // shifts`` samples at the model's rate), each result is moved
back and the vocal estimates are averaged: the STFT frames and patch borders fall elsewhere
in every pass, so their errors partly cancel (the "shift trick" of Demucs), at ``shifts``
times the compute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from vocex.model.audio import resample
from vocex.model.backends import Backend
from vocex.model.card import ModelCard
from vocex.model.dsp import extend_mask, istft, stft

DEFAULT_SHIFTS = 1  # offline passes unless told otherwise (2 gains ~0.3 dB at twice the compute)
Progress = Callable[[int, int], None]  # (done, total) patches


@dataclass
class Separation:
    """Result of :meth:`Separator.separate`.

    ``vocals`` / ``accompaniment``: ``(n_samples, n_channels)`` float32 at the input rate.
    ``magnitude`` / ``mask``: ``(n_channels, n_bins, n_frames)`` at the model's rate (for plots;
    one channel for a ``downmix`` card; the first pass's when ``shifts`` > 1).
    """

    vocals: NDArray[np.float32]
    accompaniment: NDArray[np.float32]
    magnitude: NDArray[np.float32]
    mask: NDArray[np.float32]


def patch_starts(n_frames: int, context_frames: int) -> tuple[int, int]:
    """``(n_patches, left_pad)`` for half-overlapping patches covering ``n_frames``."""
    stride = context_frames // 2
    return -(-n_frames // stride), context_frames // 4


def estimate_mask(
    backend: Backend,
    magnitude: NDArray[np.float32],
    batch_size: int = 8,
    progress: Progress | None = None,
) -> NDArray[np.float32]:
    """Mask of a whole magnitude spectrogram.

    Args:
        magnitude: ``(n_channels, n_bins, n_frames)`` float32, ``n_bins`` the card's.
    Returns:
        ``(n_channels, n_bins, n_frames)`` float32 in [0, 1].
    """
    card = backend.card
    ctx = card.context_frames
    n_channels, n_bins, n_frames = magnitude.shape
    stride = ctx // 2
    n_patches, left = patch_starts(n_frames, ctx)
    padded = np.zeros((n_channels, n_bins, (n_patches - 1) * stride + ctx), dtype=np.float32)
    padded[:, :, left : left + n_frames] = magnitude
    jobs = [(c, p) for p in range(n_patches) for c in range(n_channels)]
    mask = np.zeros_like(padded)
    for i in range(0, len(jobs), batch_size):
        chunk = jobs[i : i + batch_size]
        batch = np.stack([padded[c, None, :, p * stride : p * stride + ctx] for c, p in chunk])
        out = backend(batch)
        for (c, p), m in zip(chunk, out):
            lo = p * stride + left
            mask[c, :, lo : lo + stride] = m[0, :, left : left + stride]
        if progress:
            progress(min(i + batch_size, len(jobs)), len(jobs))
    return np.ascontiguousarray(mask[:, :, left : left + n_frames])


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


class Separator:
    """Whole-file separation with one backend; ``shifts`` passes averaged (see the module doc)."""

    def __init__(self, backend: Backend, batch_size: int = 8, shifts: int = 1) -> None:
        if shifts < 1 or shifts > backend.card.hop:
            raise ValueError(f"shifts must be in 1..{backend.card.hop} (the hop), got {shifts}")
        self.backend = backend
        self.card = backend.card
        self.batch_size = batch_size
        self.shifts = shifts

    def separate(
        self, audio: NDArray[np.float32], sample_rate: int, progress: Progress | None = None
    ) -> Separation:
        """Separate ``(n_samples, n_channels)`` float32 audio at ``sample_rate`` Hz."""
        card = self.card
        x = resample(audio, sample_rate, card.sample_rate)
        vocals_model = np.zeros_like(x)
        for k in range(self.shifts):
            delay = k * card.hop // self.shifts
            shifted = np.concatenate([np.zeros((delay, x.shape[1]), np.float32), x]) if delay else x
            spec = stft(shifted, card.n_fft, card.hop, card.window)
            pass_magnitude = network_magnitude(spec, card)
            pass_progress = None if progress is None else _pass_progress(progress, k, self.shifts)
            pass_mask = estimate_mask(self.backend, pass_magnitude, self.batch_size, pass_progress)
            vocals_model += apply_mask(spec, pass_mask, card, shifted.shape[0])[delay:]
            if k == 0:
                magnitude, mask = pass_magnitude, pass_mask
        vocals_model /= self.shifts
        vocals = resample(vocals_model, card.sample_rate, sample_rate, n_out=audio.shape[0])
        return Separation(vocals, audio - vocals, magnitude, mask)


def _pass_progress(progress: Progress, k: int, shifts: int) -> Progress:
    """Progress of pass ``k`` of ``shifts`` reported as a share of all passes' patches."""
    return lambda done, total: progress(k * total + done, shifts * total)
