import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vocex.model.dsp import (analysis_window, default_window, extend_mask, frame_weights, istft, n_frames_for, stft,
                             synthesis_support, synthesis_window)

PAIRS = [(1024, 768), (1024, 256), (1024, 512), (512, 128), (128, 32), (256, 192), (64, 64), (100, 25)]


@pytest.mark.parametrize("n_fft,hop", PAIRS)
def test_stft_istft_reconstructs_exactly(n_fft, hop):
    rng = np.random.default_rng(n_fft + hop)
    x = rng.standard_normal((5000, 2)).astype(np.float32)
    w = default_window(n_fft, hop)
    spec = stft(x, n_fft, hop, w)
    assert spec.shape == (2, n_fft // 2 + 1, n_frames_for(5000, n_fft, hop))
    np.testing.assert_allclose(istft(spec, 5000, n_fft, hop, w), x, atol=2e-5)


@pytest.mark.parametrize("n_fft,hop", PAIRS)
def test_frame_weights_are_what_istft_applies(n_fft, hop):
    """Weighting the frames of a signal's STFT scales each sample by ``frame_weights``."""
    rng = np.random.default_rng(n_fft * hop)
    x = rng.standard_normal((3000, 2)).astype(np.float32)
    w = default_window(n_fft, hop)
    spec = stft(x, n_fft, hop, w)
    weights = rng.uniform(0.1, 1.0, spec.shape[-1])
    expected = frame_weights(weights, 3000, n_fft, hop, w)[:, None] * x
    np.testing.assert_allclose(istft(spec * weights, 3000, n_fft, hop, w), expected, atol=3e-5)
    np.testing.assert_allclose(frame_weights(np.ones(spec.shape[-1]), 3000, n_fft, hop, w), 1.0, atol=1e-6)


@given(n_fft=st.sampled_from([64, 96, 128, 256]), hop_div=st.sampled_from([1, 4 / 3, 2, 3, 4]),
       n=st.integers(1, 900))
@settings(max_examples=40, deadline=None)
def test_reconstruction_any_length(n_fft, hop_div, n):
    hop = int(n_fft / hop_div)
    x = np.random.default_rng(n).standard_normal((n, 1)).astype(np.float32)
    w = default_window(n_fft, hop)
    np.testing.assert_allclose(istft(stft(x, n_fft, hop, w), n, n_fft, hop, w), x, atol=2e-5)


def test_paper_window_is_power_complementary():
    w = analysis_window(1024, 768, "sine_taper").astype(np.float64)
    overlap = w[768:] ** 2 + w[:256] ** 2
    np.testing.assert_allclose(overlap, 1.0, atol=1e-6)
    assert np.all(w[256:768] == 1.0)
    np.testing.assert_allclose(synthesis_window(1024, 768, "sine_taper"), w, atol=1e-6)


@pytest.mark.parametrize("window", ["low_delay", "sqrt_hann_low_delay"])
@pytest.mark.parametrize("n_fft,hop", [(1024, 256), (128, 32), (256, 128)])
def test_low_delay_windows_reconstruct_from_the_newest_two_hops(window, n_fft, hop):
    a = analysis_window(n_fft, hop, window).astype(np.float64)
    s = synthesis_window(n_fft, hop, window).astype(np.float64)
    assert np.all(s[: n_fft - 2 * hop] == 0) and np.all(s[n_fft - 2 * hop + 1 : -1] > 0)
    if window == "low_delay":
        assert np.argmax(a) == n_fft - hop  # rises over n_fft - hop, falls over hop
    else:  # the sqrt_hann analysis, so a sqrt_hann model sees the same input
        np.testing.assert_array_equal(a, analysis_window(n_fft, hop, "sqrt_hann"))
        assert s.max() <= 8 / (3 * np.sqrt(3)) + 1e-6
    total = np.zeros(n_fft + 8 * hop)
    for k in range(n_fft // hop + 8):
        lo = k * hop
        total[lo : lo + n_fft] += (a * s)[: len(total) - lo]
    np.testing.assert_allclose(total[n_fft : n_fft + 4 * hop], 1.0, atol=1e-6)
    n = 5 * n_fft + 17
    x = np.random.default_rng(1).standard_normal((n, 2)).astype(np.float32)
    got = istft(stft(x, n_fft, hop, window), n, n_fft, hop, window)
    np.testing.assert_allclose(got, x, atol=2e-5)
    assert synthesis_support(n_fft, hop, window) == 2 * hop
    assert synthesis_support(n_fft, hop, "sqrt_hann") == n_fft


@pytest.mark.parametrize("window", ["low_delay", "sqrt_hann_low_delay"])
def test_low_delay_windows_need_half_overlap(window):
    with pytest.raises(ValueError, match="low-delay window needs hop <= n_fft / 2"):
        analysis_window(1024, 768, window)


def test_frame_convention_is_causal():
    """Frame j sees samples up to (j + 1) * hop: an impulse at sample s shows up first in
    frame s // hop (what a streaming STFT computes after s + 1 samples)."""
    x = np.zeros((4000, 1), np.float32)
    x[1000] = 1
    spec = stft(x, 256, 64, "sqrt_hann")
    energy = np.abs(spec[0]).sum(axis=0)
    assert np.flatnonzero(energy > 1e-6)[0] == 1000 // 64


def test_unreconstructable_window_rejected():
    with pytest.raises(ValueError):
        synthesis_window(256, 256, "sqrt_hann")


def test_extend_mask_repeats_top_bin():
    mask = np.random.default_rng(0).random((2, 4, 3)).astype(np.float32)
    full = extend_mask(mask, 6)
    assert full.shape == (2, 6, 3)
    np.testing.assert_array_equal(full[:, 4], mask[:, 3])
    np.testing.assert_array_equal(full[:, 5], mask[:, 3])
