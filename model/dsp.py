"""STFT front end shared by training, offline separation and the streaming path.

Conventions (one definition used everywhere, so streaming == offline can be tested):

* Frame ``j`` covers input samples ``[(j + 1) * hop - n_fft, (j + 1) * hop)``; samples
  before the start of the signal are zeros.  This is exactly what a streaming STFT sees
  when it computes a frame each time ``hop`` new samples have arrived.
* Analysis window ``w``; synthesis window ``w / sum_k w(n - k hop)^2`` (least-squares
  overlap-add), so analysis followed by synthesis reconstructs the input exactly for any
  ``n_fft``/``hop`` pair whose window sum has no zeros.  Two such windows are provided:
  ``sqrt_hann`` (for ``hop <= n_fft / 2``) and ``sine_taper`` (flat top with sine tapers of
  length ``n_fft - hop``: power-complementary, for the paper's 25 % overlap).
* ``low_delay`` is an asymmetric pair for streaming (Mauler & Martin, "A low delay, variable
  resolution, perfect reconstruction spectral analysis-synthesis system for speech
  enhancement", EUSIPCO 2007): the analysis window rises over ``n_fft - hop`` samples and
  falls over the last ``hop``; the synthesis window is zero except on the frame's newest
  ``2 * hop`` samples, where the two multiply to a Hann window of that length (which sums to
  1 at this hop).  A frame then only writes its newest ``2 * hop`` samples, so a stream's
  output waits ``2 * hop - 1`` samples for the window instead of ``n_fft - 1``, with the
  frequency resolution of the full ``n_fft``.  :func:`synthesis_support` gives that length.
* ``sqrt_hann_low_delay`` keeps the ``sqrt_hann`` analysis window, so a model trained with
  ``sqrt_hann`` sees exactly the same input, and takes the same short synthesis window: the
  Hann window of the newest ``2 * hop`` samples divided by the falling half of the analysis
  window (at most ``8 / (3 sqrt 3)`` = 1.54 at ``hop = n_fft / 4``, and 0 at the frame's end).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

WINDOWS = ("sqrt_hann", "sine_taper", "low_delay", "sqrt_hann_low_delay")
LOW_DELAY = ("low_delay", "sqrt_hann_low_delay")  # synthesis on the newest 2 hops only


def default_window(n_fft: int, hop: int) -> str:
    """The window vocex uses for an ``n_fft``/``hop`` pair."""
    return "sqrt_hann" if 2 * hop <= n_fft else "sine_taper"


def check_window(n_fft: int, hop: int, window: str) -> None:
    """ValueError unless ``window`` is one of :data:`WINDOWS` and can frame ``n_fft``/``hop``
    (the low-delay windows need ``hop <= n_fft / 2``)."""
    if not 0 < hop <= n_fft:
        raise ValueError(f"hop must be in 1..n_fft, got hop={hop}, n_fft={n_fft}")
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}; choose one of {', '.join(WINDOWS)}")
    if window in LOW_DELAY and 2 * hop > n_fft:
        raise ValueError(f"a low-delay window needs hop <= n_fft / 2, got hop={hop}, n_fft={n_fft}")


def analysis_window(n_fft: int, hop: int, window: str) -> NDArray[np.float32]:
    """Analysis window, shape ``(n_fft,)``, float32."""
    check_window(n_fft, hop, window)
    n = np.arange(n_fft, dtype=np.float64)
    if window in ("sqrt_hann", "sqrt_hann_low_delay"):
        w = np.sqrt(0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft))
    elif window == "sine_taper":
        taper = n_fft - hop
        w = np.ones(n_fft)
        if taper > 0:
            ramp = np.sin(0.5 * np.pi * (np.arange(taper) + 0.5) / taper)
            w[:taper] = ramp
            w[n_fft - taper :] = ramp[::-1]
    else:  # low_delay
        rise = n_fft - hop  # sqrt-Hann rising half of length 2 * rise, then one of length 2 * hop
        w = np.empty(n_fft)
        w[:rise] = np.sin(0.5 * np.pi * n[:rise] / rise)
        w[rise:] = np.cos(0.5 * np.pi * (n[rise:] - rise) / hop)
    return w.astype(np.float32)


def synthesis_window(n_fft: int, hop: int, window: str) -> NDArray[np.float32]:
    """Synthesis window, shape ``(n_fft,)``, float32: ``w / sum_k w(n - k hop)^2``, or for
    the :data:`LOW_DELAY` windows the window whose product with the analysis window is a Hann
    window on the newest ``2 * hop`` samples (zero before them)."""
    w = analysis_window(n_fft, hop, window).astype(np.float64)
    if window in LOW_DELAY:
        support = 2 * hop
        m = np.arange(support, dtype=np.float64)
        hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * m / support)
        out = np.zeros(n_fft)
        tail = w[n_fft - support :]  # > 0 except where hann is 0 too (sample 0 when n_fft == 2 * hop)
        out[n_fft - support :] = np.divide(hann, tail, out=np.zeros(support), where=tail > 0)
        return out.astype(np.float32)
    wsum = np.zeros(n_fft + hop)
    for start in range(-(n_fft // hop) * hop, n_fft, hop):
        lo, hi = max(start, 0), min(start + n_fft, n_fft)
        if lo < hi:
            wsum[lo:hi] += w[lo - start : hi - start] ** 2
    wsum = wsum[:n_fft]
    if wsum.min() < 1e-3:
        raise ValueError(f"window {window!r} with n_fft={n_fft}, hop={hop} cannot reconstruct")
    return (w / wsum).astype(np.float32)


def synthesis_support(n_fft: int, hop: int, window: str) -> int:
    """How many of a frame's newest samples its synthesis window writes: ``n_fft``, or
    ``2 * hop`` for the :data:`LOW_DELAY` windows.  A stream's output waits
    ``synthesis_support - 1`` samples for the window."""
    return 2 * hop if window in LOW_DELAY else n_fft


def n_frames_for(n_samples: int, n_fft: int, hop: int) -> int:
    """Frames needed so that every sample is covered by all frames that overlap it."""
    return -(-n_samples // hop) + -(-n_fft // hop) - 1


def stft(
    audio: NDArray[np.float32], n_fft: int, hop: int, window: str
) -> NDArray[np.complex64]:
    """Short-time Fourier transform.

    Args:
        audio: ``(n_samples, n_channels)`` float32.
    Returns:
        ``(n_channels, n_fft // 2 + 1, n_frames)`` complex64, ``n_frames`` from
        :func:`n_frames_for`.
    """
    n_samples, n_channels = audio.shape
    n_frames = n_frames_for(n_samples, n_fft, hop)
    total = (n_frames - 1) * hop + n_fft
    padded = np.zeros((n_channels, total), dtype=np.float32)
    padded[:, n_fft - hop : n_fft - hop + n_samples] = audio.T
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=1)[:, ::hop]
    spec = np.fft.rfft(frames * analysis_window(n_fft, hop, window), axis=-1)
    return np.ascontiguousarray(spec.transpose(0, 2, 1)).astype(np.complex64)


def istft(
    spec: NDArray[np.complex64], n_samples: int, n_fft: int, hop: int, window: str
) -> NDArray[np.float32]:
    """Inverse of :func:`stft`.

    Args:
        spec: ``(n_channels, n_fft // 2 + 1, n_frames)`` complex.
        n_samples: length of the signal to return.
    Returns:
        ``(n_samples, n_channels)`` float32.
    """
    frames = np.fft.irfft(spec.transpose(0, 2, 1), n=n_fft, axis=-1)
    frames *= synthesis_window(n_fft, hop, window)
    return _overlap_add(frames, n_samples, hop).astype(np.float32)


def frame_weights(
    weights: NDArray[np.floating], n_samples: int, n_fft: int, hop: int, window: str
) -> NDArray[np.float64]:
    """Per-sample weight of a per-frame weighting, as :func:`istft` applies it.

    ``istft(spec * weights)`` of a signal's own STFT is ``frame_weights(weights) * signal``
    exactly (the overlap-add of the weighted analysis x synthesis windows).

    Args:
        weights: ``(n_frames,)``.
    Returns:
        ``(n_samples,)`` float64.
    """
    window_product = analysis_window(n_fft, hop, window) * synthesis_window(n_fft, hop, window)
    frames = np.asarray(weights, np.float64)[None, :, None] * window_product.astype(np.float64)
    return _overlap_add(frames, n_samples, hop)[:, 0]


def _overlap_add(frames: NDArray[np.floating], n_samples: int, hop: int) -> NDArray[np.float64]:
    """``(n_channels, n_frames, n_fft)`` frames laid ``hop`` apart and summed, trimmed as
    :func:`stft` padded: ``(n_samples, n_channels)``."""
    n_channels, n_frames, n_fft = frames.shape
    total = (n_frames - 1) * hop + n_fft
    out = np.zeros((n_channels, total), dtype=np.float64)
    for j in range(n_frames):
        out[:, j * hop : j * hop + n_fft] += frames[:, j]
    start = n_fft - hop
    audio = np.zeros((n_samples, n_channels), dtype=np.float64)
    avail = min(n_samples, total - start)
    audio[:avail] = out[:, start : start + avail].T
    return audio


def extend_mask(mask: NDArray[np.float32], n_freqs: int) -> NDArray[np.float32]:
    """Extend a mask over the model's ``n_bins`` to all ``n_freqs`` STFT bins.

    Bins above the model's band (the Nyquist bin for the paper's 512 of 513) take the
    mask of the highest modelled bin.

    Args:
        mask: ``(..., n_bins, n_frames)`` in [0, 1].
    Returns:
        ``(..., n_freqs, n_frames)``.
    """
    n_bins = mask.shape[-2]
    if n_bins >= n_freqs:
        return mask[..., :n_freqs, :]
    top = np.repeat(mask[..., n_bins - 1 : n_bins, :], n_freqs - n_bins, axis=-2)
    return np.concatenate([mask, top], axis=-2)


def check_temperature(temperature: float) -> float:
    """``temperature`` if it is a valid :func:`soften` temperature (positive), else ValueError."""
    if not temperature > 0:
        raise ValueError(f"the mask temperature must be positive, got {temperature}")
    return temperature


def soften(mask: NDArray[np.float32], temperature: float) -> NDArray[np.float32]:
    """A sigmoid mask with its logits divided by ``temperature``:
    ``m^p / (m^p + (1 - m)^p)`` with ``p = 1 / temperature`` (exact at 0 and 1)."""
    if temperature == 1.0:
        return mask
    m = np.clip(mask, 0.0, 1.0).astype(np.float32, copy=False)
    a, b = m ** (1.0 / temperature), (1.0 - m) ** (1.0 / temperature)
    return a / (a + b)
