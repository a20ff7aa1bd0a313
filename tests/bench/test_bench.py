import json

import pytest

from vocex.bench import cli
from tests.conftest import make_model

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def live_like_model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("live-like"), name="ll", sample_rate=48000, n_fft=1024, hop=256,
                      n_bins=64, context_frames=64, base_channels=2)


def test_compute_writes_json_table_and_plot(live_like_model, tmp_path, capsys):
    out = tmp_path / "compute.json"
    assert cli.main(["compute", "--model", str(live_like_model), "--json", str(out), "--plot",
                     "--iterations", "5", "--hop-batches", "1,4", "--channels", "2"]) == 0
    report = json.loads(out.read_text())
    backends = {(r["backend"], r["threads"]) for r in report["results"]}
    assert {("onnx", 1), ("onnx", 2), ("torchscript", 1), ("eager", 1)} <= backends
    for r in report["results"]:
        assert r["load"] == pytest.approx(r["p99_ms"] / r["interval_ms"], abs=1e-2)
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert "load" in capsys.readouterr().out
    assert cli.main(["compute", "--model", str(live_like_model), "--json", str(out)]) == 4  # never overwrites


def test_latency_without_jack_says_what_it_skips(live_like_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_jack_missing", lambda: "jackd not installed (apt-get install jackd2)")
    out = tmp_path / "lat.json"
    assert cli.main(["latency", "--model", str(live_like_model), "--json", str(out),
                     "--settings", "48000:1:0,44100:2:1"]) == 0
    report = json.loads(out.read_text())
    assert "skipped" in report and report["measured"] == []
    rows = {(r["rate"], r["K"], r["L"]): r for r in report["algorithmic"]}
    assert rows[48000, 1, 0]["algorithmic_samples"] == 1023
    assert rows[44100, 2, 1]["resampling"] is True
    assert "skipped" in capsys.readouterr().err
    monkeypatch.setattr(cli, "_jack_missing", lambda: "jackd not installed")
    assert cli.main(["soak", "--song", "x.wav", "--minutes", "0.1"]) == 5


@pytest.mark.jack
@pytest.mark.slow
def test_latency_measured_on_jack_matches_reported(live_like_model, tmp_path):
    if cli._jack_missing():
        pytest.fail(f"device benchmark needs JACK: {cli._jack_missing()}")
    out = tmp_path / "lat.json"
    assert cli.main(["latency", "--model", str(live_like_model), "--json", str(out),
                     "--settings", "48000:2:1", "--blocks", "256"]) == 0
    (row,) = json.loads(out.read_text())["measured"]
    assert row["within_one_block"], row
