"""vocex-bench compute on the stateful form, and the busy-machine helper of vocex-bench soak."""

from __future__ import annotations

import os

import pytest

from tests.conftest import make_model

pytest.importorskip("torch")

from vocex.bench import cli, compute, soak  # noqa: E402
from vocex.model.backends import resolve_model  # noqa: E402
from vocex.model.export import export  # noqa: E402


def test_compute_times_stateful_steps_per_hop_batch(tmp_path, capsys):
    card = make_model(tmp_path / "plain", seed=2, causal=True)
    card = export(resolve_model(card), tmp_path / "out", "st", ["onnx"], stateful=True)
    report = compute.run(resolve_model(card), [1, 2, 4], [1], 10)
    assert report["form"] == "stateful" and report["graph"] == "stateful step of K columns"
    onnx1 = [r for r in report["results"] if (r["backend"], r["threads"]) == ("onnx", 1)]
    assert [r["hop_batch"] for r in onnx1] == [1, 2, 4]
    assert all(0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"] for r in onnx1)
    assert {r["backend"] for r in report["results"]} == {"onnx", "eager"}  # no TorchScript for the stateful form
    # the same card in its window form; a symmetric card has no stateful form (one-line error)
    assert compute.run(resolve_model(card), [1], [1], 3, form="window")["form"] == "window"
    plain = make_model(tmp_path / "sym", seed=3)
    assert cli.main(["compute", "--model", str(plain), "--form", "stateful", "--iterations", "2"]) == 2
    assert "single causal" in capsys.readouterr().err.strip().splitlines()[-1]


def test_cpu_hogs_spin_and_are_always_stopped():
    with pytest.raises(RuntimeError):
        with soak.cpu_hogs(2) as procs:
            assert len(procs) == 2 and all(p.poll() is None for p in procs)
            pids = [p.pid for p in procs]
            raise RuntimeError("the bench failed")
    assert all(p.poll() is not None for p in procs)
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]
    with soak.cpu_hogs(0) as procs:
        assert procs == []
