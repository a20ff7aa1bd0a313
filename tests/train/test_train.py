import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from vocex.model.backends import load_backend, resolve_model  # noqa: E402
from vocex.train.train import main  # noqa: E402

TINY_ARGS = ["--sample-rate", "8000", "--n-fft", "128", "--hop", "32", "--n-bins", "64",
             "--context-frames", "64", "--base-channels", "2", "--batch-size", "2",
             "--val-every", "2", "--checkpoint-every", "2", "--threads", "1"]


def test_train_resume_and_export(musdb_hq, tmp_path):
    out = tmp_path / "run"
    assert main(["--out", str(out), "--musdb-root", str(musdb_hq), "--steps", "3", *TINY_ARGS]) == 0
    card = json.loads((out / "model.json").read_text())
    assert card["training"]["steps"] == 3 and card["n_fft"] == 128
    assert card["training"]["data"] == {f"musdb:{musdb_hq.name}": 2}
    assert main(["--out", str(out), "--musdb-root", str(musdb_hq), "--steps", "5", *TINY_ARGS]) == 0
    assert json.loads((out / "model.json").read_text())["training"]["steps"] == 5
    files = resolve_model(out / "model.json")
    backend = load_backend(files, "eager", "cpu")
    assert backend.card.base_channels == 2

    from vocex.model.export import main as export_main

    assert export_main([str(out / "model.json"), "-o", str(tmp_path / "exp"), "--name", "m"]) == 0
    assert export_main([str(out / "model.json"), "-o", str(tmp_path / "exp"), "--name", "m"]) == 4
    exported = resolve_model(tmp_path / "exp" / "m.json")
    assert set(exported.card.files) == {"checkpoint", "onnx", "torchscript"}


def test_causal_delayed_training_records_it_and_exports_the_same_network(musdb_hq, tmp_path):
    import numpy as np

    out = tmp_path / "causal"
    assert main(["--out", str(out), "--musdb-root", str(musdb_hq), "--steps", "2", "--causal", "--mask-delay", "1",
                 *TINY_ARGS]) == 0
    card = json.loads((out / "model.json").read_text())
    assert card["causal"] is True and card["mask_delay"] == 1
    from vocex.realtime.settings import streaming_settings

    assert streaming_settings(resolve_model(out / "model.json").card).lookahead_frames == 1
    eager = load_backend(resolve_model(out / "model.json"), "eager", "cpu")
    from vocex.model.backends import load_unet
    from vocex.model.export import main as export_main

    assert load_unet(resolve_model(out / "model.json")).causal
    assert export_main([str(out / "model.json"), "-o", str(tmp_path / "exp"), "--name", "c"]) == 0
    exported = resolve_model(tmp_path / "exp" / "c.json")
    assert exported.card.causal
    x = np.random.default_rng(0).random((1, 1, 64, 64), dtype=np.float32)
    for name in ("onnx", "torchscript"):
        np.testing.assert_allclose(load_backend(exported, name, "cpu")(x), eager(x), atol=1e-5)


def test_low_delay_window_is_trained_and_recorded(musdb_hq, tmp_path, capsys):
    from vocex.realtime.settings import StreamingSettings

    out = tmp_path / "ld"
    assert main(["--out", str(out), "--musdb-root", str(musdb_hq), "--steps", "2", "--window", "low_delay",
                 *TINY_ARGS]) == 0
    card = resolve_model(out / "model.json").card
    assert card.window == "low_delay"
    assert StreamingSettings(2, 1).model_latency(card) == 2 * 32 - 1 + 2 * 32
    assert main(["--out", str(tmp_path / "bad"), "--musdb-root", str(musdb_hq), "--window", "low_delay",
                 *TINY_ARGS[:4], "--hop", "96", *TINY_ARGS[6:]]) == 2
    assert "a low-delay window needs hop <= n_fft / 2" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_no_data_is_a_clear_error(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "r")]) == 2
    assert "no training data" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "r"), "--mask-delay", "2", *TINY_ARGS]) == 2
    assert "--mask-delay 2 needs --causal" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "r"), "--musdb-root", str(tmp_path / "missing")]) == 2


def test_ddp_two_processes_gloo(musdb_hq, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "vocex.train.train", "--out", str(out), "--musdb-root", str(musdb_hq), "--steps", "3", *TINY_ARGS]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    card = json.loads((out / "model.json").read_text())
    assert card["training"]["processes"] == 2 and card["training"]["steps"] == 3


def test_random_context_zeroes_only_the_oldest_columns(musdb_hq, tmp_path):
    import numpy as np

    from vocex.train.train import shorten_context

    rng = np.random.default_rng(0)
    mix = rng.random((64, 1, 8, 32)).astype(np.float32) + 0.1
    voc = mix * 0.5
    before = mix.copy()
    shorten_context(mix, voc, 0.5, 4, np.random.default_rng(1))
    cut = [int(np.argmax(mix[i, 0, 0] != 0)) for i in range(64)]  # first kept column
    assert 16 <= sum(c > 0 for c in cut) <= 48  # about half the patches were shortened
    for i, c in enumerate(cut):
        assert c <= 32 - 4  # the newest 4 columns always stay
        assert (mix[i, ..., :c] == 0).all() and (voc[i, ..., :c] == 0).all()
        np.testing.assert_array_equal(mix[i, ..., c:], before[i, ..., c:])
        np.testing.assert_array_equal(voc[i, ..., c:], before[i, ..., c:] * 0.5)
    untouched = mix.copy()
    shorten_context(mix, voc, 0.0, 4, np.random.default_rng(2))
    np.testing.assert_array_equal(mix, untouched)

    out = tmp_path / "run"
    assert main(["--out", str(out), "--musdb-root", str(musdb_hq), "--steps", "2", "--random-context", "0.5",
                 "--newest-columns", "4", "--newest-weight", "2", *TINY_ARGS]) == 0
    loss = json.loads((out / "model.json").read_text())["training"]["loss"]
    assert "newest 4 columns weighted +2.0" in loss and "oldest columns zeroed in 50% of patches" in loss


def test_column_weights_follow_the_live_output_columns(musdb_hq, tmp_path, capsys):
    import numpy as np

    from vocex.train.train import column_weights

    np.testing.assert_array_equal(column_weights(8, 3, 4.0), [1, 1, 1, 1, 1, 5, 5, 5])
    # with lookahead L the stream outputs the K columns that end L frames before the newest
    np.testing.assert_array_equal(column_weights(8, 3, 4.0, lookahead=2), [1, 1, 1, 5, 5, 5, 1, 1])

    out = tmp_path / "run"
    assert main(["--out", str(out), "--musdb-root", str(musdb_hq), "--steps", "2", "--newest-columns", "4",
                 "--newest-weight", "2", "--newest-lookahead", "1", *TINY_ARGS]) == 0
    loss = json.loads((out / "model.json").read_text())["training"]["loss"]
    assert "newest 4 columns weighted +2.0 (lookahead 1)" in loss
    capsys.readouterr()
    assert main(["--out", str(tmp_path / "bad"), "--musdb-root", str(musdb_hq), "--newest-columns", "4",
                 "--newest-lookahead", "61", *TINY_ARGS]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--newest-lookahead 61" in err


def test_stateful_training_normalises_as_the_stream_does(musdb_hq, tmp_path, capsys):
    import numpy as np
    import torch

    from vocex.model.backends import load_unet
    from vocex.model.unet import sliding_peak_normalise
    from vocex.train.data import Corpus, PatchSampler, add_musdb_like
    from vocex.train.train import _sliding_peak_model

    out = tmp_path / "stateful"
    assert main(["--out", str(out), "--musdb-root", str(musdb_hq), "--steps", "2", "--causal", "--stateful",
                 "--peak-frames", "32", *TINY_ARGS]) == 0
    card = json.loads((out / "model.json").read_text())
    assert card["streaming"] == "stateful" and card["peak_frames"] == 32 and card["causal"] is True
    # what the loss saw: the columns scaled by the peak of their newest 32 columns, not the patch's
    unet = load_unet(resolve_model(out / "model.json"))
    corpus = Corpus(8000)
    add_musdb_like(corpus, musdb_hq)
    mix = torch.from_numpy(PatchSampler(corpus, _card_front_end(card), 64, 64, seed=0).batch(2)[0])
    with torch.no_grad():
        seen = _sliding_peak_model(unet, 32)(mix)
        np.testing.assert_allclose(seen, unet.forward_scaled(sliding_peak_normalise(mix, 32)), atol=1e-6)
        assert not torch.allclose(seen, unet(mix), atol=1e-4)  # the patch-peak form differs
    assert main(["--out", str(tmp_path / "x"), "--musdb-root", str(musdb_hq), "--stateful", *TINY_ARGS]) == 2
    assert "--stateful needs --causal" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "y"), "--musdb-root", str(musdb_hq), "--peak-frames", "8", *TINY_ARGS]) == 2


def _card_front_end(card):
    from vocex.model.card import FrontEnd

    return FrontEnd(card["sample_rate"], card["n_fft"], card["hop"], card["window"])


def test_training_starts_from_an_onnx_graph(musdb_hq, tmp_path):
    """A package ships ONNX graphs, no checkpoints: --init takes a model's .onnx, and export
    without a checkpoint gives a card whose eager backend reads the weights from ONNX."""
    import numpy as np

    from vocex.model.export import export

    out = tmp_path / "run"
    assert main(["--out", str(out), "--musdb-root", str(musdb_hq), "--steps", "2", *TINY_ARGS]) == 0
    card = export(resolve_model(out / "model.json"), tmp_path / "pkg", "m", ["onnx"], newest=8, checkpoint=False)
    files = resolve_model(card)
    assert set(files.card.files) == {"onnx", "onnx_newest", "weights"}
    x = np.random.default_rng(0).random((1, 1, 64, 64), dtype=np.float32)
    np.testing.assert_allclose(load_backend(files, "eager", "cpu")(x), load_backend(files, "onnx", "cpu")(x), atol=1e-5)
    again = tmp_path / "again"
    assert main(["--out", str(again), "--musdb-root", str(musdb_hq), "--steps", "1",
                 "--init", str(files.path("onnx")), *TINY_ARGS]) == 0
    assert json.loads((again / "model.json").read_text())["training"]["init"].endswith("m.onnx")


def test_a_narrower_model_starts_a_wider_run_with_the_same_function(musdb_hq, tmp_path):
    """--init with a narrower model.pt widens it (Net2WiderNet): the wider network computes
    the same masks, and training then separates the copied channels."""
    import torch

    from vocex.model.unet import UNet
    from vocex.train.train import _init_state
    from vocex.train.widen import widen_state

    narrow = tmp_path / "narrow"
    args = [a for a in TINY_ARGS]
    args[args.index("--base-channels") + 1] = "2"
    assert main(["--out", str(narrow), "--musdb-root", str(musdb_hq), "--steps", "2", "--causal", *args]) == 0
    small = UNet(2, causal=True)
    small.load_state_dict(torch.load(narrow / "model.pt", weights_only=True))
    # batch norm statistics away from their start, so copies of them are tested too
    gen = torch.Generator().manual_seed(1)
    for module in small.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5, generator=gen)
            module.running_var.uniform_(0.5, 2.0, generator=gen)
    torch.save(small.state_dict(), narrow / "model.pt")
    x = torch.rand(2, 1, 64, 64, generator=gen)
    for width in (3, 4):
        wide = UNet(width, causal=True)
        wide.load_state_dict(_init_state(narrow / "model.pt", wide, seed=5))
        with torch.no_grad():
            torch.testing.assert_close(wide.eval()(x), small.eval()(x), atol=1e-5, rtol=0)
        # the copy of first-layer channel s: the next layer's weights from s and from its copy
        # are unequal shares (equal halves would keep the copies equal) that sum to the old one
        state = wide.state_dict()
        copy = 2
        src = next(s for s in range(2) if torch.equal(state["encoder.0.0.weight"][copy],
                                                      state["encoder.0.0.weight"][s]))
        shares = state["encoder.1.0.weight"][:, [src, copy]]
        assert not torch.allclose(shares[:, 0], shares[:, 1])
        torch.testing.assert_close(shares.sum(1)[:4], small.state_dict()["encoder.1.0.weight"][:, src])
    with pytest.raises(ValueError, match="cannot narrow"):
        widen_state(wide.state_dict(), 2)

    wider = tmp_path / "wider"
    args[args.index("--base-channels") + 1] = "4"
    assert main(["--out", str(wider), "--musdb-root", str(musdb_hq), "--steps", "2", "--causal",
                 "--init", str(narrow / "model.pt"), *args]) == 0
    trained = torch.load(wider / "model.pt", weights_only=True)["encoder.0.0.weight"]
    start = widen_state(small.state_dict(), 4, seed=0)["encoder.0.0.weight"]  # the run's --seed
    copies = [(j, s) for j in (2, 3) for s in (0, 1) if torch.equal(start[j], start[s])]
    assert trained.shape[0] == 4 and len(copies) == 2
    assert all(not torch.allclose(trained[j], trained[s]) for j, s in copies)  # the copies parted
