"""Offline separation: the shift trick (passes at delayed STFT frames, averaged)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import tone_mix
from vocex.model.audio import resample
from vocex.model.dsp import istft, stft
from vocex.model.separate import Separator, apply_mask, estimate_mask, network_magnitude

RATE = 8000


class ConstantMask:
    """A backend whose mask is ``value`` everywhere (card borrowed from the tiny model)."""

    name = "constant"

    def __init__(self, card, value: float) -> None:
        self.card, self.value = card, value

    def __call__(self, magnitude):
        return np.full_like(magnitude, self.value)


def test_one_shift_is_the_plain_pipeline(tiny_backend):
    x = tone_mix(RATE, RATE)
    card = tiny_backend.card
    spec = stft(x, card.n_fft, card.hop, card.window)
    mask = estimate_mask(tiny_backend, network_magnitude(spec, card))
    expected = apply_mask(spec, mask, card, x.shape[0])
    sep = Separator(tiny_backend, shifts=1).separate(x, RATE)
    np.testing.assert_allclose(sep.vocals, expected, atol=1e-6)
    np.testing.assert_array_equal(sep.mask, mask)


@pytest.mark.parametrize("shifts", [2, 3, 4])
@pytest.mark.parametrize("value", [1.0, 0.25])
def test_shifted_passes_are_realigned(tiny_backend, shifts, value):
    """A constant mask scales the input: any misalignment of a delayed pass would show."""
    x = tone_mix(RATE + 77, RATE)
    sep = Separator(ConstantMask(tiny_backend.card, value), shifts=shifts).separate(x, RATE)
    np.testing.assert_allclose(sep.vocals, value * x, atol=1e-5)
    np.testing.assert_allclose(sep.vocals + sep.accompaniment, x, atol=1e-6)


def test_shifts_average_passes_at_delayed_frames(tiny_backend):
    x = tone_mix(RATE, RATE, seed=3)
    card = tiny_backend.card
    passes = []
    for delay in (0, card.hop // 2):
        shifted = np.concatenate([np.zeros((delay, 2), np.float32), x])
        spec = stft(shifted, card.n_fft, card.hop, card.window)
        mask = estimate_mask(tiny_backend, network_magnitude(spec, card))
        passes.append(istft(spec * np.concatenate([mask, mask[:, -1:]], axis=1), shifted.shape[0],
                            card.n_fft, card.hop, card.window)[delay:])
    two = Separator(tiny_backend, shifts=2).separate(x, RATE).vocals
    np.testing.assert_allclose(two, resample((passes[0] + passes[1]) / 2, card.sample_rate, RATE), atol=1e-5)
    assert np.abs(passes[0] - passes[1]).max() > 1e-3  # the delayed pass really differs


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
