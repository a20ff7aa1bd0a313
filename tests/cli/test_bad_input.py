"""Every command against bad input: one clear ``<prog>: error: ...`` line on stderr, no
traceback, the documented exit code, inputs untouched and no output left half-written.

Exit codes (README): 2 bad input, 3 model problem, 4 output problem, 5 audio device problem.
Real-device cases (a rate the JACK server rejects, a server killed mid-stream) are in
tests/realtime/test_live_jack.py; good-but-unusual audio (one sample, 6 and 8 channels,
8 kHz and 192 kHz, full-scale clipped) is separated for real at the end of this file."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import tone_mix
from tests.train.conftest import make_musdb_hq

PROGS = {}


def _main(prog: str):
    if not PROGS:
        from vocex.bench.cli import main as bench
        from vocex.model.export import main as export
        from vocex.realtime.live import main as live
        from vocex.realtime.separate_cli import main as separate
        from vocex.train.evaluate import main as evaluate
        from vocex.train.train import main as train

        PROGS.update({"vocex-separate": separate, "vocex-eval": evaluate, "vocex-train": train,
                      "vocex-export": export, "vocex-live": live, "vocex-bench": bench})
    return PROGS[prog]


def _wav(path: Path, audio: np.ndarray, rate: int = 8000, subtype: str = "FLOAT") -> Path:
    sf.write(str(path), audio, rate, subtype=subtype)
    return path


@pytest.fixture(scope="module")
def bad(tmp_path_factory, tiny_model) -> dict[str, Path]:
    """A folder of bad inputs, bad models and a small MUSDB-layout folder."""
    root = tmp_path_factory.mktemp("bad")
    good = _wav(root / "good.wav", tone_mix(8000, 8000))
    files = {"root": root, "good": good, "model": tiny_model}
    files["missing"] = root / "missing.wav"
    files["dir"] = root / "folder.wav"
    files["dir"].mkdir()
    files["text"] = root / "text.wav"
    files["text"].write_text("not audio at all\n" * 50)
    files["truncated"] = root / "truncated.wav"
    files["truncated"].write_bytes(good.read_bytes()[:2000])
    files["header_only"] = root / "header.wav"
    files["header_only"].write_bytes(good.read_bytes()[:30])
    files["empty"] = _wav(root / "empty.wav", np.zeros((0, 2), np.float32))
    x = tone_mix(8000, 8000)
    x[100, 0], x[200, 1] = np.nan, np.inf
    files["nan"] = _wav(root / "nan.wav", x)
    # models: missing, truncated weights, card that does not match its weights, broken JSON
    models = root / "models"
    models.mkdir()
    card = json.loads(tiny_model.read_text())
    for name in card["files"].values():
        shutil.copy(tiny_model.parent / name, models / name)
    files["model_missing"] = models / "nope.json"
    onnx = card["files"]["onnx"]
    (models / "cut.onnx").write_bytes((tiny_model.parent / onnx).read_bytes()[:3000])
    (models / "cut.json").write_text(json.dumps({**card, "files": {**card["files"], "onnx": "cut.onnx"}}))
    files["model_truncated"] = models / "cut.json"
    (models / "other.json").write_text(json.dumps({**card, "context_frames": card["context_frames"] * 2}))
    files["model_mismatched"] = models / "other.json"
    (models / "broken.json").write_text("{ not json")
    files["model_broken"] = models / "broken.json"
    files["musdb"] = make_musdb_hq(root / "musdb", seconds=2.0)
    files["exists_json"] = root / "exists.json"
    files["exists_json"].write_text("{}\n")
    return files


def _digest(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _check(prog: str, argv: list[str], code: int, message: str, capsys, watch: Path) -> str:
    before = _digest(watch)
    got = _main(prog)(argv)
    err = capsys.readouterr().err
    lines = [line.split("\r")[-1].strip() for line in err.splitlines()]
    errors = [line for line in lines if line.startswith(f"{prog}: error:")]
    assert "Traceback" not in err, err
    assert len(errors) == 1 and message in errors[0], err
    assert got == code, err
    assert _digest(watch) == before, "an input was modified"
    return errors[0]


S = "vocex-separate"
SEPARATE_CASES = {
    "missing file": ("missing", 2, "no such file"),
    "a directory": ("dir", 2, "is a directory"),
    "not audio": ("text", 2, "not a readable audio file"),
    "truncated": ("truncated", 2, "truncated or corrupt"),
    "header only": ("header_only", 2, "not a readable audio file"),
    "zero length": ("empty", 2, "no audio samples"),
    "NaN and Inf samples": ("nan", 2, "NaN or infinite"),
}


@pytest.mark.parametrize("case", sorted(SEPARATE_CASES))
def test_separate_bad_audio(bad, tmp_path, capsys, case):
    key, code, message = SEPARATE_CASES[case]
    _check(S, [str(bad[key]), "-o", str(tmp_path / "out"), "--model", str(bad["model"])], code, message,
           capsys, bad["root"])
    assert not (tmp_path / "out").exists()


def test_separate_high_band_is_offline_only(bad, tmp_path, capsys):
    _check(S, [str(bad["good"]), "-o", str(tmp_path / "out"), "--model", str(bad["model"]), "--streaming",
               "--high-band"], 2, "--high-band is for the offline path", capsys, bad["root"])
    assert not (tmp_path / "out").exists()


def test_separate_bad_temperature(bad, tmp_path, capsys):
    _check(S, [str(bad["good"]), "-o", str(tmp_path / "out"), "--model", str(bad["model"]), "--mask-temperature",
               "-1"], 2, "temperature must be positive", capsys, bad["root"])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("shifts", ["0", "100000"])
def test_separate_bad_shifts(bad, tmp_path, capsys, shifts):
    _check(S, [str(bad["good"]), "-o", str(tmp_path / "out"), "--model", str(bad["model"]), "--shifts", shifts],
           2, "shifts must be in 1..", capsys, bad["root"])
    assert not (tmp_path / "out").exists()


MODEL_CASES = {
    "missing model": ("model_missing", "no such model card"),
    "truncated model": ("model_truncated", "not a loadable ONNX model"),
    "mismatched card": ("model_mismatched", "does not match its card"),
    "broken card": ("model_broken", "unreadable"),
}


# vocex-export reads the card and the checkpoint only (it writes the ONNX file anew)
MODEL_COMMANDS = [(prog, case) for prog in ("vocex-separate", "vocex-eval", "vocex-live", "vocex-bench",
                                             "vocex-export") for case in sorted(MODEL_CASES)
                  if prog != "vocex-export" or case in ("missing model", "broken card")]


@pytest.mark.parametrize("prog,case", MODEL_COMMANDS)
def test_bad_model_every_command(bad, tmp_path, capsys, prog, case):
    key, message = MODEL_CASES[case]
    model = str(bad[key])
    argv = {
        "vocex-separate": [str(bad["good"]), "-o", str(tmp_path / "o"), "--model", model],
        "vocex-eval": ["--musdb-root", str(bad["musdb"]), "--json", str(tmp_path / "e.json"), "--model", model],
        "vocex-live": ["--model", model, "--duration", "1"],
        "vocex-bench": ["compute", "--model", model, "--iterations", "2"],
        "vocex-export": [model, "-o", str(tmp_path / "x")],
    }[prog]
    _check(prog, argv, 3, message, capsys, bad["root"])
    assert not any(tmp_path.iterdir())


def test_separate_existing_output_is_kept(bad, tmp_path, capsys):
    out = tmp_path / "out" / "good"
    out.mkdir(parents=True)
    (out / "vocals.wav").write_bytes(b"the user's own file")
    _check(S, [str(bad["good"]), "-o", str(tmp_path / "out"), "--model", str(bad["model"])], 4,
           "exists; use --force", capsys, tmp_path)
    assert (out / "vocals.wav").read_bytes() == b"the user's own file"


def test_output_under_a_file_is_refused_before_work(bad, tmp_path, capsys):
    _check(S, [str(bad["good"]), "-o", str(bad["good"] / "sub"), "--model", str(bad["model"])], 4,
           "Not a directory", capsys, bad["root"])


@pytest.fixture
def mount(tmp_path):
    """A tiny tmpfs of our own (root only): ``mount("ro")`` or ``mount("size=48k")``."""
    mounted = []

    def make(options: str) -> Path:
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a tmpfs needs root (CI runs as root)")
        target = tmp_path / f"mnt{len(mounted)}"
        target.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
        if proc.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
        mounted.append(target)
        return target

    yield make
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_read_only_output_is_refused_before_work(bad, capsys, mount):
    ro = mount("ro,size=64k")
    _check(S, [str(bad["good"]), "-o", str(ro / "out"), "--model", str(bad["model"])], 4,
           "Read-only file system", capsys, bad["root"])


def test_full_disk_leaves_nothing_half_written(bad, tmp_path, capsys, mount):
    full = mount("size=48k")
    long = _wav(tmp_path / "long.wav", tone_mix(8000 * 4, 8000))  # 4 s: 128 kB of float output
    _check(S, [str(long), "-o", str(full), "--model", str(bad["model"]), "--no-progress"], 4,
           "No space left on device", capsys, tmp_path)
    leftovers = [p.name for p in full.rglob("*") if p.is_file()]
    assert leftovers == [], leftovers  # no temporary file and no partial vocals.wav


EVAL_CASES = {
    "missing root": (lambda b, t: ["--musdb-root", str(t / "nope")], 2, "not a directory"),
    "file as root": (lambda b, t: ["--musdb-root", str(b["good"])], 2, "not a directory"),
    "empty folder": (lambda b, t: ["--musdb-root", str(t)], 2, "neither a MUSDB18"),
    "bad K": (lambda b, t: ["--musdb-root", str(b["musdb"]), "--streaming", "--hop-batch", "0"], 2, "hop batch K"),
    "bad shifts": (lambda b, t: ["--musdb-root", str(b["musdb"]), "--shifts", "0"], 2, "shifts must be in 1.."),
    "bad temperature": (lambda b, t: ["--musdb-root", str(b["musdb"]), "--mask-temperature", "0"], 2,
                        "temperature must be positive"),
    "high band streaming": (lambda b, t: ["--musdb-root", str(b["musdb"]), "--streaming", "--high-band"], 2,
                            "--high-band is for the offline path"),
    "json exists": (lambda b, t: ["--musdb-root", str(b["musdb"]), "--json", str(b["exists_json"])], 4, "exists"),
    "no json folder": (lambda b, t: ["--musdb-root", str(b["musdb"]), "--json", str(t / "no" / "e.json")], 4,
                       "does not exist"),
}


@pytest.mark.parametrize("case", sorted(EVAL_CASES))
def test_eval_bad_input(bad, tmp_path, capsys, case):
    make, code, message = EVAL_CASES[case]
    argv = make(bad, tmp_path)
    if "--json" not in argv:
        argv += ["--json", str(tmp_path / "e.json")]
    _check("vocex-eval", [*argv, "--model", str(bad["model"])], code, message, capsys, bad["root"])


def test_eval_unreadable_song(bad, tmp_path, capsys):
    root = make_musdb_hq(tmp_path / "db", seconds=1.0)
    song = next((root / "test").iterdir())
    (song / "mixture.wav").write_text("garbage")
    _check("vocex-eval", ["--musdb-root", str(root), "--json", str(tmp_path / "e.json"), "--model",
                          str(bad["model"]), "--no-baselines"], 2, "not a readable audio file", capsys, bad["root"])
    assert not (tmp_path / "e.json").exists()


TRAIN_CASES = {
    "no data": (lambda b, t: [], 2, "no training data"),
    "missing root": (lambda b, t: ["--musdb-root", str(t / "nope")], 2, "not a directory"),
    "file as shared root": (lambda b, t: ["--shared-root", str(b["good"])], 2, "not a directory"),
    "zero steps": (lambda b, t: ["--musdb-root", str(b["musdb"]), "--steps", "0"], 2, "--steps must be"),
    "random context above 1": (lambda b, t: ["--musdb-root", str(b["musdb"]), "--random-context", "1.5"], 2,
                               "share of patches, 0 to 1"),
    "truncated init": (lambda b, t: ["--musdb-root", str(b["musdb"]), "--init", str(b["truncated"])], 3,
                       "not weights of this U-Net"),
    "missing init": (lambda b, t: ["--musdb-root", str(b["musdb"]), "--init", str(t / "no.pt")], 3,
                     "needs an existing weights file"),
    "out under a file": (lambda b, t: ["--musdb-root", str(b["musdb"]), "--out", str(b["good"] / "run")], 2,
                         "Not a directory"),
}


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_train_bad_input(bad, tmp_path, capsys, case):
    make, code, message = TRAIN_CASES[case]
    argv = make(bad, tmp_path)
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "run")]
    _check("vocex-train", [*argv, "--preset", "paper", "--steps", argv[argv.index("--steps") + 1]
                           if "--steps" in argv else "1"], code, message, capsys, bad["root"])


def test_export_bad_output(bad, tmp_path, capsys):
    _check("vocex-export", [str(bad["model"]), "-o", str(bad["good"])], 4, "exists and is not a folder",
           capsys, bad["root"])
    out = tmp_path / "x"
    out.mkdir()
    (out / "tiny.json").write_text("mine")
    _check("vocex-export", [str(bad["model"]), "-o", str(out), "--name", "tiny"], 4, "exists; use --force",
           capsys, bad["root"])
    assert (out / "tiny.json").read_text() == "mine"


LIVE_CASES = {
    "unknown device id": (["-d", "9999"], 5, "no audio device 9999"),
    "unknown device name": (["-d", "no-such-device-anywhere"], 5, "no input device matches"),
    "mix out of range": (["--mix", "1.5"], 2, "--mix must be between 0 and 1"),
    "six channels": (["--channels", "6"], 2, "--channels must be 1 or 2"),
    "bad latency": (["--latency", "soon"], 5, "--latency must be"),
    "bad K": (["--hop-batch", "0"], 2, "hop batch K"),
    "K not a number": (["--hop-batch", "fast"], 2, "whole number of hops or 'auto'"),
}


@pytest.mark.parametrize("case", sorted(LIVE_CASES))
def test_live_user_mistakes(bad, tmp_path, capsys, case):
    argv, code, message = LIVE_CASES[case]
    _check("vocex-live", [*argv, "--duration", "1", "--stats-json", str(tmp_path / "s.json")], code, message,
           capsys, bad["root"])


BENCH_CASES = {
    "soak song missing": (lambda b, t: ["soak", "--song", str(t / "none.wav"), "--minutes", "0.01"], None,
                          "no such file"),
    "soak song not audio": (lambda b, t: ["soak", "--song", str(b["text"]), "--minutes", "0.01"], None,
                            "not a readable audio file"),
    "json exists": (lambda b, t: ["compute", "--json", str(b["exists_json"])], 4, "exists"),
    "no json folder": (lambda b, t: ["compute", "--json", str(t / "no" / "c.json")], 4, "does not exist"),
}


@pytest.mark.parametrize("case", sorted(BENCH_CASES))
def test_bench_bad_input(bad, tmp_path, capsys, case):
    make, code, message = BENCH_CASES[case]
    if code is None:  # soak checks for JACK first (exit 5) and then the song (exit 2)
        code = 5 if shutil.which("jackd") is None else 2
        if code == 5:
            message = "needs a JACK server"
    _check("vocex-bench", make(bad, tmp_path), code, message, capsys, bad["root"])


@pytest.mark.parametrize("shape", [(1, 2, 44100), (4000, 6, 44100), (4000, 8, 48000), (8000, 1, 8000),
                                   (192000 // 4, 2, 192000), ("clipped", 2, 44100)])
def test_unusual_but_valid_audio_is_separated(bad, tmp_path, shape):
    n, ch, rate = shape
    if n == "clipped":  # full-scale square wave in 16-bit PCM
        x = np.sign(np.sin(2 * np.pi * 200 * np.arange(rate) / rate))[:, None].repeat(ch, 1).astype(np.float32)
        src = _wav(tmp_path / "in.wav", x, rate, "PCM_16")
    else:
        x = tone_mix(n, rate, ch) if n > 1 else np.full((1, ch), 0.5, np.float32)
        src = _wav(tmp_path / "in.wav", x, rate)
    assert _main(S)([str(src), "-o", str(tmp_path / "o"), "--model", str(bad["model"]), "--no-progress"]) == 0
    x_read, _ = sf.read(str(src), dtype="float32", always_2d=True)
    voc, r1 = sf.read(str(tmp_path / "o" / "in" / "vocals.wav"), dtype="float32", always_2d=True)
    acc, r2 = sf.read(str(tmp_path / "o" / "in" / "accompaniment.wav"), dtype="float32", always_2d=True)
    assert r1 == r2 == rate and voc.shape == acc.shape == x_read.shape
    assert np.isfinite(voc).all() and np.isfinite(acc).all()
    np.testing.assert_allclose(voc + acc, x_read, atol=1e-5)
