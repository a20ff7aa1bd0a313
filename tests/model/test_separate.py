"""Offline separation: blended passes at shifted STFT frames and shifted patch borders, the
mask temperature and the high band above the model's band."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import tone_mix
from tests.model.reference import weighted_mask
from vocex.model.audio import resample
from vocex.model.dsp import extend_mask, istft, soften, stft
from vocex.model.card import CardError
from vocex.model.separate import HIGH_BAND_FROM_HZ, Separator, network_magnitude, patch_weights

RATE = 8000  # the tiny card's rate: no resampling in these tests


class ConstantMask:
    """A backend whose mask is ``value`` everywhere (card borrowed from the tiny model)."""

    name = "constant"

    def __init__(self, card, value: float) -> None:
        self.card, self.value = card, value

    def __call__(self, magnitude):
        return np.full_like(magnitude, self.value)


class BandMask:
    """A backend whose mask is ``below`` under ``split_hz`` and ``above`` from there up."""

    name = "band"

    def __init__(self, card, split_hz: float, below: float, above: float) -> None:
        self.card = card
        f = np.arange(card.n_bins) * card.sample_rate / card.n_fft
        self.column = np.where(f < split_hz, below, above).astype(np.float32)

    def __call__(self, magnitude):
        return np.broadcast_to(self.column[:, None], magnitude.shape).copy()


class CallIndexMask:
    """A backend whose mask is constant within each patch: the patch's call number / 100."""

    name = "call-index"

    def __init__(self, card) -> None:
        self.card, self.calls = card, 0

    def __call__(self, magnitude):
        out = np.empty_like(magnitude)
        for i in range(len(magnitude)):
            out[i] = self.calls / 100
            self.calls += 1
        return out


def test_patch_weights_peak_in_the_middle_and_never_vanish():
    w = patch_weights(64)
    np.testing.assert_allclose(w, w[::-1])
    assert w.min() > 0 and np.argmax(w) in (31, 32) and w.max() == pytest.approx(1 - 1 / 64)
    # two passes half a patch apart weigh every frame alike: neither pass is favoured overall
    np.testing.assert_allclose(w[:32] + w[32:], 1.0, atol=1e-6)


def test_one_pass_takes_each_frame_from_its_own_patch(tiny_backend):
    card = tiny_backend.card
    ctx = card.context_frames
    x = tone_mix(3 * ctx * card.hop, RATE)
    sep = Separator(CallIndexMask(card), shifts=1).separate(x, RATE)
    n_frames = sep.mask.shape[-1]
    expected = np.repeat(np.arange(2 * (-(-n_frames // ctx))).reshape(-1, 2).T / 100, ctx, axis=1)
    np.testing.assert_allclose(sep.mask, np.broadcast_to(expected[:, None, :n_frames], sep.mask.shape), atol=1e-6)


def test_one_pass_is_the_masked_stft(tiny_backend):
    """With one pass the weights cancel: the vocals are the plain masked STFT of its mask."""
    card = tiny_backend.card
    x = tone_mix(RATE, RATE, seed=1)
    sep = Separator(tiny_backend, shifts=1).separate(x, RATE)
    spec = stft(x, card.n_fft, card.hop, card.window)
    weighted, weights = weighted_mask(tiny_backend, network_magnitude(spec, card), 0)
    np.testing.assert_allclose(sep.mask, weighted / weights, atol=1e-6)
    plain = istft(spec * extend_mask(sep.mask, spec.shape[1]), x.shape[0], card.n_fft, card.hop, card.window)
    assert np.abs(sep.vocals - plain).max() < 0.02 * np.abs(plain).max()  # they differ only at patch borders


@pytest.mark.parametrize("shifts", [1, 2, 3, 4])
@pytest.mark.parametrize("value", [1.0, 0.25])
def test_shifted_passes_are_realigned(tiny_backend, shifts, value):
    """A constant mask scales the input: any misalignment of a delayed pass would show."""
    x = tone_mix(RATE + 77, RATE)
    sep = Separator(ConstantMask(tiny_backend.card, value), shifts=shifts).separate(x, RATE)
    np.testing.assert_allclose(sep.vocals, value * x, atol=1e-5)
    np.testing.assert_allclose(sep.vocals + sep.accompaniment, x, atol=1e-6)


def test_two_passes_blend_by_patch_position(tiny_backend):
    """Shifts 2, built by hand: pass 1 at frames delayed half a hop and patches half a patch
    later; each pass's masked STFT weighted by the triangle over its patches, normalised by
    the weight each sample received (the overlap-add of the frame weights)."""
    card = tiny_backend.card
    ctx, hop = card.context_frames, card.hop
    x = tone_mix(RATE, RATE, seed=3)
    w = patch_weights(ctx)
    num, den = 0.0, 0.0
    for delay, offset in ((0, 0), (hop // 2, ctx // 2)):
        shifted = np.concatenate([np.zeros((delay, 2), np.float32), x])
        spec = stft(shifted, card.n_fft, hop, card.window)
        mag = network_magnitude(spec, card)
        n_frames = mag.shape[-1]
        padded = np.zeros((2, card.n_bins, offset + n_frames + ctx), np.float32)
        padded[:, :, offset : offset + n_frames] = mag
        frame_w = np.zeros(padded.shape[-1])
        mask = np.zeros_like(padded)
        for s in range(0, offset + n_frames, ctx):
            mask[:, :, s : s + ctx] = tiny_backend(padded[:, None, :, s : s + ctx])[:, 0] * w
            frame_w[s : s + ctx] = w
        mask, frame_w = mask[:, :, offset : offset + n_frames], frame_w[offset : offset + n_frames]
        num = num + istft(spec * extend_mask(mask, spec.shape[1]), shifted.shape[0], card.n_fft, hop, card.window)[delay:]
        den = den + _overlap_weights(frame_w, shifted.shape[0], card)[delay:]
    two = Separator(tiny_backend, shifts=2).separate(x, RATE).vocals
    np.testing.assert_allclose(two, resample(num / den[:, None], card.sample_rate, RATE), atol=1e-5)


def _overlap_weights(frame_w, n_samples, card):
    """The weight each sample gets from per-frame weights: the constant signal 1 passed through
    STFT, frame weighting and inverse STFT (exact, since the STFT is linear and inverts)."""
    ones = np.ones((n_samples, 1), np.float32)
    spec = stft(ones, card.n_fft, card.hop, card.window)
    return istft(spec * frame_w, n_samples, card.n_fft, card.hop, card.window)[:, 0]


def test_progress_counts_every_pass(tiny_backend):
    calls: list[tuple[int, int]] = []
    Separator(tiny_backend, batch_size=1, shifts=3).separate(tone_mix(RATE, RATE), RATE, lambda d, t: calls.append((d, t)))
    totals = {t for _, t in calls}
    assert len(totals) == 1 and calls[-1][0] == calls[-1][1]
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


@pytest.mark.parametrize("shifts", [0, -1, 10_000])
def test_bad_shifts_are_refused(tiny_backend, shifts):
    with pytest.raises(ValueError, match="shifts must be in 1.."):
        Separator(tiny_backend, shifts=shifts)


def test_soften_divides_the_logits():
    m = np.array([0.0, 0.01, 0.2, 0.5, 0.9, 1.0], np.float32)
    assert soften(m, 1.0) is m
    soft = soften(m, 2.0)
    np.testing.assert_array_equal(soft[[0, 3, 5]], [0.0, 0.5, 1.0])
    logit = lambda v: np.log(v / (1 - v))  # noqa: E731
    np.testing.assert_allclose(logit(soft[1:-1]), logit(m[1:-1]) / 2.0, rtol=1e-4)
    sharp = soften(m, 0.5)
    assert np.all(np.abs(soft - 0.5) <= np.abs(m - 0.5)) and np.all(np.abs(sharp - 0.5) >= np.abs(m - 0.5))


def test_the_temperature_comes_from_the_card_or_the_caller(tiny_backend):
    card = tiny_backend.card
    warm = ConstantMask(card.replace(offline={"mask_temperature": 3.0}), 0.8)
    x = tone_mix(RATE, RATE)
    expected = float(soften(np.float32(0.8), 3.0))
    np.testing.assert_allclose(Separator(warm).separate(x, RATE).vocals, expected * x, atol=1e-5)
    np.testing.assert_allclose(Separator(warm, temperature=1.0).separate(x, RATE).vocals, 0.8 * x, atol=1e-5)
    with pytest.raises(ValueError, match="temperature must be positive"):
        Separator(tiny_backend, temperature=0.0)


def test_cards_refuse_bad_offline_settings(tiny_backend):
    with pytest.raises(CardError, match="unknown offline settings: shifts"):
        tiny_backend.card.replace(offline={"shifts": 4})
    with pytest.raises(CardError, match="offline mask_temperature must be positive"):
        tiny_backend.card.replace(offline={"mask_temperature": -1})
    for bad in (0, -1.2, "1.2", None):  # a live temperature is checked when the card loads, not first at play
        with pytest.raises(CardError, match="live mask_temperature must be positive"):
            tiny_backend.card.replace(live={"mask_temperature": bad})
    assert tiny_backend.card.replace(live={"mask_temperature": 1.2}).live["mask_temperature"] == 1.2
    ctx = tiny_backend.card.context_frames
    for delay in (-1, ctx):
        with pytest.raises(CardError, match=f"mask_delay must be in 0..{ctx - 1}"):
            tiny_backend.card.replace(mask_delay=delay)


def _tones(n: int, rate: int, freqs: tuple[float, ...]) -> np.ndarray:
    t = np.arange(n) / rate
    mono = sum(0.2 * np.sin(2 * np.pi * f * t) for f in freqs)
    return np.stack([mono, 0.5 * mono], axis=1).astype(np.float32)


@pytest.mark.parametrize("shifts", [1, 2])
@pytest.mark.parametrize("value", [1.0, 0.3])
def test_high_band_carries_a_constant_mask_to_the_full_band(tiny_backend, shifts, value):
    """At twice the model's rate a constant mask scales the whole input, above the model's
    band too; without the high band (the default) everything above it stays in the
    accompaniment.  The card's ``offline`` setting switches it like the argument."""
    rate = 2 * RATE
    x = _tones(rate, rate, (440.0, 3000.0, 6000.0))
    sep = Separator(ConstantMask(tiny_backend.card, value), shifts=shifts, high_band=True).separate(x, rate)
    np.testing.assert_allclose(sep.vocals, value * x, atol=1e-4)
    on_card = ConstantMask(tiny_backend.card.replace(offline={"high_band": True}), value)
    np.testing.assert_array_equal(Separator(on_card, shifts=shifts).separate(x, rate).vocals, sep.vocals)
    low_only = Separator(ConstantMask(tiny_backend.card, value), shifts=shifts).separate(x, rate)
    above = _band_rms(x - low_only.vocals, rate, 5000, 7000) / _band_rms(x, rate, 5000, 7000)
    assert above == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("top", [0.0, 1.0])
def test_high_band_follows_the_top_of_the_model_band(tiny_backend, top):
    """The share above the band is the mask's from HIGH_BAND_FROM_HZ up, not below it."""
    rate = 2 * RATE
    x = _tones(rate, rate, (500.0, 3000.0, 6000.0))
    backend = BandMask(tiny_backend.card, HIGH_BAND_FROM_HZ, below=1.0 - top, above=top)
    sep = Separator(backend, high_band=True).separate(x, rate)
    share = _band_rms(sep.vocals, rate, 5000, 7000) / _band_rms(x, rate, 5000, 7000)
    assert share == pytest.approx(top, abs=0.01)
    np.testing.assert_allclose(sep.vocals + sep.accompaniment, x, atol=1e-6)


def _band_rms(audio: np.ndarray, rate: int, lo: float, hi: float) -> float:
    spec = np.fft.rfft(audio[:, 0])
    f = np.fft.rfftfreq(audio.shape[0], 1 / rate)
    return float(np.sqrt(np.sum(np.abs(spec[(f >= lo) & (f < hi)]) ** 2)))


class PointwiseMask:
    """A backend whose mask column t is a function of input column t alone, or with
    ``delay`` D of input column t - D (0 for the first D columns): what a card with
    ``mask_delay`` D promises."""

    name = "pointwise"

    def __init__(self, card, delay: int = 0) -> None:
        self.card, self.delay = card.replace(mask_delay=delay), delay

    def __call__(self, magnitude):
        m = magnitude / (magnitude.max(axis=2, keepdims=True) + 1e-6)
        if self.delay:
            m = np.concatenate([np.zeros_like(m[..., : self.delay]), m[..., : -self.delay]], axis=-1)
        return m.astype(np.float32)


@pytest.mark.parametrize("delay", [1, 3])
def test_a_delayed_mask_is_moved_back_to_its_frame(tiny_backend, delay):
    card = tiny_backend.card
    mag = network_magnitude(stft(tone_mix(RATE, RATE, seed=6), card.n_fft, card.hop, card.window), card)
    for offset in (0, card.context_frames // 2):
        base, base_w = weighted_mask(PointwiseMask(card), mag, offset)
        late, late_w = weighted_mask(PointwiseMask(card, delay), mag, offset)
        assert late.shape == base.shape and late_w.shape == base_w.shape
        # frame f's mask comes from column f + D of a patch; only the first D columns of a
        # patch have no input D frames back, so those frames differ
        f = np.arange(mag.shape[2])
        clean = (f + offset) % card.context_frames < card.context_frames - delay
        np.testing.assert_allclose(late[..., clean] / late_w[clean], base[..., clean] / base_w[clean], atol=1e-6)
        assert not np.allclose(late[..., ~clean], base[..., ~clean])
        # ...and weigh a thousandth, so the other passes decide them
        pos = (f[~clean] + offset + delay) % card.context_frames
        np.testing.assert_allclose(late_w[~clean], 1e-3 * patch_weights(card.context_frames)[pos], rtol=1e-6)
