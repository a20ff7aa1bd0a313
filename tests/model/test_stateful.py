"""The stateful streaming form of the causal U-Net: streamed masks equal the causal network
run offline over the whole signal (vocex.model.stateful), in eager torch and ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import make_model, randomised

torch = pytest.importorskip("torch")

from vocex.model.backends import (ModelError, load_backend, resolve_model, stateful_graph,  # noqa: E402
                                  stateful_graphs, stateful_state_names, step_depth)
from vocex.model.card import CardError, ModelCard  # noqa: E402
from vocex.model.export import export, main as export_main  # noqa: E402
from vocex.model.stateful import StatefulUNet  # noqa: E402
from vocex.model.unet import UNet, sliding_peak_normalise  # noqa: E402

N_BINS = 64


def _random_causal(seed: int, base: int = 2) -> UNet:
    return randomised(UNet(base, causal=True), seed)


def _magnitude(batch: int, n_frames: int, seed: int) -> torch.Tensor:
    """Columns of varied level (so the sliding peak changes along the signal)."""
    gen = torch.Generator().manual_seed(seed)
    level = torch.exp(2 * torch.randn(1, 1, 1, n_frames, generator=gen))
    return torch.rand(batch, 1, N_BINS, n_frames, generator=gen) ** 3 * level


def _stream(net: StatefulUNet, x: torch.Tensor, k: int, states=None) -> tuple[torch.Tensor, list]:
    """Step ``x`` through the stateful net ``k`` columns at a time (the tail that does not fill
    a step is left out)."""
    states = list(net.initial_states(x.shape[0])) if states is None else states
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[-1] - k + 1, k):
            mask, *states = net.step(x[..., i : i + k], *states)
            out.append(mask)
    return torch.cat(out, dim=-1), states


def test_sliding_peak_normalise_divides_each_column_by_its_recent_peak():
    x = _magnitude(2, 50, 0)
    frames = 7
    got = sliding_peak_normalise(x, frames).numpy()
    col = x.numpy().max(axis=(1, 2))  # (batch, n_frames)
    for t in range(50):
        peak = col[:, max(0, t - frames + 1) : t + 1].max(axis=1)
        np.testing.assert_allclose(got[..., t], x.numpy()[..., t] / (peak[:, None, None] + 1e-8), rtol=1e-6)


def test_the_offline_reference_is_the_causal_unet_when_the_peak_is_global():
    """With the signal's peak in its first column and a span over the whole signal, every
    column's divisor is the patch peak of UNet.forward: the reference is that network."""
    unet = _random_causal(1)
    x = _magnitude(2, 128, 1)
    x[..., 0] = 2 * x.amax(dim=(1, 2, 3), keepdim=True)[..., 0]
    with torch.no_grad():
        ref = StatefulUNet(unet, N_BINS, 128).offline(x)
        np.testing.assert_allclose(ref.numpy(), unet(x).numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 4, 8, 16, 64])
@pytest.mark.parametrize("batch, n_frames, peak_frames", [(1, 157, 128), (2, 203, 40), (2, 71, 1)])
def test_streamed_masks_equal_the_offline_causal_network(k, batch, n_frames, peak_frames):
    net = StatefulUNet(_random_causal(2), N_BINS, peak_frames)
    x = _magnitude(batch, n_frames, 2)
    with torch.no_grad():
        ref = net.offline(x)
    got, _ = _stream(net, x, k)
    n = got.shape[-1]
    assert n == n_frames // k * k
    np.testing.assert_allclose(got.numpy(), ref[..., :n].numpy(), rtol=0, atol=1e-4)
    assert ref.std() > 1e-3  # an input-dependent mask


@pytest.mark.parametrize("k, start", [(1, 5), (2, 37), (4, 100)])
def test_a_stream_restarted_from_initial_states_equals_the_network_on_the_rest(k, start):
    """A stream started later (or reset) is the offline network over the signal from there."""
    net = StatefulUNet(_random_causal(3), N_BINS, 64)
    x = _magnitude(2, 230, 3)
    _, used = _stream(net, _magnitude(2, 90, 4), k)  # some other signal first
    assert any(s.abs().max() > 0 for s in used[1:])
    got, _ = _stream(net, x[..., start:], k)  # after a reset
    with torch.no_grad():
        ref = net.offline(x[..., start:])
    np.testing.assert_allclose(got.numpy(), ref[..., : got.shape[-1]].numpy(), rtol=0, atol=1e-4)


def test_each_step_computes_only_its_share_of_the_new_columns():
    """At K = 1 the 64 steps of a period compute together what the offline network computes
    for 64 frames (nothing twice; the transposed convolutions run as convolutions with one
    zero tap in six, 1.2 times their work), and no step more than 8 % of it: a level's kept
    taps are summed at an earlier step than the one its column is due at, and the top two
    levels' at odd steps, so the deepest step (every level) does little more than the taps of
    its new columns.  Computing every level's column whole there would be about 0.29 of the
    period at this width, leaving the top levels' sums on the depth 4 and 5 steps 0.107."""
    from torch.utils.flop_counter import FlopCounterMode

    net = StatefulUNet(_random_causal(4), N_BINS, 64)
    states = list(net.initial_states(1))
    flops = []
    with torch.no_grad():
        for t in range(128):
            with FlopCounterMode(display=False) as counter:
                _, *states = net.step(_magnitude(1, 1, t), *states)
            flops.append(counter.get_total_flops())
        with FlopCounterMode(display=False) as counter:
            net.unet.forward_scaled(_magnitude(1, 64, 5))
    period = flops[64:]  # a period after the stream's start
    assert counter.get_total_flops() <= sum(period) <= 1.2 * counter.get_total_flops()
    assert max(period) <= 0.08 * sum(period)
    assert [step_depth(t) for t in (0, 1, 2, 3, 4, 8, 12, 32, 64, 96)] == [6, 0, 1, 0, 2, 3, 2, 5, 6, 5]


def test_step_refuses_a_step_size_it_cannot_take():
    net = StatefulUNet(_random_causal(5), N_BINS, 64)
    states = net.initial_states(1)
    with pytest.raises(ValueError, match="power of two"):
        net.step(torch.zeros(1, 1, N_BINS, 3), *states)
    _, *states = net.step(torch.zeros(1, 1, N_BINS, 1), *states)  # now at t = 1
    with pytest.raises(ValueError, match="divides"):
        net.step(torch.zeros(1, 1, N_BINS, 2), *states)
    with pytest.raises(ValueError, match="causal"):
        StatefulUNet(UNet(2), N_BINS, 64)


@pytest.fixture(scope="module")
def stateful_card(tmp_path_factory):
    """A tiny causal model exported with its stateful graphs (mask delay 1)."""
    folder = tmp_path_factory.mktemp("stateful")
    card = make_model(folder / "plain", seed=11, causal=True, mask_delay=1)
    return export(resolve_model(card), folder / "out", "tiny", ["onnx"], stateful=True, peak_frames=48)


def test_export_writes_the_stateful_graph_and_marks_the_card(stateful_card):
    files = resolve_model(stateful_card)
    assert files.card.streaming == "stateful" and files.card.peak_frames == 48
    folder = files.path("onnx_stateful")
    assert files.card.files["onnx_stateful"] == "tiny.stateful" and folder.is_dir()
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{s}.onnx" for s in stateful_graphs()] + ["weights"])
    assert {f"step{d}" for d in range(7)} <= set(stateful_graphs())
    backend = load_backend(files, "onnx", "cpu", threads=2)
    # a step is too small for a second thread: the step graphs run on one whatever --threads says
    assert {s.get_session_options().intra_op_num_threads for s in backend.stateful_sessions.values()} == {1}
    assert backend.session.get_session_options().intra_op_num_threads == 2
    # each graph returns the states it changes, no more: the lightest step leaves the top levels alone
    outputs = {stem: [o.name for o in s.get_outputs()] for stem, s in backend.stateful_sessions.items()}
    for names in outputs.values():
        assert names[0] == "mask" and set(names[1:]) <= {f"{s}_out" for s in stateful_state_names()}
    assert {n for names in outputs.values() for n in names[1:]} == {f"{s}_out" for s in stateful_state_names()}
    assert "dec6_out" in outputs["step6"] and "dec6_out" not in outputs["step0"]
    # the weights are stored once: the steps' graphs hold none, the shared file about the network's
    net_bytes = sum(p.numel() * 4 for p in load_backend(files, "eager", "cpu").module.parameters())
    assert max(p.stat().st_size for p in folder.glob("*.onnx")) < net_bytes / 4
    assert (folder / "weights").stat().st_size < 4 * net_bytes


@pytest.mark.parametrize("k", [1, 2, 3, 4, 8, 16])
@pytest.mark.parametrize("n_items", [1, 2])
def test_onnx_and_eager_stateful_streams_agree_with_the_reference(stateful_card, k, n_items):
    """ONNX Runtime (a graph per step depth, preallocated states swapped through two
    IOBindings) and eager torch give the offline reference; K = 3 runs as steps of 1 in
    eager torch too."""
    files = resolve_model(stateful_card)
    onnx_stream = load_backend(files, "onnx", "cpu", threads=1).open_stream(n_items, k)
    eager_stream = load_backend(files, "eager", "cpu", threads=1).open_stream(n_items, k)
    assert onnx_stream.step_size == 1
    x = _magnitude(n_items, 150, 6).numpy()
    net = StatefulUNet(load_backend(files, "eager", "cpu").module, N_BINS, 48)
    with torch.no_grad():
        ref = net.offline(torch.from_numpy(x)).numpy()
    for attempt in range(2):  # the second after reset()
        got = {"onnx": [], "eager": []}
        buffers = set()
        for i in range(0, 150 - k + 1, k):
            cols = np.ascontiguousarray(x[..., i : i + k])
            for name, stream in (("onnx", onnx_stream), ("eager", eager_stream)):
                out = stream.step(cols)
                got[name].append(out.copy())
                buffers.add((name, id(out)))
        assert len(buffers) == 2  # each stream hands back its one preallocated mask buffer
        n = len(got["onnx"]) * k
        for name in got:
            np.testing.assert_allclose(np.concatenate(got[name], axis=-1), ref[..., :n], rtol=0, atol=1e-4,
                                       err_msg=name)
        onnx_stream.reset()
        eager_stream.reset()


def test_a_missing_or_foreign_step_graph_is_refused(stateful_card, tmp_path):
    import shutil

    files = resolve_model(stateful_card)
    copy = tmp_path / "copy"
    shutil.copytree(files.folder, copy)
    (copy / "tiny.stateful" / "step3.onnx").unlink()
    with pytest.raises(ModelError, match="step3.onnx"):
        load_backend(resolve_model(copy / "tiny.json"), "onnx", "cpu")
    # the whole-window graph in a step's place: no step metadata; in the folder's place: no folder
    shutil.copyfile(copy / "tiny.onnx", copy / "one.onnx")
    card = ModelCard.load(copy / "tiny.json")
    card.replace(files={**card.files, "onnx_stateful": "one.onnx"}).save(copy / "old.json")
    with pytest.raises(ModelError, match="not a folder of stateful step graphs"):
        load_backend(resolve_model(copy / "old.json"), "onnx", "cpu")
    shutil.copyfile(copy / "tiny.onnx", copy / "tiny.stateful" / "step3.onnx")
    with pytest.raises(ModelError, match="not a vocex stateful step"):
        load_backend(resolve_model(copy / "tiny.json"), "onnx", "cpu")


def test_cards_say_which_form_a_model_streams_in(stateful_card, tmp_path, capsys):
    for name in ("default", "live-window", "live-ensemble", "live-low-delay"):  # shipped cards: window form
        assert resolve_model(name).card.streaming == "window"
    assert resolve_model("live").card.streaming == "stateful"  # vocex-live's default
    card = ModelCard.load(stateful_card)
    with pytest.raises(CardError, match="single causal"):
        card.replace(causal=False)
    with pytest.raises(CardError, match="streaming must be"):
        card.replace(streaming="chunked")
    with pytest.raises(CardError, match="peak_frames"):
        card.replace(peak_frames=0)
    # a card that streams statefully without its graph cannot be opened by ONNX Runtime
    bare = tmp_path / "bare.json"
    files = resolve_model(stateful_card)
    card.replace(files={k: str(files.path(k)) for k in ("onnx", "checkpoint")}).save(bare)
    with pytest.raises(ModelError, match="vocex-export --stateful"):
        load_backend(resolve_model(bare), "onnx", "cpu")
    # the symmetric network has no stateful form
    plain = make_model(tmp_path / "sym", seed=1)
    assert export_main([str(plain), "-o", str(tmp_path / "out"), "--stateful"]) == 3
    assert "causal" in capsys.readouterr().err.strip().splitlines()[-1]


def test_the_shipped_stateful_model_streams_its_causal_network_run_offline():
    """The shipped stateful model, as ONNX Runtime streams it at its card's hop batch,
    gives the masks of its causal network run over the whole signal (its weights read back
    from its whole-window graph), through a full period of the step graphs and after reset()."""
    files = resolve_model("live")
    card = files.card
    stream = load_backend(files, "onnx", "cpu", threads=1).open_stream(1, card.live["hop_batch"])
    net = StatefulUNet(load_backend(files, "eager", "cpu").module, card.n_bins, card.stateful_peak_frames)
    gen = torch.Generator().manual_seed(9)
    n = 160  # past one period (64 columns) and the peak window's first fill
    x = torch.rand(1, 1, card.n_bins, n, generator=gen) ** 3 * torch.exp(2 * torch.randn(1, 1, 1, n, generator=gen))
    with torch.no_grad():
        ref = net.offline(x).numpy()
    k = card.live["hop_batch"]
    for attempt in range(2):
        got = [stream.step(np.ascontiguousarray(x[..., i : i + k].numpy())).copy() for i in range(0, n - k + 1, k)]
        got = np.concatenate(got, axis=-1)
        np.testing.assert_allclose(got, ref[..., : got.shape[-1]], rtol=0, atol=1e-4)
        stream.reset()


def test_export_records_the_live_defaults_in_the_card(tmp_path, capsys):
    from vocex.realtime.settings import streaming_settings

    plain = make_model(tmp_path / "m", seed=1)
    args = [str(plain), "-o", str(tmp_path / "out"), "--format", "onnx", "--live-hop-batch", "2"]
    assert export_main([*args, "--live-mask-temperature", "1.2"]) == 0
    card = ModelCard.load(tmp_path / "out" / plain.name)
    assert card.live["hop_batch"] == 2 and card.live["mask_temperature"] == 1.2
    assert streaming_settings(card).mask_temperature == 1.2 and streaming_settings(card).hop_batch == 2
    with pytest.raises(SystemExit) as exc:
        export_main([*args, "--force", "--live-mask-temperature", "0"])
    assert exc.value.code == 2 and "must be positive" in capsys.readouterr().err
