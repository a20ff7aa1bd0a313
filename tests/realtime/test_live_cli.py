"""vocex-live argument and model errors (no audio device needed)."""

import pytest

from vocex.realtime.live import main
from vocex.realtime.stats import Levels, LiveStats


@pytest.mark.parametrize("args,code,message", [
    (["--channels", "3"], 2, "--channels must be 1 or 2"),
    (["--mix", "1.5"], 2, "--mix must be between 0 and 1"),
    (["--model", "/nonexistent/model.json"], 3, "no such model"),
    (["--model", "live-window", "--hop-batch", "500"], 2, "K + L must be at most"),
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
                "device_latency_ms", "sample_rate", "model", "scheduling"):
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
