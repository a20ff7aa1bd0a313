"""Weights kept once in ONNX: shared external data, and the state dict read back from a graph."""

import shutil

import numpy as np
import pytest

from tests.conftest import make_model
from vocex.model.backends import load_unet, resolve_model
from vocex.model.weightsio import share_weights, state_dict_from_onnx

torch = pytest.importorskip("torch")


def _onnx_mask(path, magnitude):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: magnitude})[0]


@pytest.mark.parametrize("causal", [False, True])
def test_state_dict_read_back_from_a_folded_graph_computes_the_same_mask(tmp_path, causal):
    from vocex.model.unet import UNet

    files = resolve_model(make_model(tmp_path / "m", causal=causal, newest=8))
    reference = load_unet(files)  # from the checkpoint
    model = UNet(files.card.base_channels, causal=causal)
    model.load_state_dict(state_dict_from_onnx(files.path("onnx"), model.state_dict()))
    model.eval()
    mag = np.random.default_rng(0).random((2, 1, 64, 64), dtype=np.float32) ** 2
    with torch.no_grad():
        ours, theirs = model(torch.from_numpy(mag)).numpy(), reference(torch.from_numpy(mag)).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    np.testing.assert_allclose(ours, _onnx_mask(files.path("onnx"), mag), atol=1e-5)


def test_a_graph_that_lacks_parameters_is_refused(tmp_path):
    from vocex.model.unet import UNet

    files = resolve_model(make_model(tmp_path / "m"))
    wider = UNet(files.card.base_channels * 2)
    with pytest.raises(ValueError, match="does not hold"):
        state_dict_from_onnx(files.path("onnx"), wider.state_dict())


def test_graphs_share_one_weights_file_and_compute_what_they_did(tmp_path):
    from vocex.model.export import export_onnx

    files = resolve_model(make_model(tmp_path / "m"))
    model = load_unet(files)
    whole, newest = tmp_path / "g" / "tiny.onnx", tmp_path / "g" / "tiny.newest.onnx"
    whole.parent.mkdir()
    export_onnx(model, files.card, whole)
    export_onnx(model, files.card, newest, 8)
    mag = np.random.default_rng(1).random((1, 1, 64, 64), dtype=np.float32)
    before = [_onnx_mask(g, mag) for g in (whole, newest)]
    sizes = {g: g.stat().st_size for g in (whole, newest)}
    weights = whole.with_name("tiny.weights")
    share_weights([whole, newest], weights)
    after = [_onnx_mask(g, mag) for g in (whole, newest)]
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)
    # the parameters are stored once: the file is about one graph's worth, the graphs are small
    assert weights.stat().st_size < 1.1 * max(sizes.values())
    assert all(g.stat().st_size < sizes[g] / 2 for g in (whole, newest))
    moved = tmp_path / "moved"  # the graphs find their weights beside them wherever the folder goes
    shutil.copytree(whole.parent, moved)
    np.testing.assert_array_equal(_onnx_mask(moved / whole.name, mag), before[0])


def test_half_storage_keeps_exact_tensors_in_float16_and_the_rest_in_float32(tmp_path):
    """Tensors that float16 holds exactly go to float16 (read through a Cast that ONNX Runtime
    folds); the others stay float32; the graph computes exactly what it did."""
    import onnx

    from vocex.model.export import export_onnx, round_to_half

    files = resolve_model(make_model(tmp_path / "m"))
    model = load_unet(files)
    round_to_half(model)
    with torch.no_grad():
        model.decoder[0][0].weight[0, 0, 0, 0] += 1e-4  # one weight float16 cannot hold
    graph = tmp_path / "g" / "tiny.onnx"
    graph.parent.mkdir()
    export_onnx(model, files.card, graph, fold_batch_norm=False)
    mag = np.random.default_rng(2).random((2, 1, 64, 64), dtype=np.float32)
    before = _onnx_mask(graph, mag)
    share_weights([graph], graph.with_name("tiny.weights"), half=True)
    np.testing.assert_array_equal(_onnx_mask(graph, mag), before)
    stored = {t.name: t.data_type for t in onnx.load(str(graph), load_external_data=False).graph.initializer}
    assert stored["decoder.0.0.weight"] == onnx.TensorProto.FLOAT  # inexact: kept
    assert stored["encoder.5.0.weight.f16"] == onnx.TensorProto.FLOAT16
    # the state dict reads the float16 tensors back through their casts
    from vocex.model.unet import UNet

    back = UNet(files.card.base_channels)
    back.load_state_dict(state_dict_from_onnx(graph, back.state_dict()))
    for name, value in back.state_dict().items():
        assert torch.equal(value.float(), model.state_dict()[name].float()), name


def test_export_half_halves_the_weights_and_eager_torch_reads_them(tmp_path):
    from vocex.model.export import export

    src = resolve_model(make_model(tmp_path / "m", causal=True))
    full = resolve_model(export(src, tmp_path / "full", "t", ["onnx"], stateful=True, checkpoint=False))
    half = resolve_model(export(src, tmp_path / "half", "t", ["onnx"], stateful=True, half=True))
    assert "checkpoint" not in half.card.files and half.card.files["weights"] == "t.weights"
    full_bytes = full.path("onnx").stat().st_size + (full.path("onnx_stateful") / "weights").stat().st_size
    half_bytes = half.path("weights").stat().st_size + (half.path("onnx_stateful") / "weights").stat().st_size
    assert half_bytes < 0.6 * full_bytes
    mag = np.random.default_rng(3).random((2, 1, 64, 64), dtype=np.float32) ** 2
    from vocex.model.backends import load_backend

    onnx_mask = load_backend(half, "onnx", "cpu", threads=1)(mag)
    eager_mask = load_backend(half, "eager", "cpu", threads=1)(mag)
    np.testing.assert_allclose(onnx_mask, eager_mask, atol=1e-5)
    # the rounding moves the masks by about float16's precision, no more
    np.testing.assert_allclose(onnx_mask, load_backend(full, "onnx", "cpu", threads=1)(mag), atol=5e-3)
    streams = [load_backend(half, name, "cpu", threads=1).open_stream(1, 1) for name in ("onnx", "eager")]
    for column in np.random.default_rng(4).random((70, 1, 1, 64, 1), dtype=np.float32):
        a, b = (s.step(column) for s in streams)
        np.testing.assert_allclose(a, b, atol=1e-5)
