"""vocex-live argument and model errors (no audio device needed)."""

import pytest

from vocex.realtime.live import LiveStats, Levels, main


@pytest.mark.parametrize("args,code,message", [
    (["--channels", "3"], 2, "--channels must be 1 or 2"),
    (["--mix", "1.5"], 2, "--mix must be between 0 and 1"),
    (["--model", "/nonexistent/model.json"], 3, "no such model"),
    (["--hop-batch", "500"], 2, "K + L must be at most"),
    (["--stats-json", "/nonexistent/dir/s.json"], 4, "does not exist"),
])
def test_user_mistakes_are_one_line(args, code, message, capsys):
    assert main(args) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err


def test_stats_document_fields():
    s = LiveStats(48000, "m.json", 42.6, 10.0, 32.0, 5.33, 10.67, inference_ms={"p50": 2.0, "p99": 4.0, "max": 5.0})
    d = s.to_json()
    for key in ("xruns", "late_blocks", "blocks", "inference_ms", "hop_ms", "load", "algorithmic_latency_ms",
                "device_latency_ms", "sample_rate", "model"):
        assert key in d
    assert d["load"] == pytest.approx(4.0 / 10.67, abs=1e-3)
    assert d["total_latency_ms"] == pytest.approx(84.6)


def test_levels():
    import numpy as np

    lv = Levels()
    x = np.full((100, 2), 0.5, np.float32)
    lv.add(x, 0.5 * x)
    lin, lout, change = lv.take()
    assert lin == pytest.approx(-6.02, abs=0.01) and change == pytest.approx(-6.02, abs=0.01)


@pytest.mark.parametrize("p90_ms,falls_back", [(5.0, False), (15.0, True)])
def test_the_live_model_falls_back_to_live_lite_on_a_slow_machine(monkeypatch, capsys, p90_ms, falls_back):
    import vocex.realtime.live as live
    from vocex.model.backends import load_backend, resolve_model

    files = resolve_model(live.live_model_path())
    backend = load_backend(files, "onnx", "cpu", 1)
    monkeypatch.setattr(live, "time_inference", lambda *a, **k: p90_ms / 1000)
    got, got_backend, record = live.fit_live_model(files, backend, 2, "onnx", "cpu", 1)
    fit = record["live_model_fit"]
    # K=4 hops of 5.33 ms between inferences: 5 ms is a load of 0.23, 15 ms of 0.70 (> 0.5)
    assert fit["load"] == pytest.approx(p90_ms / 21.333, abs=1e-3)
    assert (got.card_path.stem, got_backend.card.name) == (("live-lite", "vocex-live-lite") if falls_back
                                                           else ("live", "vocex-live-default"))
    assert ("fell_back_to" in fit) == falls_back
    assert ("using live-lite" in capsys.readouterr().err) == falls_back
    # at K=8 (twice the time between inferences) 15 ms fits
    got, _, _ = live.fit_live_model(files, backend, 2, "onnx", "cpu", 1, hop_batch=8)
    assert got.card_path.stem == "live"
