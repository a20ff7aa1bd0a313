"""Fuzzing the streaming separator: hostile signals, random host block sizes, a model that
returns NaN.  Whatever comes in, nothing raises, the output is finite, and it does not depend
on how the input was chunked."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vocex.realtime.settings import StreamingSettings
from vocex.realtime.stream import StreamingSeparator

from tests.conftest import TINY

RATE = TINY["sample_rate"]
N = 3000
KINDS = ("silence", "dc", "impulses", "noise_0dbfs", "nonfinite", "denormals", "full_scale_square")


def hostile(kind: str, seed: int, n_channels: int) -> np.ndarray:
    """``(N, n_channels)`` float32 test signal of one hostile kind."""
    rng = np.random.default_rng(seed)
    x = np.zeros((N, n_channels), np.float32)
    if kind == "dc":
        x[:] = rng.uniform(-1, 1)
    elif kind == "impulses":
        x[rng.integers(0, N, 12), rng.integers(0, n_channels, 12)] = rng.choice([-1.0, 1.0], 12)
    elif kind == "noise_0dbfs":
        x[:] = rng.uniform(-1, 1, x.shape)
    elif kind == "nonfinite":
        x[:] = 0.5 * rng.standard_normal(x.shape)
        for value in (np.nan, np.inf, -np.inf):
            x[rng.integers(0, N, 5), rng.integers(0, n_channels, 5)] = value
    elif kind == "denormals":
        x[:] = rng.standard_normal(x.shape) * np.float32(1e-41)
    elif kind == "full_scale_square":
        x[:] = np.sign(np.sin(2 * np.pi * 220 * np.arange(N) / RATE))[:, None]
    return x


def run_in_blocks(sep: StreamingSeparator, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    out = np.full_like(x, 7.0)  # every sample must be written
    pos = i = 0
    while pos < len(x):
        b = sizes[i % len(sizes)]
        sep.process_block(x[pos : pos + b], out[pos : pos + b])
        pos, i = pos + b, i + 1
    return out


@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 2**16), n_channels=st.sampled_from([1, 2]),
       sizes=st.lists(st.integers(1, 1500), min_size=1, max_size=8), mode=st.sampled_from(["karaoke", "vocals"]),
       k=st.integers(1, 3), lookahead=st.integers(0, 2))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_hostile_signals_any_chunking(tiny_backend, kind, seed, n_channels, sizes, mode, k, lookahead):
    x = hostile(kind, seed, n_channels)
    before = x.copy()
    s = StreamingSettings(k, lookahead)
    chunked = run_in_blocks(StreamingSeparator(tiny_backend, n_channels, RATE, s, mode, max_block=512), x, sizes)
    whole_sep = StreamingSeparator(tiny_backend, n_channels, RATE, s, mode, max_block=512)
    whole = run_in_blocks(whole_sep, x, [N])
    np.testing.assert_array_equal(x, before, err_msg="the input was modified")
    assert np.isfinite(chunked).all() and np.isfinite(whole).all()
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
    assert whole_sep.nonfinite_samples == int((~np.isfinite(x)).sum())
    if kind in ("silence", "denormals"):
        assert np.abs(whole).max() < 1e-30


class NaNModel:
    """Wraps a backend; every other call returns NaN / Inf instead of a mask."""

    def __init__(self, inner) -> None:
        self.inner, self.card, self.name, self.device = inner, inner.card, "nan", "cpu"
        self.calls = 0

    def __call__(self, magnitude):
        self.calls += 1
        mask = self.inner(magnitude)
        if self.calls % 2:
            mask = mask.copy()
            mask[..., ::2] = np.nan
            mask[..., 1::2] = np.inf
        return mask


def test_nan_from_the_model_never_reaches_the_output(tiny_backend):
    rng = np.random.default_rng(1)
    x = (0.5 * rng.standard_normal((N, 2))).astype(np.float32)
    backend = NaNModel(tiny_backend)
    for mode in ("karaoke", "vocals"):
        sep = StreamingSeparator(backend, 2, RATE, StreamingSettings(1, 0), mode, max_block=512)
        out = run_in_blocks(sep, x, [64])
        assert np.isfinite(out).all()
        # a bad mask is clipped to [0, 1]: the vocal estimate never exceeds the input's level
        assert np.abs(out).max() <= 2 * np.abs(x).max()
    assert backend.calls > 10
