"""The live path's newest-columns graph: the same mask columns as the whole network, from
less compute (UNet.newest, vocex-export --newest-columns, the backends and the stream)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import make_model, randomised, tone_mix

torch = pytest.importorskip("torch")

from vocex.model.backends import load_backend, newest_columns, resolve_model  # noqa: E402
from vocex.model.export import main as export_main  # noqa: E402
from vocex.model.unet import UNet, UNetEnsemble  # noqa: E402
from vocex.realtime.settings import StreamingSettings  # noqa: E402
from vocex.realtime.stream import separate_streaming  # noqa: E402


NETS = {
    "symmetric": lambda: randomised(UNet(2), 1),
    "causal": lambda: randomised(UNet(2, causal=True), 2),
    "ensemble": lambda: UNetEnsemble([randomised(UNet(2), 3), randomised(UNet(2, causal=True), 4)], [0, 1]),
}


@pytest.mark.parametrize("kind", list(NETS))
def test_newest_columns_equal_the_whole_forward(kind):
    net = NETS[kind]()
    x = torch.rand(2, 1, 64, 128, generator=torch.Generator().manual_seed(0)) ** 2
    with torch.no_grad():
        full = net(x)
        for n in (1, 2, 3, 4, 5, 7, 8, 9, 16, 31, 63, 64, 100, 127, 128):
            part = net.newest(x, n)
            assert part.shape == (2, 1, 64, n)
            np.testing.assert_allclose(part.numpy(), full[..., 128 - n:].numpy(), rtol=0, atol=1e-6)


def test_newest_columns_compute_less_of_the_decoder():
    """Every decoder layer's transposed convolution sees only a few columns of its input."""
    net, seen = randomised(UNet(2), 5), []
    hooks = [layer[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[-1])) for layer in net.decoder]
    with torch.no_grad():
        net.newest(torch.rand(1, 1, 64, 128), 8)
    for h in hooks:
        h.remove()
    assert seen == [2, 4, 5, 5, 5, 6]  # ceil(owed / 2) + 2 of 2, 4, 8, 16, 32, 64 in the whole window


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    """The same random weights exported twice: with and without the newest-8 graph."""
    folder = tmp_path_factory.mktemp("newest")
    return {kind: (make_model(folder / f"{kind}-full", seed=7, **kw), make_model(folder / f"{kind}-new", seed=7, newest=8, **kw))
            for kind, kw in (("symmetric", {}), ("causal", {"causal": True, "mask_delay": 1}))}


def test_export_writes_the_newest_graph_and_the_onnx_backend_uses_it(paired):
    full_card, new_card = paired["symmetric"]
    files = resolve_model(new_card)
    assert files.card.files["onnx_newest"] == "tiny.newest.onnx" and files.path("onnx_newest").is_file()
    assert "onnx_newest" not in resolve_model(full_card).card.files
    backend = load_backend(files, "onnx", "cpu", threads=1)
    assert backend.newest_frames == 8
    x = np.random.default_rng(1).random((2, 1, 64, 64), dtype=np.float32)
    whole = backend(x)
    for n in (1, 4, 8, 9, 20):  # 9 and 20: more than the graph has, so the whole network
        np.testing.assert_allclose(newest_columns(backend, x, n), whole[..., 64 - n:], rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind, hop_batch, lookahead", [("symmetric", 4, 0), ("symmetric", 2, 3), ("symmetric", 1, 0),
                                                         ("symmetric", 8, 2), ("causal", 4, 1), ("causal", 2, 3)])
def test_the_stream_with_the_newest_graph_equals_the_stream_without(paired, kind, hop_batch, lookahead):
    """(8, 2) needs 10 columns, more than the graph's 8: the stream falls back to the whole network."""
    audio = tone_mix(8000, 8000, n_channels=2, seed=3)
    settings = StreamingSettings(hop_batch=hop_batch, lookahead_frames=lookahead)
    backends = [load_backend(resolve_model(card), "onnx", "cpu", threads=1) for card in paired[kind]]
    calls = []
    run = backends[1].newest_session.run
    backends[1].newest_session.run = lambda *a, **k: calls.append(1) or run(*a, **k)
    out = [separate_streaming(b, audio, 8000, settings, block_size=333) for b in backends]
    assert np.abs(out[0]).max() > 1e-3
    np.testing.assert_allclose(out[1], out[0], rtol=0, atol=1e-5)
    fits = hop_batch + lookahead - resolve_model(paired[kind][1]).card.mask_delay <= 8
    assert bool(calls) == fits  # the newest graph ran exactly when it has the columns the stream needs


def test_export_refuses_a_newest_count_outside_the_window(paired, tmp_path, capsys):
    card = paired["symmetric"][0]
    assert export_main([str(card), "-o", str(tmp_path / "a"), "--newest-columns", "64"]) == 3
    assert "context frames" in capsys.readouterr().err.strip().splitlines()[-1]
    with pytest.raises(SystemExit) as exc:
        export_main([str(card), "-o", str(tmp_path / "b"), "--newest-columns", "-1"])
    assert exc.value.code == 2
