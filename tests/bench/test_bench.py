import json
from pathlib import Path

import numpy as np
import pytest

from vocex.bench import cli, throughput
from vocex.model.card import ModelCard
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
    assert report["graph"].startswith("newest")
    whole = tmp_path / "whole.json"
    assert cli.main(["compute", "--model", str(live_like_model), "--json", str(whole), "--whole",
                     "--iterations", "3", "--hop-batches", "4", "--channels", "1"]) == 0
    assert json.loads(whole.read_text())["graph"] == "whole window"


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
    # without --settings: the model's own K and L (its card's live defaults), at both device rates
    card = Path(live_like_model).with_name("k2l1.json")
    ModelCard.load(live_like_model).replace(live={"hop_batch": 2, "lookahead_frames": 1}).save(card)
    out = tmp_path / "own.json"
    assert cli.main(["latency", "--model", str(card), "--json", str(out)]) == 0
    assert [(r["rate"], r["K"], r["L"]) for r in json.loads(out.read_text())["algorithmic"]] == \
        [(48000, 2, 1), (44100, 2, 1)]
    monkeypatch.setattr(cli, "_jack_missing", lambda: "jackd not installed")
    assert cli.main(["soak", "--song", "x.wav", "--minutes", "0.1"]) == 5


def test_latency_table_shows_impulses_that_never_arrived():
    from vocex.bench.latency import table

    row = dict(rate=48000, K=1, L=0, block=256, reported_samples=2303, reported_ms=47.98, xruns=0,
               late_blocks=100, restarts=100, impulses=4)
    report = {"algorithmic": [], "measured": [
        {**row, "measured_samples": 2303, "measured_ms": 47.98, "error_samples": 0, "within_one_block": True, "arrived": 2},
        {**row, "measured_samples": None, "measured_ms": None, "error_samples": None, "within_one_block": False, "arrived": 0},
    ]}
    first, second = table(report).splitlines()[-2:]
    assert "47.98" in first.split()[5] and "2/4" in first and first.split()[-1] == "100"
    assert second.split()[5:9] == ["-", "-", "NO", "0/4"]


def _moved(row) -> bool:
    """The stream moved during the run: a cycle that an xrun dropped shifts every later impulse
    by a block, and a late block can lose one, so the impulses did not all arrive at one delay."""
    return row["arrived"] < row["impulses"] or len(set(row["arrivals_samples"])) > 1 or row["late_blocks"] > 0


@pytest.mark.jack
@pytest.mark.slow
def test_latency_measured_on_jack_matches_reported(live_like_model, tmp_path):
    if cli._jack_missing():
        pytest.fail(f"device benchmark needs JACK: {cli._jack_missing()}")
    rows = []
    for attempt in range(3):
        out = tmp_path / f"lat{attempt}.json"
        assert cli.main(["latency", "--model", str(live_like_model), "--json", str(out),
                         "--settings", "48000:2:1", "--blocks", "256"]) == 0
        (row,) = json.loads(out.read_text())["measured"]
        if row["within_one_block"] and row["arrived"] >= 1:
            return
        rows.append(row)
        if not _moved(row):
            break  # every impulse arrived at one wrong delay: the reported latency is wrong
    if all(_moved(r) for r in rows):
        pytest.skip(f"machine stalls in every run, none could be judged: {rows}")
    pytest.fail(f"impulses off the reported latency: {rows}")


@pytest.mark.jack
@pytest.mark.slow
def test_soak_with_control_run(live_like_model, tmp_path):
    """A short soak: the control run (server and player alone) and the vocex-live run both
    report, memory is sampled, and the song went through vocex."""
    if cli._jack_missing():
        pytest.fail(f"device benchmark needs JACK: {cli._jack_missing()}")
    import soundfile as sf

    song = tmp_path / "song.wav"
    t = np.arange(48000 * 3) / 48000
    sf.write(str(song), np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * 2, axis=1), 48000)
    out = tmp_path / "soak.json"
    assert cli.main(["soak", "--model", str(live_like_model), "--song", str(song), "--minutes", "0.3",
                     "--control-minutes", "0.1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["control"]["minutes"] == 0.1 and report["control"]["server_xruns"] >= 0
    assert report["stats"]["blocks"] > 0.9 * 18 * 48000 / 256  # 18 s of 256-sample blocks went through
    assert report["server_xruns"] >= 0 and len(report["rss_samples"]) >= 3


# --- throughput ------------------------------------------------------------------------------

RESULT_KEYS = {"system", "threads", "seconds", "x_realtime"}


def _check_schema(report, systems, threads):
    assert isinstance(report["clip_seconds"], float) and report["clip_seconds"] > 0
    assert {(r["system"], r["threads"]) for r in report["results"]} == {(s, n) for s in systems for n in threads}
    for r in report["results"]:
        assert RESULT_KEYS <= set(r)
        assert r["system"] in ("vocex", "openunmix", "htdemucs") and isinstance(r["threads"], int)
        assert r["seconds"] > 0
        # seconds is rounded to 0.1 ms in the JSON: allow for that on very short timings
        assert r["x_realtime"] == pytest.approx(report["clip_seconds"] / r["seconds"],
                                                rel=1e-2 + 0.6e-4 / r["seconds"], abs=1e-3)


def test_throughput_without_peers_measures_vocex_and_says_what_it_skipped(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(throughput, "peer_missing", lambda system: f"python package for {system} not installed")
    out = tmp_path / "tp.json"
    assert cli.main(["throughput", "--model", str(tiny_model), "--seconds", "0.5", "--threads", "1,2",
                     "--repeats", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    _check_schema(report, ["vocex"], [1, 2])
    assert report["clip_seconds"] == pytest.approx(0.5)
    assert set(report["skipped"]) == {"openunmix", "htdemucs"}
    assert "not installed" in report["skipped"]["openunmix"]
    assert report["ratios"] == {} and "acceptance" not in report
    assert report["systems"]["vocex"]["model"] == str(tiny_model)
    assert len(report["load_average"]["before"]) == 3 and report["load_average"]["cpus"] >= 1
    text = capsys.readouterr().out
    assert "skipped openunmix" in text and "skipped htdemucs" in text and "vocex" in text


def test_throughput_bad_arguments(tmp_path):
    assert cli.main(["throughput", "--systems", "vocex,spleeter"]) == 2
    assert cli.main(["throughput", "--threads", "one"]) == 2
    assert cli.main(["throughput", "--clip", str(tmp_path / "missing.wav")]) == 2
    assert cli.main(["throughput", "--model", str(tmp_path / "none.json")]) == 3


def test_throughput_reads_a_clip_file_as_44k_stereo(tmp_path):
    import soundfile as sf

    from tests.conftest import tone_mix

    path = tmp_path / "mono.wav"
    sf.write(str(path), tone_mix(22050, 22050, n_channels=1), 22050)
    clip = throughput.load_clip(path, seconds=0.5)
    assert clip.shape == (22050, 2) and clip.dtype == "float32"
    assert (clip[:, 0] == clip[:, 1]).all() and abs(clip).max() > 0.1
    a, b = throughput.synthetic_clip(0.25), throughput.synthetic_clip(0.25)
    assert a.shape == (11025, 2) and (a == b).all() and not (a[:, 0] == a[:, 1]).all()


def test_ratios_and_table():
    results = [{"system": "vocex", "threads": 1, "seconds": 1.0, "x_realtime": 30.0},
               {"system": "openunmix", "threads": 1, "seconds": 20.0, "x_realtime": 1.5},
               {"system": "vocex", "threads": 2, "seconds": 0.5, "x_realtime": 60.0},
               {"system": "htdemucs", "threads": 2, "seconds": 60.0, "x_realtime": 0.5}]
    assert throughput.ratios(results) == {"vocex/openunmix": {"1": 20.0}, "vocex/htdemucs": {"2": 120.0}}
    report = {"clip": "x", "clip_seconds": 30.0, "repeats": 1, "results": results, "skipped": {},
              "ratios": throughput.ratios(results), "notes": [throughput.RANDOM_WEIGHTS_NOTE],
              "acceptance": {"ratio": 20.0, "met": True}}
    text = throughput.table(report)
    assert "vocex/openunmix (medians): 20.0x with 1 thread" in text and "120.0x with 2 threads" in text
    assert "random weights" in text and "met" in text


def test_torchaudio_shim_only_when_torchaudio_does_not_import(monkeypatch):
    import builtins
    import sys

    real_import = builtins.__import__

    def no_torchaudio(name, *args, **kwargs):
        if name == "torchaudio":
            raise ImportError("undefined symbol: _ZN3c10 (built against another torch)")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "torchaudio", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_torchaudio)
    note = throughput.install_torchaudio_shim()
    monkeypatch.setattr(builtins, "__import__", real_import)
    assert note and "stand-in" in note and "undefined symbol" in note
    stub = sys.modules["torchaudio"]
    with pytest.raises(AttributeError, match="stand-in"):
        stub.transforms  # noqa: B018  a use on the separation path would fail loudly
    assert throughput.install_torchaudio_shim() is None  # the stand-in imports now: nothing more to do


@pytest.mark.slow
@pytest.mark.skipif(throughput.peer_missing("openunmix") is not None or throughput.peer_missing("htdemucs") is not None,
                    reason="peers not installed (pip install -c constraints.txt '.[peers]')")
def test_throughput_with_peers_writes_the_schema_and_ratios(tiny_model, tmp_path, capsys):
    out = tmp_path / "tp.json"
    assert cli.main(["throughput", "--model", str(tiny_model), "--seconds", "0.5", "--threads", "1",
                     "--repeats", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    _check_schema(report, ["vocex", "openunmix", "htdemucs"], [1])
    assert report["skipped"] == {}
    assert all(len(r["times"]) == 1 and r["min_seconds"] == r["seconds"] for r in report["results"])
    assert set(report["ratios"]) == set(report["ratios_of_fastest"]) == {"vocex/openunmix", "vocex/htdemucs"}
    by = {r["system"]: r["x_realtime"] for r in report["results"]}
    assert report["ratios"]["vocex/openunmix"]["1"] == pytest.approx(by["vocex"] / by["openunmix"], rel=2e-2)
    assert report["acceptance"]["ratio"] == report["ratios"]["vocex/openunmix"]["1"]
    assert set(report["random_weights"]) == {"openunmix", "htdemucs"}
    assert any("random weights" in n for n in report["notes"])
    assert report["systems"]["openunmix"]["niter"] == 1 and report["systems"]["openunmix"]["architecture"] == "umxl"
    assert report["systems"]["htdemucs"]["kwargs"]["segment"] == "39/5"
    assert "vocex/htdemucs" in capsys.readouterr().out


# --- quality ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_musdb(tmp_path_factory):
    from tests.train.conftest import make_musdb_hq

    return make_musdb_hq(tmp_path_factory.mktemp("musdb"), rate=8000, seconds=3.0)


def test_quality_curve_json_table_and_plot(tiny_model, tiny_musdb, tmp_path, capsys):
    out = tmp_path / "q.json"
    assert cli.main(["quality", "--musdb-root", str(tiny_musdb), "--model", str(tiny_model), "--offline-model",
                     str(tiny_model), "--settings", "1:0,4:2", "--json", str(out), "--plot"]) == 0
    report = json.loads(out.read_text())
    assert report["n_tracks"] == 2 and report["subset"] == "test" and report["sample_rate"] == 8000
    rows = {(r["K"], r["L"]): r for r in report["settings"]}
    assert set(rows) == {(1, 0), (4, 2)}
    # tiny model: n_fft 128, hop 32 at 8 kHz, no resampling: latency = n_fft - 1 + (K - 1 + L) * hop
    assert rows[1, 0]["latency_samples"] == 127 and rows[4, 2]["latency_samples"] == 127 + 5 * 32
    assert rows[4, 2]["latency_ms"] == pytest.approx(1000 * 287 / 8000, abs=0.01)
    for r in [*report["settings"], report["offline"]]:
        assert np.isfinite(r["vocals_SDR"]) and np.isfinite(r["accompaniment_SDR"])
        assert len(r["tracks"]) == 2
        assert r["vocals_SDR"] == r["median"]["vocals"]["SDR"]
    assert rows[1, 0]["vocals_SDR"] != rows[4, 2]["vocals_SDR"]  # different settings, different estimates
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    text = capsys.readouterr().out
    assert "K=4 L=2" in text and "offline" in text and "latency ms" in text


def test_quality_scores_match_vocex_eval_streaming(tiny_model, tiny_musdb, tmp_path):
    from vocex.train import evaluate

    out, ref = tmp_path / "q.json", tmp_path / "eval.json"
    assert cli.main(["quality", "--musdb-root", str(tiny_musdb), "--model", str(tiny_model), "--offline-model",
                     str(tiny_model), "--settings", "2:1", "--tracks", "1", "--json", str(out)]) == 0
    assert evaluate.main(["--musdb-root", str(tiny_musdb), "--json", str(ref), "--model", str(tiny_model),
                          "--streaming", "--hop-batch", "2", "--lookahead", "1", "--tracks", "1",
                          "--no-baselines", "--backend", "onnx"]) == 0
    (row,) = json.loads(out.read_text())["settings"]
    expected = json.loads(ref.read_text())["median"]
    for target in ("vocals", "accompaniment"):
        assert row["median"][target] == pytest.approx(expected[target], abs=1e-3)
    assert json.loads(out.read_text())["n_tracks"] == 1


def test_quality_bad_arguments(tiny_model, tiny_musdb, tmp_path):
    assert cli.main(["quality", "--musdb-root", str(tiny_musdb), "--model", str(tiny_model), "--settings", "2-1"]) == 2
    assert cli.main(["quality", "--musdb-root", str(tiny_musdb), "--model", str(tiny_model), "--settings", "60:10"]) == 2
    assert cli.main(["quality", "--musdb-root", str(tmp_path / "nothing"), "--model", str(tiny_model)]) == 2


def test_throughput_times_a_stateful_model_as_its_stream(tmp_path):
    """A stateful card separates files as its stream, so that is what the throughput bench
    times (and its output is that stream's)."""
    from tests.conftest import tone_mix
    from vocex.model.backends import load_backend, resolve_model
    from vocex.model.export import export
    from vocex.realtime.settings import streaming_settings
    from vocex.realtime.stream import separate_streaming

    card = export(resolve_model(make_model(tmp_path / "m", seed=5, causal=True)), tmp_path / "x", "st", ["onnx"],
                  stateful=True)
    separate, info = throughput.make_separator("vocex", 1, str(card))
    assert info["streaming"]["hop_batch"] >= 1 and "shifts" not in info
    x = tone_mix(throughput.SAMPLE_RATE // 2, throughput.SAMPLE_RATE, 2)
    vocals, accompaniment = separate(x)
    files = resolve_model(card)
    expected = separate_streaming(load_backend(files, "onnx", "cpu", 1), x, throughput.SAMPLE_RATE,
                                  streaming_settings(files.card))
    np.testing.assert_allclose(vocals, expected, atol=1e-6)
    np.testing.assert_allclose(vocals + accompaniment, x, atol=1e-6)
