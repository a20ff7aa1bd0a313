"""vocex-separate on batches and long files: block-wise output equal to one whole-signal pass,
a bad input that does not stop the batch, --skip-existing, folder inputs, and outputs that
never appear half-written under their final names (Ctrl-C, SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import tone_mix
from tests.model.test_separate_stream import whole_signal
from vocex.model.backends import load_backend, resolve_model
from vocex.model.separate import Separator
from vocex.realtime.separate_cli import main


def _wav(path, audio, rate):
    sf.write(str(path), audio, rate, subtype="FLOAT")
    return path


def _read(path):
    return sf.read(str(path), always_2d=True, dtype="float32")[0]


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("vocex-separate: error:")]


def test_file_output_equals_the_whole_signal_at_awkward_lengths(tiny_model, tmp_path):
    """Files whose length is one block, one sample past it, and a third of it."""
    rate = 44100
    sep = Separator(load_backend(resolve_model(tiny_model), "onnx", "cpu", threads=1))
    block = sep.block_size(rate, 2)
    for n in (block, block + 1, block // 3, 2 * block + 1):
        x = tone_mix(n, rate, seed=n)
        src = _wav(tmp_path / f"n{n}.wav", x, rate)
        assert main([str(src), "-o", str(tmp_path / "o"), "--model", str(tiny_model), "--no-progress"]) == 0
        voc, acc = _read(tmp_path / "o" / src.stem / "vocals.wav"), _read(tmp_path / "o" / src.stem / "accompaniment.wav")
        assert voc.shape == x.shape
        np.testing.assert_allclose(voc, whole_signal(sep, x, rate), atol=1e-5, err_msg=f"n={n}")
        np.testing.assert_allclose(voc + acc, x, atol=1e-6)


def test_a_bad_input_does_not_stop_the_batch_and_skip_existing_resumes(tiny_model, tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    good = _wav(tmp_path / "good.wav", tone_mix(9000, 8000), 8000)
    out = tmp_path / "out"
    args = [str(bad), str(good), "-o", str(out), "--model", str(tiny_model), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    errors = _errors(err)
    assert len(errors) == 1 and "bad.wav" in errors[0] and "Traceback" not in err
    assert "1 done, 0 skipped, 1 failed" in err
    voc = out / "good" / "vocals.wav"
    assert _read(voc).shape == (9000, 2) and (out / "good" / "accompaniment.wav").exists()
    assert not (out / "bad").exists()
    before = (voc.stat().st_ino, voc.stat().st_mtime_ns)
    assert main(args + ["--skip-existing"]) == 2
    err = capsys.readouterr().err
    assert len(_errors(err)) == 1 and "bad.wav" in _errors(err)[0]
    assert "0 done, 1 skipped, 1 failed" in err
    assert (voc.stat().st_ino, voc.stat().st_mtime_ns) == before  # not redone
    assert main(args) == 4  # without --skip-existing or --force the outputs are refused
    assert "--skip-existing" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse: not both
        main(args + ["--force", "--skip-existing"])
    assert exc.value.code == 2


def test_skip_existing_redoes_incomplete_outputs_and_keeps_foreign_files(tiny_model, tmp_path, capsys):
    a = _wav(tmp_path / "a.wav", tone_mix(5000, 8000), 8000)
    b = _wav(tmp_path / "b.wav", tone_mix(6000, 8000, seed=1), 8000)
    out = tmp_path / "out"
    base = ["-o", str(out), "--model", str(tiny_model), "--no-progress", "--skip-existing"]
    assert main([str(a), str(b)] + base) == 0
    (out / "a" / "vocals.wav").unlink()  # as if a run stopped between the two renames
    (out / "b" / "vocals.wav").write_bytes(b"the user's own file")
    capsys.readouterr()
    assert main([str(a), str(b)] + base) == 2
    err = capsys.readouterr().err
    assert _read(out / "a" / "vocals.wav").shape == (5000, 2)
    assert len(_errors(err)) == 1 and "not a complete output" in _errors(err)[0] and "b.wav" in _errors(err)[0]
    assert (out / "b" / "vocals.wav").read_bytes() == b"the user's own file"
    assert "1 done, 0 skipped, 1 failed" in err
    # a cut-off output (its header promises more than the file holds) is not complete either
    acc = out / "a" / "accompaniment.wav"
    acc.write_bytes(acc.read_bytes()[:-400])
    assert main([str(a)] + base) == 2 and "not a complete output" in capsys.readouterr().err


def test_folder_inputs_flat_and_recursive(tiny_model, tmp_path, capsys):
    music = tmp_path / "music"
    (music / "album").mkdir(parents=True)
    _wav(music / "one.wav", tone_mix(4000, 8000), 8000)
    sf.write(str(music / "album" / "two.flac"), tone_mix(4100, 8000), 8000)
    (music / "notes.txt").write_text("not audio, not taken")
    out = music / "separated"  # inside the input folder: its outputs are never taken as inputs
    base = [str(music), "-o", str(out), "--model", str(tiny_model), "--no-progress"]
    assert main(base) == 0
    assert _read(out / "one" / "vocals.wav").shape == (4000, 2) and not (out / "album").exists()
    assert main(base + ["-r", "--skip-existing"]) == 0
    assert _read(out / "album" / "two" / "vocals.wav").shape == (4100, 2)
    assert "1 done, 1 skipped, 0 failed" in capsys.readouterr().err
    assert main(base + ["-r", "--skip-existing"]) == 0  # the outputs under music/separated are not inputs
    assert "0 done, 2 skipped, 0 failed" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty), "-o", str(tmp_path / "o2"), "--model", str(tiny_model)]) == 2
    assert "no audio files" in capsys.readouterr().err


def test_ctrl_c_mid_file_leaves_nothing(tiny_model, tmp_path, capsys, monkeypatch):
    from vocex.model import audio

    x = tone_mix(60000, 8000)
    src = _wav(tmp_path / "long.wav", x, 8000)
    writes = []
    real_write = audio.AudioWriter.write

    def interrupt_on_third(self, block):
        writes.append(block.shape[0])
        if len(writes) == 3:
            raise KeyboardInterrupt
        real_write(self, block)

    monkeypatch.setattr(audio.AudioWriter, "write", interrupt_on_third)
    out = tmp_path / "out"
    assert main([str(src), "-o", str(out), "--model", str(tiny_model), "--no-progress"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not out.exists() or [p for p in out.rglob("*") if p.is_file()] == []


@pytest.mark.slow
def test_sigkill_mid_file_leaves_no_output_and_skip_existing_finishes(tiny_model, tmp_path):
    rate, n = 44100, 44100 * 240
    x = tone_mix(n, rate)
    src = _wav(tmp_path / "long.wav", x, rate)
    out = tmp_path / "out"
    argv = [str(src), "-o", str(out), "--model", str(tiny_model), "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "vocex.realtime.separate_cli", *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = out / "long"
    temps: list = []
    deadline = time.monotonic() + 300  # a safety net against a hung child, not a timing assert
    while proc.poll() is None and time.monotonic() < deadline:
        temps = [p for p in folder.glob(".vocals.wav.*") if p.stat().st_size > 1 << 20] if folder.exists() else []
        if temps:
            break
        time.sleep(0.01)
    assert temps, "the child finished (or hung) before it had written 1 MiB"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (folder / "vocals.wav").exists() and not (folder / "accompaniment.wav").exists()
    assert main(argv + ["--skip-existing"]) == 0
    assert _read(folder / "vocals.wav").shape == x.shape
    assert sorted(p.name for p in folder.iterdir()) == ["accompaniment.wav", "vocals.wav"]  # temporaries gone
