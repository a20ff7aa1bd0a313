"""vocex-bench memory: long WAVs written in blocks, a child's peak memory and time recorded."""

from __future__ import annotations

import json

import soundfile as sf

from vocex.bench.cli import main
from vocex.bench.memory import write_long_wav


def test_long_wav_is_written_in_blocks(tmp_path):
    n = write_long_wav(tmp_path / "a.wav", 0.25, sample_rate=8000)
    info = sf.info(str(tmp_path / "a.wav"))
    assert n == info.frames == 0.25 * 60 * 8000 and info.channels == 2 and info.subtype == "PCM_16"


def test_memory_subcommand_measures_a_child(tiny_model, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["memory", "--minutes", "0.05", "--model", str(tiny_model), "--tmp-dir", str(tmp_path),
                 "--json", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["exit_status"] == 0 and row["peak_rss_mib"] > 10 and row["minutes"] == 0.05
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # the WAVs and outputs are gone
    assert main(["memory", "--minutes", "0,1"]) == 2
