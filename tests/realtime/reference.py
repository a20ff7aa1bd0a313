"""Test references for the streaming separator."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from vocex.model.backends import Backend
from vocex.model.dsp import extend_mask, istft, soften, stft
from vocex.model.separate import network_magnitude
from vocex.realtime.settings import StreamingSettings


def reference_vocals(
    backend: Backend, audio: NDArray[np.float32], settings: StreamingSettings
) -> NDArray[np.float32]:
    """What the streaming core computes, done offline with batched inference: for testing.

    Args:
        audio: ``(n_samples, n_channels)`` float32 at the model's rate.
    Returns:
        ``(n_samples, n_channels)`` float32 vocals, aligned with the input.
    """
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
