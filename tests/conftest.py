"""Shared fixtures: a tiny random-weight model (ONNX, TorchScript, checkpoint) and test audio."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MUSDB_MINI = SHARED_DATA / "musdb18hq-mini"

TINY = dict(sample_rate=8000, n_fft=128, hop=32, n_bins=64, context_frames=64, base_channels=2)


def needs_shared_data() -> pytest.MarkDecorator:
    return pytest.mark.skipif(not MUSDB_MINI.is_dir(), reason=f"real data not found at {MUSDB_MINI}")


def make_model(folder: Path, name: str = "tiny", seed: int = 0, newest: int = 0, **overrides) -> Path:
    """Write a random-weight model (checkpoint, ONNX, TorchScript, card; with ``newest`` N
    also the ONNX graph of the newest N mask columns); returns the card."""
    import torch

    from vocex.model.backends import resolve_model
    from vocex.model.card import ModelCard
    from vocex.model.dsp import default_window
    from vocex.model.export import export
    from vocex.model.unet import UNet

    spec = {**TINY, **overrides}
    torch.manual_seed(seed)
    model = UNet(spec["base_channels"], causal=spec.get("causal", False))
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / "raw"
    raw.mkdir(exist_ok=True)
    torch.save(model.state_dict(), raw / "model.pt")
    window = spec.pop("window", None) or default_window(spec["n_fft"], spec["hop"])
    card = ModelCard(name=name, window=window, files={"checkpoint": "model.pt"}, **spec)
    card.save(raw / "model.json")
    return export(resolve_model(raw / "model.json"), folder, name, ["onnx", "torchscript"], newest=newest)


def randomised(net, seed: int):  # torch.nn.Module -> the same module, in eval mode
    """``net`` with seeded random weights and non-trivial batch-norm statistics."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
    return net.eval()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_backend(tiny_model):
    from vocex.model.backends import load_backend, resolve_model

    return load_backend(resolve_model(tiny_model), "onnx", "cpu", threads=1)


def tone_mix(n_samples: int, sample_rate: int, n_channels: int = 2, seed: int = 0) -> np.ndarray:
    """A deterministic test signal: a gliding 'voice' tone over chords and noise, (n, ch) float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / sample_rate
    voice = 0.3 * np.sin(2 * np.pi * (220 + 80 * np.sin(2 * np.pi * 0.5 * t)) * t)
    chords = sum(0.1 * np.sin(2 * np.pi * f * t) for f in (110, 165, 330))
    out = np.stack([voice + chords + 0.02 * rng.standard_normal(n_samples) for _ in range(n_channels)], axis=1)
    return out.astype(np.float32)


@pytest.fixture(autouse=True, scope="session")
def _quiet_threads():
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    yield
