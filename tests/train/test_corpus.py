import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.train.conftest import make_musdb_hq
from vocex.train import corpus as corpus_mod
from vocex.train.corpus import SOUNDFONT, STEMS, CorpusConfig, Singer, build, main, pitch_time, place, sing_phrase
from vocex.train.data import Corpus, add_musdb_like, iter_tracks

HAS_RENDER = (
    shutil.which("fluidsynth") is not None
    and SOUNDFONT.is_file()
    and all(importlib.util.find_spec(m) is not None for m in ("music21", "mido"))
)
needs_render = pytest.mark.skipif(
    not HAS_RENDER, reason="rendered source needs fluidsynth + fluid-soundfont-gm (apt) and music21, mido (vocex[data])"
)
HAS_SING = shutil.which("espeak-ng") is not None and importlib.util.find_spec("parselmouth") is not None
needs_sing = pytest.mark.skipif(
    not HAS_SING, reason="sung source needs espeak-ng (apt) and praat-parselmouth (vocex[data])"
)


def _tone(rate: int, seconds: float, f0: float, seed: int, vibrato: float = 0.03) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    phase = 2 * np.pi * f0 * (t + vibrato / (2 * np.pi * 5) * np.sin(2 * np.pi * 5 * t))
    x = sum(np.sin(k * phase) / k for k in range(1, 5)) * 0.2 + 0.005 * rng.standard_normal(len(t))
    return x.astype(np.float32)


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """A tiny folder laid out like ../shared/data; its test songs are unreadable on purpose."""
    root = tmp_path / "shared"
    (root / "voice").mkdir(parents=True)
    sf.write(str(root / "voice" / "singing.wav"), _tone(22050, 3.0, 220, 1), 22050)
    sf.write(str(root / "voice" / "speech-male.wav"), _tone(16000, 2.0, 120, 2, 0.2), 16000)
    (root / "instrumental").mkdir()
    sf.write(str(root / "instrumental" / "organ.wav"), _tone(44100, 4.0, 110, 3, 0.0), 44100)
    (root / "pairs" / "mir1k").mkdir(parents=True)
    sf.write(str(root / "pairs" / "mir1k" / "clip.wav"),
             np.stack([_tone(16000, 2.0, 98, 4, 0.0), _tone(16000, 2.0, 330, 5)], axis=1), 16000)
    ex = root / "pairs" / "musdb-train-excerpt-8k"
    (ex / "mix").mkdir(parents=True)
    (ex / "vocal").mkdir()
    vocal = _tone(8000, 2.0, 260, 6)
    sf.write(str(ex / "vocal" / "vocal0_1.wav"), vocal, 8000)
    sf.write(str(ex / "mix" / "mix0_1.wav"), vocal + _tone(8000, 2.0, 65, 7, 0.0), 8000)
    make_musdb_hq(root / "musdb18hq-mini", rate=8000, seconds=2.0)
    for song in (root / "musdb18hq-mini" / "test").iterdir():
        for wav in song.glob("*.wav"):
            wav.write_bytes(b"evaluation only: must never be read")
    return root


def _cfg(out: Path, shared: Path, sources: tuple[str, ...], **kw) -> CorpusConfig:
    return CorpusConfig(out=out, shared_root=shared, sources=sources, songs=2, seconds=3.0, seed=7, **kw)


def _read(folder: Path) -> dict[str, np.ndarray]:
    return {s: sf.read(str(folder / f"{s}.wav"), dtype="int16", always_2d=True)[0] for s in ("mixture",) + STEMS}


def _check_layout(out: Path, names: list[str]) -> None:
    assert sorted(p.name for p in (out / "train").iterdir()) == names
    for name in names:
        audio = _read(out / "train" / name)
        info = sf.info(str(out / "train" / name / "mixture.wav"))
        assert info.samplerate == 44100 and info.channels == 2 and info.frames == 3 * 44100
        total = sum(audio[s].astype(np.int32) for s in STEMS)
        np.testing.assert_array_equal(audio["mixture"].astype(np.int32), total)  # mixture == sum of stems
        assert np.abs(audio["vocals"]).max() > 0 and np.abs(audio["mixture"] - audio["vocals"]).max() > 0


def _spy_reads(monkeypatch) -> list[Path]:
    seen: list[Path] = []
    original = corpus_mod.load_audio

    def spy(path, rate):
        seen.append(Path(path))
        return original(path, rate)

    monkeypatch.setattr(corpus_mod, "load_audio", spy)
    return seen


def test_real_corpus_layout_determinism_and_reader(shared, tmp_path, monkeypatch):
    seen = _spy_reads(monkeypatch)
    out = tmp_path / "corpus"
    manifest = build(_cfg(out, shared, ("real",)), progress=False)
    _check_layout(out, ["real-000", "real-001"])
    assert seen and not any("test" in p.parts for p in seen)
    assert {p.parent.name for p in seen} >= {"voice", "instrumental", "mir1k", "mix", "vocal", "Alpha - One"}
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["seed"] == 7 and on_disk["seconds"] == {"real": 6.0} and len(on_disk["songs"]) == 2
    assert manifest["songs"] == on_disk["songs"]

    again = tmp_path / "again"
    build(_cfg(again, shared, ("real",)), progress=False)
    other_seed = tmp_path / "seed8"
    build(CorpusConfig(out=other_seed, shared_root=shared, sources=("real",), songs=2, seconds=3.0, seed=8), progress=False)
    for name in ("real-000", "real-001"):
        a, b, c = (_read(root / "train" / name) for root in (out, again, other_seed))
        for s in a:
            np.testing.assert_array_equal(a[s], b[s])
        assert not np.array_equal(a["vocals"], c["vocals"])

    tracks = list(iter_tracks(out, "train", sample_rate=8192))
    assert [t.name for t in tracks] == ["real-000", "real-001"]
    assert tracks[0].mixture.shape == tracks[0].vocals.shape == (3 * 8192, 2)
    assert add_musdb_like(Corpus(8192), out) == 2


@needs_render
def test_rendered_corpus(shared, tmp_path):
    def one(name: str, chorales: float) -> tuple[Path, dict]:
        cfg = CorpusConfig(out=tmp_path / name, shared_root=shared, sources=("rendered",), songs=1, seconds=3.0,
                           seed=7, chorale_fraction=chorales)
        return cfg.out, build(cfg, progress=False)

    pop, pop_manifest = one("pop", 0.0)
    chorale, chorale_manifest = one("chorale", 1.0)
    again, _ = one("chorale-again", 1.0)
    for out in (pop, chorale):
        _check_layout(out, ["rendered-000"])
        audio = _read(out / "train" / "rendered-000")
        assert np.abs(audio["bass"]).max() > 0 and np.abs(audio["other"]).max() > 0  # rendered stems
    assert pop_manifest["songs"][0]["accompaniment"]["kind"] == "pop"
    assert chorale_manifest["songs"][0]["accompaniment"]["kind"] == "chorale"
    assert "fluidsynth" in pop_manifest["tools"] and "music21" in chorale_manifest["tools"]
    a, b = _read(chorale / "train" / "rendered-000"), _read(again / "train" / "rendered-000")
    for s in a:
        np.testing.assert_array_equal(a[s], b[s])


@needs_sing
def test_sung_phrase_follows_the_notes(tmp_path):
    import parselmouth

    notes = [(0.0, 1.0, 60), (1.0, 1.0, 64), (2.0, 1.0, 67), (3.0, 2.0, 72)]  # C4 E4 G4 C5 at 120 bpm
    singer = Singer("en-us+f3", 140, 1.0, 5.5, 0.2, 66)
    audio = sing_phrase(notes, 120.0, singer, np.random.default_rng(0), tmp_path)
    assert audio.shape == (int(2.5 * 44100),) and audio.dtype == np.float32 and np.isfinite(audio).all()
    pitch = parselmouth.Sound(audio.astype(np.float64), 44100).to_pitch(time_step=0.01, pitch_floor=100, pitch_ceiling=800)
    f0, times = pitch.selected_array["frequency"], pitch.xs()
    for onset, length, midi in notes:
        a, b = onset * 0.5 + 0.1, (onset + length) * 0.5 - 0.05  # the note's steady part, seconds
        voiced = f0[(times > a) & (times < b) & (f0 > 0)]
        assert voiced.size >= 3, f"note {midi}: no voiced frames"
        sung = 69 + 12 * np.log2(np.median(voiced) / 440)
        assert abs(sung - midi) < 0.5, f"note {midi} sung at {sung:.2f}"


@needs_sing
@needs_render
def test_sung_corpus_needs_no_shared_material(tmp_path):
    def one(name: str, chorales: float) -> tuple[Path, dict]:
        cfg = CorpusConfig(out=tmp_path / name, shared_root=tmp_path / "no-shared-folder", sources=("sung",),
                           songs=1, seconds=3.0, seed=7, chorale_fraction=chorales)
        return cfg.out, build(cfg, progress=False)

    pop, pop_manifest = one("pop", 0.0)
    chorale, chorale_manifest = one("chorale", 1.0)
    again, _ = one("pop-again", 0.0)
    for out, manifest in ((pop, pop_manifest), (chorale, chorale_manifest)):
        _check_layout(out, ["sung-000"])
        assert manifest["songs"][0]["vocals"][0].startswith("espeak-ng ")
        assert "espeak-ng" in manifest["tools"] and "praat-parselmouth" in manifest["tools"]
    assert pop_manifest["songs"][0]["accompaniment"]["kind"] == "pop"
    assert chorale_manifest["songs"][0]["accompaniment"]["kind"] == "chorale"
    a, b = _read(pop / "train" / "sung-000"), _read(again / "train" / "sung-000")
    for s in a:
        np.testing.assert_array_equal(a[s], b[s])


def test_augmentation_shapes():
    rng = np.random.default_rng(0)
    x = _tone(44100, 1.0, 200, 0)
    assert pitch_time(x, 12.0).shape == (22050,)
    assert pitch_time(x[:, None], -12.0).shape == (88200, 1)
    stereo = place(x, rng, 1.0, 1.0)
    assert stereo.shape == (44100, 2) and stereo.dtype == np.float32 and stereo.flags.c_contiguous
    power = np.sum(stereo.astype(np.float64) ** 2) / np.sum(x.astype(np.float64) ** 2)
    assert 0.95 < power < 1.01  # constant-power pan


def _one_line_error(capsys, argv: list[str], code: int, needle: str) -> None:
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("vocex-data: error:") and "\n" not in err and needle in err, err


def test_bad_input_is_one_clear_line(shared, tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "c")
    _one_line_error(capsys, ["--out", out, "--shared-root", str(tmp_path / "missing"), "--sources", "real"], 2, "not a directory")
    _one_line_error(capsys, ["--out", out, "--shared-root", str(shared), "--sources", "real,humming"], 2, "unknown source 'humming'")
    _one_line_error(capsys, ["--out", out, "--shared-root", str(shared), "--songs", "0"], 2, "--songs")
    # evaluation material: neither read from nor written to
    _one_line_error(capsys, ["--out", out, "--shared-root", str(shared / "musdb18hq-mini" / "test"), "--sources", "real"],
                    2, "'test'")
    _one_line_error(capsys, ["--out", str(tmp_path / "test"), "--shared-root", str(shared), "--sources", "real"], 2, "'test'")
    _one_line_error(capsys, ["--out", str(shared / "mine"), "--shared-root", str(shared), "--sources", "real"], 2, "shared")
    assert not (tmp_path / "test").exists() and not (shared / "mine").exists()
    # a missing system package is named with its install command
    monkeypatch.setattr(corpus_mod.shutil, "which", lambda name: None)
    _one_line_error(capsys, ["--out", out, "--shared-root", str(shared), "--sources", "rendered"], 2,
                    "fluidsynth not found: apt-get install fluidsynth fluid-soundfont-gm")
    _one_line_error(capsys, ["--out", out, "--shared-root", str(shared), "--sources", "sung"], 2,
                    "espeak-ng not found: apt-get install espeak-ng")
    monkeypatch.undo()
    # an existing corpus is not overwritten without --force
    args = ["--out", out, "--shared-root", str(shared), "--sources", "real", "--songs", "1", "--seconds", "2", "--quiet"]
    assert main(args) == 0
    capsys.readouterr()
    _one_line_error(capsys, args, 4, "--force")
    assert main(args + ["--force"]) == 0


def test_shared_root_without_material(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _one_line_error(capsys, ["--out", str(tmp_path / "c"), "--shared-root", str(tmp_path / "empty"), "--sources", "real"],
                    2, "no vocal material")

