import json
import shutil

import numpy as np
import pytest

from vocex.model.backends import ModelError, default_model_path, installed_backends, load_backend, resolve_model
from vocex.model.card import ModelCard


def _agree(files, magnitude):
    outputs = {name: load_backend(files, name, "cpu", threads=1)(magnitude) for name in installed_backends()}
    assert set(outputs) >= {"onnx"}
    ref = outputs.pop("onnx")
    assert ref.shape == magnitude.shape and 0 <= ref.min() and ref.max() <= 1
    for name, out in outputs.items():
        np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0, err_msg=name)
    return ref


def test_all_backends_agree_on_tiny_model(tiny_model):
    files = resolve_model(tiny_model)
    mag = np.random.default_rng(1).random((3, 1, 64, 64), dtype=np.float32) ** 3
    mask = _agree(files, mag)
    assert mask.std() > 1e-3  # a real, input-dependent mask


@pytest.mark.parametrize("name", ["default", "live", "live-window", "live-ensemble", "live-low-delay"])
def test_all_backends_agree_on_shipped_model(name):
    files = resolve_model(name)
    card = files.card
    mag = np.abs(np.random.default_rng(2).standard_normal((2, 1, card.n_bins, card.context_frames))).astype(np.float32)
    _agree(files, mag)


@pytest.mark.gpu
def test_cuda_backends_agree_with_cpu(tiny_model):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    files = resolve_model(tiny_model)
    mag = np.random.default_rng(3).random((2, 1, 64, 64), dtype=np.float32)
    ref = load_backend(files, "eager", "cpu")(mag)
    for name in ("torchscript", "eager"):
        np.testing.assert_allclose(load_backend(files, name, "cuda")(mag), ref, atol=1e-4)


def test_shipped_model_card_is_complete():
    card = ModelCard.load(default_model_path())
    assert card.files == {"onnx": "default.onnx"}  # a package ships graphs, no training checkpoints
    assert card.scores["validation-musdb"]["median"]["vocals"]["SDR"] > 0
    assert set(card.scores["validation-set"]["parts"]) == {"musdb", "mir1k", "solo"}
    # every trained member, however deep the averages of averages go, names its data: no test songs
    members, trained = list(card.training["average_of"]), 0
    while members:
        member = members.pop()
        if "average_of" in member:
            members += member["average_of"]
        else:
            assert "test" not in json.dumps(member["data"]).lower()
            trained += 1
    assert trained >= 3
    assert card.training["held_out"]["mir1k_singers"] and card.training["licences"]


def test_paper_card_is_the_default_network_without_the_high_band():
    from vocex.model.separate import Separator

    default, paper = resolve_model("default"), resolve_model("paper")
    assert paper.card.files == default.card.files  # the same graph, no second copy
    assert (default.card.offline["high_band"], paper.card.offline["high_band"]) == (True, False)
    assert paper.card.offline["mask_temperature"] == default.card.offline["mask_temperature"]
    assert not Separator(load_backend(paper, "onnx", "cpu", threads=1)).high_band


def test_low_delay_card_is_the_window_network_with_a_short_synthesis_window():
    from vocex.model.dsp import analysis_window, synthesis_support
    from vocex.realtime.settings import streaming_settings

    live, low = resolve_model("live-window"), resolve_model("live-low-delay")
    assert low.card.files == live.card.files  # the same weights files, no second copy
    assert (low.card.window, live.card.window) == ("sqrt_hann_low_delay", "sqrt_hann")
    fe = (live.card.n_fft, live.card.hop)
    np.testing.assert_array_equal(analysis_window(*fe, low.card.window), analysis_window(*fe, live.card.window))
    assert synthesis_support(*fe, low.card.window) == 2 * live.card.hop
    settings = streaming_settings(low.card)
    assert settings.model_latency(low.card) == 2 * 256 - 1 + (settings.hop_batch - 1) * 256


def test_resolve_by_weights_file_and_folder(tiny_model):
    assert resolve_model(tiny_model.with_suffix(".onnx")).card_path == tiny_model
    assert resolve_model(tiny_model.parent).card_path == tiny_model


def test_resolve_a_shipped_model_by_name(tmp_path, monkeypatch):
    from vocex.model.backends import default_model_path, shipped_models

    assert {"default", "paper", "live", "live-window", "live-ensemble", "live-low-delay"} <= set(shipped_models())
    for name in shipped_models():
        assert resolve_model(name).card_path == default_model_path().with_name(f"{name}.json")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "live").mkdir()  # a path that exists wins over a shipped name
    with pytest.raises(ModelError, match="expected one model card"):
        resolve_model("live")
    with pytest.raises(ModelError, match="no such model"):
        resolve_model("not-a-model")


def _copy(tiny_model, tmp_path):
    dest = tmp_path / "m"
    shutil.copytree(tiny_model.parent, dest, ignore=shutil.ignore_patterns("raw"))
    return dest / tiny_model.name


def test_missing_model(tmp_path):
    with pytest.raises(ModelError, match="no such model"):
        resolve_model(tmp_path / "nope.json")


def test_card_listing_missing_file(tiny_model, tmp_path):
    card = _copy(tiny_model, tmp_path)
    card.with_suffix(".onnx").unlink()
    with pytest.raises(ModelError, match="onnx file .* is missing"):
        resolve_model(card)


def test_truncated_onnx_and_checkpoint(tiny_model, tmp_path):
    card = _copy(tiny_model, tmp_path)
    for suffix, backend in ((".onnx", "onnx"), (".pt", "eager")):
        path = card.with_suffix(suffix)
        path.write_bytes(path.read_bytes()[:1000])
        with pytest.raises(ModelError, match="not a loadable ONNX model|not the weights of this card's U-Net"):
            load_backend(resolve_model(card), backend, "cpu")


@pytest.mark.parametrize("edit,match", [
    (lambda d: d.update(context_frames=128), "does not match its card"),
    (lambda d: d.update(n_bins=128), "exceeds"),
    (lambda d: d.update(bogus=1), "unknown fields"),
    (lambda d: d.pop("hop"), "incomplete"),
    (lambda d: d.update(n_bins=100), "multiples of 64"),
    (lambda d: d.update(channels="stereo"), "channels must be one of"),
])
def test_mismatched_or_broken_card(tiny_model, tmp_path, edit, match):
    card = _copy(tiny_model, tmp_path)
    data = json.loads(card.read_text())
    edit(data)
    card.write_text(json.dumps(data))
    with pytest.raises(ModelError, match=match):
        load_backend(resolve_model(card), "onnx", "cpu")


def test_unreadable_card(tiny_model, tmp_path):
    card = _copy(tiny_model, tmp_path)
    card.write_text("{not json")
    with pytest.raises(ModelError, match="unreadable"):
        resolve_model(card)


@pytest.mark.parametrize("name", ["live-window", "live-ensemble", "live-low-delay"])
def test_shipped_live_models_have_a_newest_columns_graph_equal_to_the_whole(name):
    """The live path runs NAME.newest.onnx (vocex-export --newest-columns 8): it must give the
    whole graph's newest columns for every K + L up to 8 of the card's live defaults."""
    from vocex.model.backends import newest_columns

    files = resolve_model(name)
    card = files.card
    backend = load_backend(files, "onnx", "cpu", threads=1)
    need = card.live["hop_batch"] + card.live["lookahead_frames"] - card.mask_delay
    assert files.path("onnx_newest").is_file() and need <= backend.newest_frames == 8
    mag = np.abs(np.random.default_rng(4).standard_normal((1, 1, card.n_bins, card.context_frames))).astype(np.float32)
    whole = backend(mag)
    for n in (1, need, 8):
        np.testing.assert_allclose(newest_columns(backend, mag, n), whole[..., card.context_frames - n:],
                                   atol=1e-5, rtol=0)
