"""The Python API (vocex.separate / stream / load): shapes, the same results as the command-line
tools, crossfaded changes, bad input, and the README's snippet run as written."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import vocex
from vocex.model.backends import ModelError
from vocex.model.separate import Separator
from vocex.realtime.settings import streaming_settings
from vocex.realtime.stream import FADE_MS, StreamingSeparator

from tests.conftest import TINY, tone_mix

ROOT = Path(__file__).resolve().parents[1]
RATE = TINY["sample_rate"]


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return vocex.load(tiny_model, backend="onnx", accel="cpu", threads=1)


def test_separate_the_acceptance_call_with_the_shipped_model():
    x = tone_mix(2 * 48000, 48000)
    v, a = vocex.separate(x, 48000)
    assert v.shape == a.shape == x.shape and v.dtype == a.dtype == np.float32
    np.testing.assert_allclose(v + a, x, atol=1e-4)
    assert np.abs(v).max() > 0.01 and np.abs(a).max() > 0.01  # it separated something


@pytest.mark.parametrize("rate", [RATE, 22050])
def test_separate_is_the_offline_separator(tiny, rate):
    x = tone_mix(rate, rate, seed=1)
    sep = Separator(tiny.backend).separate(x, rate)
    v, a = vocex.separate(x, rate, tiny)
    np.testing.assert_array_equal(v, sep.vocals)
    np.testing.assert_array_equal(a, sep.accompaniment)
    # a 1-D signal is one channel, and comes back 1-D; float64 is taken too
    v1, a1 = vocex.separate(x[:, 0].astype(np.float64), rate, tiny, shifts=1)
    assert v1.shape == a1.shape == (rate,) and v1.dtype == np.float32
    np.testing.assert_allclose(v1, Separator(tiny.backend, shifts=1).separate(x[:, :1], rate).vocals[:, 0],
                               atol=1e-6)


def test_stream_the_acceptance_call():
    x = tone_mix(48000, 48000)
    s = vocex.stream(sample_rate=48000, channels=2)
    y = s.process(x[:256])
    assert y.shape == (256, 2) and y.dtype == np.float32 and np.isfinite(y).all()
    # the latency vocex-live reports for the same settings: its separator, built as it builds it
    card = s.model.card
    live = StreamingSeparator(s.model.backend, 2, 48000, streaming_settings(card), "karaoke", 1.0, max_block=4096)
    assert s.latency_samples == live.latency_samples > 0


def test_streaming_api_equals_vocex_separate_streaming(tmp_path):
    from vocex.realtime.separate_cli import main

    rate = 48000
    x = tone_mix(int(1.5 * rate), rate, seed=3)
    sf.write(str(tmp_path / "song.wav"), x, rate, subtype="FLOAT")
    assert main([str(tmp_path / "song.wav"), "-o", str(tmp_path / "out"), "--streaming", "--no-progress"]) == 0
    cli, _ = sf.read(str(tmp_path / "out" / "song" / "vocals.wav"), dtype="float32", always_2d=True)
    # the processor, block by block as a host calls it (sizes that vary), then flushed
    s = vocex.stream(sample_rate=rate, channels=2, mode="vocals")
    out, pos = [], 0
    for size in [256, 1, 700, 4096, 8193, 255] * 20:
        if pos >= len(x):
            break
        out.append(s.process(x[pos : pos + size]).copy())
        pos += size
    y = np.concatenate(out + [s.flush()])[s.latency_samples :]
    assert y.shape == cli.shape
    np.testing.assert_allclose(y, cli, atol=1e-5)
    assert np.abs(cli).max() > 0.01
    v, a = vocex.separate(x, rate, streaming=True)
    np.testing.assert_allclose(v, cli, atol=1e-5)
    np.testing.assert_allclose(v + a, x, atol=1e-6)


@pytest.mark.parametrize("sizes", [[1], [64, 65], [128], [8192], [8193], [1, 64, 65, 128, 8192, 8193]])
def test_stream_output_does_not_depend_on_the_block_size(tiny, sizes):
    x = tone_mix(12000, RATE, seed=4)
    whole = vocex.stream(tiny, RATE, 2, mix=0.7).process(x).copy()
    s = vocex.stream(tiny, RATE, 2, mix=0.7, max_block=256)
    got, pos, i = np.zeros_like(x), 0, 0
    while pos < len(x):
        n = sizes[i % len(sizes)]
        s.process(x[pos : pos + n], out=got[pos : pos + n])
        pos, i = pos + n, i + 1
    np.testing.assert_allclose(got, whole, atol=1e-6)


def test_mono_blocks_may_be_one_dimensional(tiny):
    x = tone_mix(5000, RATE, n_channels=1, seed=5)
    a = vocex.stream(tiny, RATE, 1)
    b = vocex.stream(tiny, RATE, 1)
    y2 = np.concatenate([a.process(x[i : i + 300]).copy() for i in range(0, len(x), 300)] + [a.flush()])
    y1 = np.concatenate([b.process(x[i : i + 300, 0]).copy() for i in range(0, len(x), 300)] + [b.flush()])
    assert y1.ndim == 1 and y2.ndim == 2
    np.testing.assert_array_equal(y1, y2[:, 0])


def test_process_reuses_one_buffer_or_writes_into_out(tiny):
    x = tone_mix(3000, RATE)
    s = vocex.stream(tiny, RATE, 2, max_block=1024)
    first = s.process(x[:512])
    second = s.process(x[512:1000])
    assert np.shares_memory(first, second)  # one buffer, no allocation per call
    out = np.empty((700, 2), np.float32)
    assert s.process(x[1000:1700], out=out) is out
    big = s.process(x[:2000])  # larger than any block before: the one allocation
    assert big.shape == (2000, 2) and np.shares_memory(big, s.process(x[:10]))


def _ramp(n: int, start: int, fade: int) -> np.ndarray:
    """Weight of the new gains at each of ``n`` samples, a change made before sample ``start``."""
    return np.clip((np.arange(n) - start + 1) / fade, 0.0, 1.0)[:, None]


@pytest.mark.parametrize("change,before,after", [
    ({"mode": "karaoke"}, (0.0, 1.0), (1.0, -1.0)),  # (dry gain, vocal gain)
    ({"mix": 0.3}, (0.0, 1.0), (0.7, 0.3)),
    ({"bypass": True}, (0.0, 1.0), (1.0, 0.0)),
])
def test_a_change_between_blocks_is_a_linear_crossfade(tiny, change, before, after):
    x = tone_mix(8000, RATE, seed=6)
    n, switch, lat = len(x), 3000, None
    vocals = vocex.stream(tiny, RATE, 2, mode="vocals")
    lat = vocals.latency_samples
    voc = vocals.process(x).copy()
    dry = np.concatenate([np.zeros((lat, 2), np.float32), x])[:n]
    s = vocex.stream(tiny, RATE, 2, mode="vocals")
    y = np.zeros_like(x)
    s.process(x[:switch], out=y[:switch])
    for name, value in change.items():
        setattr(s, name, value)
    s.process(x[switch:], out=y[switch:])
    fade = round(FADE_MS * RATE / 1000)
    w = _ramp(n, switch, fade)
    expect = ((1 - w) * before[0] + w * after[0]) * dry + ((1 - w) * before[1] + w * after[1]) * voc
    np.testing.assert_allclose(y, expect, atol=2e-6)
    assert np.abs(voc[switch : switch + fade]).max() > 0.01  # the fade had something to fade


def test_a_change_during_a_fade_continues_from_where_the_gains_are(tiny):
    """Changes quicker than the fade (keys pressed fast): no jump, and the end is the last one."""
    x = tone_mix(6000, RATE, seed=7)
    s = vocex.stream(tiny, RATE, 2, mode="vocals", fade_ms=20.0)  # 160 samples
    ref = vocex.stream(tiny, RATE, 2, mode="karaoke", mix=0.5)
    y = np.zeros_like(x)
    s.process(x[:2000], out=y[:2000])
    s.mode = "karaoke"
    s.process(x[2000:2050], out=y[2000:2050])  # a third of the way
    s.mix = 0.5
    s.process(x[2050:], out=y[2050:])
    r = ref.process(x).copy()
    np.testing.assert_allclose(y[2050 + 160 :], r[2050 + 160 :], atol=1e-6)
    # y = g_dry * dry + g_voc * voc with |g| <= 1, each gain moving at most 2 / 160 a sample:
    # no step of y is larger than the two signals' own steps plus that slope (a jump would be)
    voc = vocex.stream(tiny, RATE, 2, mode="vocals").process(x)[1990:2300]
    dry = x[1990 - s.latency_samples : 2300 - s.latency_samples]
    bound = sum(np.abs(np.diff(a, axis=0)).max() + 2 * np.abs(a).max() / 160 for a in (voc, dry))
    assert np.abs(np.diff(y[1990:2300], axis=0)).max() <= bound


def test_without_a_fade_the_same_change_clicks(tiny):
    """What the crossfade prevents: a change at once jumps by the difference of the two outputs
    (made where they differ most), far beyond the largest step of the signal itself."""
    t = np.arange(8000)[:, None] / RATE
    x = (0.4 * np.sin(2 * np.pi * 110 * t + [0, 1]) + 0.2 * np.sin(2 * np.pi * 247 * t)).astype(np.float32)
    a = vocex.stream(tiny, RATE, 2, mode="vocals").process(x).copy()
    b = vocex.stream(tiny, RATE, 2, bypass=True).process(x).copy()  # (the tiny model's mask is near 0.5)
    switch = 2500 + int(np.argmax(np.abs(b - a)[2500:3500].max(axis=1)))
    own = max(np.abs(np.diff(c[switch - 500 : switch + 500], axis=0)).max() for c in (a, b))
    jumps = {}
    for fade_ms in (0.0, FADE_MS):
        s = vocex.stream(tiny, RATE, 2, mode="vocals", fade_ms=fade_ms)
        y = np.zeros_like(x)
        s.process(x[:switch], out=y[:switch])
        s.bypass = True
        s.process(x[switch:], out=y[switch:])
        jumps[fade_ms] = np.abs(np.diff(y[switch - 500 : switch + 500], axis=0)).max() / own
    assert jumps[FADE_MS] < 1.5 < jumps[0.0], jumps


def test_reset_and_flush(tiny):
    x = tone_mix(4000, RATE, seed=8)
    s = vocex.stream(tiny, RATE, 2)
    first = s.process(x).copy()
    tail = s.flush()
    assert tail.shape == (s.latency_samples, 2)
    s.process(tone_mix(999, RATE, seed=9))
    s.reset()
    np.testing.assert_array_equal(s.process(x), first)


def test_load_gives_the_model_and_its_card(tiny_model):
    m = vocex.load(tiny_model, backend="onnx")
    assert m.card.sample_rate == RATE and m.sample_rate == RATE and m.name == "tiny"
    assert m.backend.card == m.card and vocex.load(m) is m
    live = vocex.load("live")
    assert live.card.live["hop_batch"] >= 1 and live.files.card_path.name == "live.json"


@pytest.mark.parametrize("call,error,names", [
    (lambda t: vocex.separate([0.0, 0.1], RATE, t), TypeError, "audio"),
    (lambda t: vocex.separate(np.zeros(100, np.int16), RATE, t), TypeError, "audio"),
    (lambda t: vocex.separate(np.zeros((100, 2, 1), np.float32), RATE, t), ValueError, "audio"),
    (lambda t: vocex.separate(np.zeros((0, 2), np.float32), RATE, t), ValueError, "audio"),
    (lambda t: vocex.separate(np.zeros((2, 5000), np.float32), RATE, t), ValueError, "audio"),
    (lambda t: vocex.separate(np.array([0.0, np.nan], np.float32), RATE, t), ValueError, "audio"),
    (lambda t: vocex.separate(np.array([0.0, np.inf]), RATE, t), ValueError, "audio"),
    (lambda t: vocex.separate(np.zeros(100, np.float32), 0, t), ValueError, "sample_rate"),
    (lambda t: vocex.separate(np.zeros(100, np.float32), 44100.5, t), ValueError, "sample_rate"),
    (lambda t: vocex.separate(np.zeros(100, np.float32), "44100", t), ValueError, "sample_rate"),
    (lambda t: vocex.separate(np.zeros(100, np.float32), RATE, "no-such-model"), ModelError, "model"),
    (lambda t: vocex.separate(np.zeros(100, np.float32), RATE, t, shifts=0), ValueError, "shifts"),
    (lambda t: vocex.separate(np.zeros(100, np.float32), RATE, t, streaming=True, shifts=2), ValueError, "shifts"),
    (lambda t: vocex.separate(np.zeros(100, np.float32), RATE, t, hop_batch=2), ValueError, "hop_batch"),
    (lambda t: vocex.stream("no-such-model"), ModelError, "model"),
    (lambda t: vocex.stream(t, -1), ValueError, "sample_rate"),
    (lambda t: vocex.stream(t, RATE, 0), ValueError, "channels"),
    (lambda t: vocex.stream(t, RATE, 2, mix=1.5), ValueError, "mix"),
    (lambda t: vocex.stream(t, RATE, 2, mode="both"), ValueError, "mode"),
    (lambda t: vocex.stream(t, RATE, 2, hop_batch=500), ValueError, "hop_batch"),
    (lambda t: vocex.stream(t, RATE, 2, fade_ms=-1), ValueError, "fade_ms"),
    (lambda t: vocex.stream(t, RATE, 2).process(np.zeros((2, 100), np.float32)), ValueError, "block"),
    (lambda t: vocex.stream(t, RATE, 2).process(np.zeros((100, 2))), TypeError, "block"),
    (lambda t: vocex.stream(t, RATE, 2).process(np.zeros(100, np.float32)), ValueError, "block"),
    (lambda t: vocex.stream(t, RATE, 2).process(np.full((9, 2), np.nan, np.float32)), ValueError, "block"),
    (lambda t: vocex.stream(t, RATE, 2).process(np.zeros((9, 2), np.float32), out=np.zeros((8, 2), np.float32)),
     ValueError, "out"),
    (lambda t: setattr(vocex.stream(t, RATE, 2), "mix", float("nan")), ValueError, "mix"),
    (lambda t: setattr(vocex.stream(t, RATE, 2), "mode", "loud"), ValueError, "mode"),
])
def test_bad_input_raises_naming_the_argument(tiny, call, error, names):
    with pytest.raises(error, match=names):
        call(tiny)


def test_import_is_light_and_torch_stays_out():
    code = ("import sys, vocex; light = not any(m in sys.modules for m in ('torch', 'numba', 'vocex.realtime.stream'));"
            "s = vocex.stream(); print(light, 'torch' in sys.modules, s.latency_samples > 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split() == ["True", "False", "True"], out.stdout + out.stderr


def python_block(markdown: str, heading: str) -> str:
    """The first ```python block after ``heading`` in a Markdown text."""
    start = markdown.index(heading)
    m = re.search(r"```python\n(.*?)```", markdown[start:], re.S)
    assert m, f"no python block after {heading!r}"
    return m.group(1)


def test_the_readme_python_api_snippet_runs(tmp_path, monkeypatch):
    code = python_block((ROOT / "README.md").read_text(), "## Python API")
    rate = 44100  # not the live model's rate: the stream resamples both ways
    song = tone_mix(int(1.5 * rate), rate, seed=11)
    sf.write(str(tmp_path / "song.wav"), song, rate, subtype="FLOAT")
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    assert ns["vocals"].shape == ns["accompaniment"].shape == song.shape
    np.testing.assert_allclose(ns["vocals"] + ns["accompaniment"], song, atol=1e-4)
    live = ns["live"]
    assert (live.mode, live.mix) == ("vocals", 0.8) and ns["tail"].shape == (live.latency_samples, 2)
    assert np.isfinite(ns["out"]).all()
