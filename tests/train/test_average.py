"""vocex-average: the mean of several models' weights, refused for models of different shapes."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import make_model
from vocex.model.backends import load_backend, load_unet, resolve_model
from vocex.train.average import main


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    root = tmp_path_factory.mktemp("members")
    return [make_model(root / f"m{i}", seed=i) for i in range(3)]


def test_weights_and_statistics_are_the_mean(members, tmp_path):
    assert main([*map(str, members), "--out", str(tmp_path / "soup")]) == 0
    soup = resolve_model(tmp_path / "soup" / "model.json")
    got = load_unet(soup).state_dict()
    states = [load_unet(resolve_model(m)).state_dict() for m in members]
    for key, value in got.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, sum(s[key] for s in states) / 3)
    assert any("running_var" in k for k in got)  # batch-norm statistics are averaged too
    assert [m["model"] for m in soup.card.training["average_of"]] == [str(m) for m in members]
    # the averaged model runs like any other
    backend = load_backend(soup, "eager", "cpu", threads=1)
    mag = torch.rand(1, 1, soup.card.n_bins, soup.card.context_frames).numpy()
    assert backend(mag).shape == mag.shape


def test_refuses_mismatched_shapes_and_existing_output(members, tmp_path, capsys):
    other = make_model(tmp_path / "wide", base_channels=4)
    assert main([str(members[0]), str(other), "--out", str(tmp_path / "x")]) == 3
    assert "differs from" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main([str(members[0]), "--out", str(tmp_path / "x")]) == 2
    assert main([*map(str, members[:2]), "--out", str(tmp_path / "y")]) == 0
    assert main([*map(str, members[:2]), "--out", str(tmp_path / "y")]) == 4
    assert "already holds a model" in capsys.readouterr().err


def test_an_ensemble_masks_with_the_mean_of_its_members(members, tmp_path):
    import numpy as np

    from vocex.model.export import export

    causal = make_model(tmp_path / "causal", seed=7, causal=True, base_channels=4)
    delayed = make_model(tmp_path / "late", seed=8, causal=True, mask_delay=2)
    parts = [members[0], causal, delayed]
    assert main([*map(str, parts), "--ensemble", "--out", str(tmp_path / "ens")]) == 0
    card = resolve_model(tmp_path / "ens" / "model.json").card
    assert [m["base_channels"] for m in card.members] == [2, 4, 2]
    assert (card.base_channels, card.causal, card.mask_delay) == (4, False, 2)
    assert card.live["lookahead_frames"] == 2  # streams need L >= the largest delay
    exported = resolve_model(export(resolve_model(tmp_path / "ens" / "model.json"), tmp_path / "exp", "ens",
                                    ["onnx", "torchscript"]))
    x = np.random.default_rng(1).random((2, 1, card.n_bins, card.context_frames), dtype=np.float32)
    masks = [load_backend(resolve_model(p), "eager", "cpu")(x) for p in parts]
    # every member's column t belongs to frame t - 2: the undelayed ones move 2 columns later
    aligned = [np.concatenate([np.zeros_like(m[..., :2]), m[..., :-2]], axis=-1) for m in masks[:2]] + [masks[2]]
    want = np.mean(aligned, axis=0)
    for name in ("eager", "onnx", "torchscript"):
        np.testing.assert_allclose(load_backend(exported, name, "cpu")(x), want, atol=1e-5)


def test_an_ensemble_needs_one_front_end_and_flat_members(members, tmp_path, capsys):
    other_rate = make_model(tmp_path / "rate", sample_rate=16000)
    assert main([str(members[0]), str(other_rate), "--ensemble", "--out", str(tmp_path / "x")]) == 3
    assert "differs from" in capsys.readouterr().err
    assert main([*map(str, members[:2]), "--ensemble", "--out", str(tmp_path / "e")]) == 0
    assert main([str(tmp_path / "e" / "model.json"), str(members[2]), "--ensemble", "--out", str(tmp_path / "n")]) == 3
    assert "is an ensemble already" in capsys.readouterr().err
    # averaging weights needs the same network: an ensemble does not average with a plain model
    assert main([str(tmp_path / "e" / "model.json"), str(members[2]), "--out", str(tmp_path / "a")]) == 3
