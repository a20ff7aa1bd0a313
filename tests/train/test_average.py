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
