"""The whole-signal form of one offline pass, kept as the reference the block-wise
:class:`vocex.model.separate.SeparationStream` is tested against."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from vocex.model.backends import Backend
from vocex.model.separate import delayed_patch_weights, mask_patches


def patch_starts(n_frames: int, context_frames: int, offset: int) -> list[int]:
    """Starts of back-to-back patches covering frames ``0 .. n_frames - 1``, the first at
    ``-offset`` (``0 <= offset < context_frames``; the frames before 0 are zeros)."""
    return list(range(-offset, n_frames, context_frames))


def weighted_mask(
    backend: Backend,
    magnitude: NDArray[np.float32],
    offset: int,
    batch_size: int = 8,
    temperature: float = 1.0,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The backend's masks of one pass's patches over a whole magnitude, softened, each times
    :func:`~vocex.model.separate.delayed_patch_weights` (what ``SeparationStream`` computes
    block by block).

    Args:
        magnitude: ``(n_channels, n_bins, n_frames)`` float32, ``n_bins`` the card's.
        offset: the first patch starts ``offset`` frames before frame 0.
    Returns:
        ``(weighted_mask, weights)``: ``(n_channels, n_bins, n_frames)`` and ``(n_frames,)``;
        ``weighted_mask / weights`` is the pass's mask, in [0, 1].

    A card's ``mask_delay`` D (frame f's mask in column f + D) is undone here: the magnitude
    gets D silent frames at its end and every mask moves D frames back.
    """
    ctx, delay = backend.card.context_frames, backend.card.mask_delay
    n_channels, n_bins, n_frames = magnitude.shape
    starts = patch_starts(n_frames + delay, ctx, offset)
    padded = np.zeros((n_channels, n_bins, len(starts) * ctx), dtype=np.float32)
    padded[:, :, offset : offset + n_frames] = magnitude
    w = delayed_patch_weights(backend.card)
    weighted = mask_patches(backend, padded, w, batch_size, temperature)
    weights = np.tile(w, len(starts))
    return (np.ascontiguousarray(weighted[:, :, offset + delay : offset + delay + n_frames]),
            np.ascontiguousarray(weights[offset + delay : offset + delay + n_frames]))
