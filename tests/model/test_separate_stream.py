"""Offline separation in blocks (SeparationStream) against one whole-signal pass.

The reference below is the whole-signal algorithm as it stood before the block path: resample
everything, one STFT per pass over the whole signal, every patch masked, one overlap-add,
resample back.  The block path must give the same output within 1e-5 for any length and any
way the input is cut into blocks, and keep buffers that do not grow with the signal."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import tone_mix
from tests.model.test_separate import ConstantMask, PointwiseMask
from vocex.model.audio import resample
from vocex.model.dsp import extend_mask, frame_weights, istft, stft
from tests.model.reference import weighted_mask
from vocex.model.separate import Separator, frame_centres, network_magnitude, vocal_share

RATE = 8000  # the tiny card's rate
BLOCK_GRID = [1, 64, 65, 128, 8192, 8193]


def whole_signal(separator: Separator, audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Vocals of ``audio`` by the whole-signal algorithm (the reference)."""
    card, shifts = separator.card, separator.shifts
    x = resample(audio, sample_rate, card.sample_rate)
    vocals_sum = np.zeros(x.shape, np.float64)
    weight_sum = np.zeros(x.shape[0], np.float64)
    high_band = separator.high_band and sample_rate > card.sample_rate
    t = np.arange(x.shape[0])
    share_sum, share_weight = np.zeros(x.shape[0]), np.zeros(x.shape[0])
    for k in range(shifts):
        delay, offset = k * card.hop // shifts, k * card.context_frames // shifts
        shifted = np.concatenate([np.zeros((delay, x.shape[1]), np.float32), x])
        spec = stft(shifted, card.n_fft, card.hop, card.window)
        magnitude = network_magnitude(spec, card)
        weighted, weights = weighted_mask(separator.backend, magnitude, offset, separator.batch_size,
                                          separator.temperature)
        full = extend_mask(weighted, spec.shape[1])
        vocals_sum += istft(spec * full, shifted.shape[0], card.n_fft, card.hop, card.window)[delay:]
        weight_sum += frame_weights(weights, shifted.shape[0], card.n_fft, card.hop, card.window)[delay:]
        if high_band and x.shape[0]:
            centres = frame_centres(weights.shape[0], card, delay)
            share_sum += np.interp(t, centres, vocal_share(weighted, magnitude, card))
            share_weight += np.interp(t, centres, weights)
    vocals_model = vocals_sum / weight_sum[:, None]
    if not high_band:
        return resample(vocals_model.astype(np.float32), card.sample_rate, sample_rate, n_out=audio.shape[0])
    share = share_sum / share_weight
    low = (vocals_model - share[:, None] * x).astype(np.float32)
    share_up = (np.interp(np.arange(audio.shape[0]) * (card.sample_rate / sample_rate), t, share)
                if x.shape[0] else np.zeros(audio.shape[0]))  # (the whole-signal code raised here)
    vocals = resample(low, card.sample_rate, sample_rate, n_out=audio.shape[0])
    return vocals + (share_up[:, None] * audio).astype(np.float32)


def in_blocks(separator: Separator, audio: np.ndarray, sample_rate: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Vocals and accompaniment through a stream fed ``block`` samples at a time."""
    stream = separator.stream(sample_rate, audio.shape[1], audio.shape[0])
    outs = [stream.push(audio[a : a + block]) for a in range(0, audio.shape[0], block)]
    outs.append(stream.finish())
    return np.concatenate([v for v, _ in outs]), np.concatenate([a for _, a in outs])


def _lengths(separator: Separator, sample_rate: int) -> list[int]:
    """Lengths with awkward block borders for :meth:`Separator.separate`'s blocks."""
    b = separator.block_size(sample_rate, 2)
    return [1, b // 3, b, b + 1, 2 * b - 1, 2 * b + 1]


@pytest.mark.parametrize("shifts", [1, 2, 3])
def test_in_memory_equals_the_whole_signal_at_awkward_lengths(tiny_backend, shifts):
    sep = Separator(tiny_backend, shifts=shifts)
    for n in _lengths(sep, RATE):
        x = tone_mix(n, RATE, seed=n)
        got = sep.separate(x, RATE)
        assert got.vocals.shape == x.shape
        np.testing.assert_allclose(got.vocals, whole_signal(sep, x, RATE), atol=1e-5, err_msg=f"n={n}")
        np.testing.assert_allclose(got.vocals + got.accompaniment, x, atol=1e-6)


@pytest.mark.parametrize("rate,high_band", [(44100, False), (16000, True), (44100, True), (6000, False)])
def test_resampled_and_high_band_equal_the_whole_signal(tiny_backend, rate, high_band):
    sep = Separator(tiny_backend, shifts=2, high_band=high_band)
    for n in _lengths(sep, rate):
        x = tone_mix(n, rate, seed=n)
        np.testing.assert_allclose(sep.separate(x, rate).vocals, whole_signal(sep, x, rate), atol=1e-5,
                                   err_msg=f"n={n}")


@pytest.mark.parametrize("block", BLOCK_GRID)
def test_any_block_size_gives_the_same_output(tiny_backend, block):
    sep = Separator(tiny_backend, shifts=2, high_band=True)
    n = 5000 if block == 1 else 3 * sep.block_size(16000, 2) + 7
    x = tone_mix(n, 16000, seed=block)
    vocals, accompaniment = in_blocks(sep, x, 16000, block)
    np.testing.assert_allclose(vocals, whole_signal(sep, x, 16000), atol=1e-5)
    np.testing.assert_allclose(vocals + accompaniment, x, atol=1e-6)


@pytest.mark.parametrize("delay", [1, 3])
def test_a_delayed_mask_equals_the_whole_signal(tiny_backend, delay):
    sep = Separator(PointwiseMask(tiny_backend.card, delay), shifts=3, batch_size=3)
    for n in _lengths(sep, RATE):
        x = tone_mix(n, RATE, seed=n)
        np.testing.assert_allclose(in_blocks(sep, x, RATE, 1000)[0], whole_signal(sep, x, RATE), atol=1e-5)


def test_downmix_equals_the_whole_signal(tmp_path_factory):
    from tests.conftest import make_model
    from vocex.model.backends import load_backend, resolve_model

    card = make_model(tmp_path_factory.mktemp("downmix"), name="dm", seed=3, channels="downmix")
    sep = Separator(load_backend(resolve_model(card), "onnx", "cpu", threads=1))
    x = tone_mix(sep.block_size(RATE, 2) + 1, RATE)
    x[:, 1] *= 0.3
    got = sep.separate(x, RATE)
    assert got.mask.shape[0] == 1
    np.testing.assert_allclose(got.vocals, whole_signal(sep, x, RATE), atol=1e-5)


@pytest.fixture(scope="module", params=[(128, 96), (128, 48)], ids=lambda p: f"n_fft{p[0]}-hop{p[1]}")
def framing_backend(request, tmp_path_factory):
    """Tiny models whose hop does not divide n_fft (the paper's 1024/768 is such a pair)."""
    from tests.conftest import make_model
    from vocex.model.backends import load_backend, resolve_model

    n_fft, hop = request.param
    card = make_model(tmp_path_factory.mktemp("framing"), name="framing", n_fft=n_fft, hop=hop, n_bins=n_fft // 2)
    return load_backend(resolve_model(card), "onnx", "cpu", threads=1)


@pytest.mark.parametrize("high_band", [False, True])
def test_a_hop_that_does_not_divide_n_fft(framing_backend, high_band):
    for shifts in (1, 2):
        sep = Separator(framing_backend, shifts=shifts, high_band=high_band)
        for n in _lengths(sep, 16000):
            x = tone_mix(n, 16000, seed=n)
            np.testing.assert_allclose(sep.separate(x, 16000).vocals, whole_signal(sep, x, 16000), atol=1e-5,
                                       err_msg=f"shifts={shifts} n={n}")
        delayed = Separator(PointwiseMask(framing_backend.card, 2), shifts=shifts, high_band=high_band)
        x = tone_mix(delayed.block_size(16000, 2) + 1, 16000)
        np.testing.assert_allclose(in_blocks(delayed, x, 16000, 777)[0], whole_signal(delayed, x, 16000), atol=1e-5)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 30000), block=st.integers(1, 20000), shifts=st.integers(1, 4),
       rate=st.sampled_from([8000, 11025, 22050]), high_band=st.booleans())
def test_blocks_equal_the_whole_signal_property(tiny_backend, n, block, shifts, rate, high_band):
    sep = Separator(tiny_backend, shifts=shifts, high_band=high_band, batch_size=5)
    block = max(block, n // 200)  # bounds the number of pushes, not the borders they fall on
    x = tone_mix(n, rate, seed=n)
    vocals, accompaniment = in_blocks(sep, x, rate, block)
    np.testing.assert_allclose(vocals, whole_signal(sep, x, rate), atol=1e-5)
    np.testing.assert_allclose(vocals + accompaniment, x, atol=1e-6)


def test_the_first_pass_picture_is_kept_whole_or_decimated(tiny_backend):
    sep = Separator(tiny_backend, shifts=2)
    x = tone_mix(3 * RATE, RATE)
    whole = sep.separate(x, RATE)
    card = tiny_backend.card
    magnitude = network_magnitude(stft(x, card.n_fft, card.hop, card.window), card)
    np.testing.assert_allclose(whole.magnitude, magnitude, rtol=1e-6, atol=1e-7)
    stream = sep.stream(RATE, 2, x.shape[0], picture=100)
    for a in range(0, x.shape[0], 999):
        stream.push(x[a : a + 999])
    stream.finish()
    small_mag, small_mask = stream.picture()
    step = -(-magnitude.shape[2] // 100)
    np.testing.assert_allclose(small_mag, magnitude[:, :, ::step], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(small_mask, whole.mask[:, :, ::step], atol=1e-6)
    assert small_mag.shape[2] <= 100
    nothing = sep.stream(RATE, 2)
    nothing.push(x)
    nothing.finish()
    assert nothing.picture()[0].shape[2] == 0


def _peak_buffers(card, seconds: float, rate: int) -> int:
    """The most samples a stream held in any of its buffers while separating ``seconds``."""
    sep = Separator(ConstantMask(card, 0.5), shifts=2, high_band=True)
    stream = sep.stream(rate, 2)
    peak = 0
    block = sep.block_size(rate, 2)
    x = tone_mix(block, rate)
    for _ in range(int(seconds * rate) // block):
        stream.push(x)
        peak = max(peak, *(len(getattr(stream, name)) for name in
                           ("_x", "_vocal_sum", "_weight_sum", "_share_sum", "_input", "_pending", "_share")))
    stream.finish()
    return peak


def test_buffers_do_not_grow_with_the_signal(tiny_backend):
    for rate in (8000, 44100):
        assert _peak_buffers(tiny_backend.card, 60, rate) == _peak_buffers(tiny_backend.card, 240, rate)


def test_push_checks_the_block_and_the_order(tiny_backend):
    stream = Separator(tiny_backend).stream(RATE, 2)
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        stream.push(np.zeros((10, 1), np.float32))
    stream.finish()
    with pytest.raises(ValueError, match="after finish"):
        stream.push(np.zeros((10, 2), np.float32))
