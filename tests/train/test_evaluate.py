import json
from pathlib import Path

import numpy as np
import pytest

from vocex.train.data import Track
from vocex.train.evaluate import bss_scores, main
from tests.conftest import MUSDB_MINI, needs_shared_data


def test_eval_report_structure_and_baselines(tiny_model, musdb_hq, tmp_path):
    out = tmp_path / "r.json"
    assert main(["--musdb-root", str(musdb_hq), "--json", str(out), "--model", str(tiny_model)]) == 0
    report = json.loads(out.read_text())
    assert [t["name"] for t in report["tracks"]] == ["Delta - Four", "Gamma - Three"]  # test subset only
    for target in ("vocals", "accompaniment"):
        assert set(report["median"][target]) >= {"SDR", "SIR", "SAR"}
    floor = report["baselines"]["mixture"]["median"]
    oracle = report["baselines"]["oracle_irm"]["median"]
    # the oracle mask beats the mixture by a wide margin on both targets
    assert oracle["vocals"]["SDR"] > floor["vocals"]["SDR"] + 10
    assert oracle["accompaniment"]["SDR"] > floor["accompaniment"]["SDR"] + 5
    assert report["streaming"] is None


def test_streaming_eval_and_existing_json(tiny_model, musdb_hq, tmp_path, capsys):
    out = tmp_path / "s.json"
    args = ["--musdb-root", str(musdb_hq), "--json", str(out), "--model", str(tiny_model),
            "--streaming", "--hop-batch", "2", "--lookahead", "1", "--no-baselines", "--tracks", "1"]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert report["streaming"]["hop_batch"] == 2 and len(report["tracks"]) == 1
    assert main(args) == 4
    assert "exists" in capsys.readouterr().err


def test_streaming_without_a_model_scores_the_live_model(musdb_hq, tmp_path):
    """What vocex-live plays (and vocex-separate --streaming separates) is what is scored:
    the shipped live model, not the offline default."""
    from vocex.model.backends import default_model_path, resolve_model
    from vocex.realtime.settings import live_model_path

    base = ["--musdb-root", str(musdb_hq), "--no-baselines", "--tracks", "1"]
    assert main([*base, "--json", str(tmp_path / "s.json"), "--streaming"]) == 0
    assert main([*base, "--json", str(tmp_path / "o.json"), "--shifts", "1"]) == 0
    streamed, offline = (json.loads((tmp_path / name).read_text()) for name in ("s.json", "o.json"))
    live = resolve_model(live_model_path())
    assert Path(streamed["model"]).resolve() == live.card_path.resolve()
    assert streamed["model_name"] == live.card.name and streamed["streaming"]["hop_batch"] >= 1
    assert Path(offline["model"]).resolve() == resolve_model(default_model_path()).card_path.resolve()
    assert live.card.name != offline["model_name"]


def test_bad_root(tiny_model, tmp_path, capsys):
    assert main(["--musdb-root", str(tmp_path / "none"), "--json", str(tmp_path / "r.json"), "--model", str(tiny_model)]) == 2
    assert "not a directory" in capsys.readouterr().err


@needs_shared_data()
@pytest.mark.slow
def test_shipped_model_beats_the_floor_on_a_real_test_song(tmp_path):
    out = tmp_path / "real.json"
    assert main(["--musdb-root", str(MUSDB_MINI), "--json", str(out), "--tracks", "1"]) == 0
    report = json.loads(out.read_text())
    model, floor = report["median"], report["baselines"]["mixture"]["median"]
    assert model["vocals"]["SDR"] > floor["vocals"]["SDR"] + 4
    assert model["accompaniment"]["SDR"] > floor["accompaniment"]["SDR"] + 2


def test_bsseval_scores_known_snr_without_ffmpeg(monkeypatch):
    """Scoring loads museval's metrics module alone: no ffmpeg (stempeg) needed."""
    monkeypatch.setenv("PATH", "")
    rng = np.random.default_rng(0)
    rate = 8000
    vocals = rng.standard_normal((4 * rate, 2)).astype(np.float32) * 0.1
    accomp = rng.standard_normal((4 * rate, 2)).astype(np.float32) * 0.1
    track = Track("t", vocals + accomp, vocals, rate)
    noise = rng.standard_normal(vocals.shape).astype(np.float32) * 0.01  # 20 dB below each stem
    scores = bss_scores(track, vocals + noise, accomp - noise)
    for target in ("vocals", "accompaniment"):
        assert 18.0 < scores[target]["SDR"] < 22.0, scores
    better = bss_scores(track, vocals + noise / 10, accomp - noise / 10)
    assert 38.0 < better["vocals"]["SDR"] < 42.0, better
    with pytest.raises(ValueError, match="do not match"):
        bss_scores(track, vocals[:-1], accomp[:-1])
