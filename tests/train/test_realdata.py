"""Readers of the real material (MIR-1K, SSVD, GTSinger, Bach10), the validation hold-out and
the validation set, on small made-up files laid out like ``../shared/data``."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vocex.train.data import (Corpus, DataError, HoldOut, PatchSampler, add_shared, bach10_excerpt, gtsinger_group,
                              mir1k_clips, source_of)
from vocex.train.valset import build, main as valset_main, song_parts
from vocex.model.card import FrontEnd

FE = FrontEnd(8000, 128, 32, "sqrt_hann")
SINGERS = ("amy", "bobon", "leon", "titon", "yifen", "zed", "ani", "bug")


def _tone(rate: int, seconds: float, f0: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    x = 0.2 * np.sin(2 * np.pi * f0 * t)
    return np.stack([x * (1 + 0.1 * c) for c in range(channels)], axis=1).astype(np.float32)


def _ogg(path: Path, audio: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, rate, format="OGG", subtype="VORBIS")


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shared")
    for i, singer in enumerate(SINGERS):
        for k in range(3):
            acc, voc = _tone(16000, 2.0, 110 + 10 * k)[:, 0], _tone(16000, 2.0, 300 + 20 * i)[:, 0]
            _ogg(root / "pairs" / "mir1k-full" / f"{singer}_1_0{k + 1}.ogg", np.stack([acc, voc], axis=1), 16000)
    # pairs/mir1k holds one of the same clips again (as wav): it must count once
    full, rate = sf.read(str(root / "pairs" / "mir1k-full" / "amy_1_01.ogg"), dtype="float32")
    (root / "pairs" / "mir1k").mkdir(parents=True)
    sf.write(str(root / "pairs" / "mir1k" / "amy_1_01.wav"), full, rate)
    for split, ids in (("trainvalid", ("11", "12", "13", "1150")), ("test", ("21", "22", "1150"))):
        for rid in ids:
            _ogg(root / "voice" / "ssvd" / split / f"{rid}.ogg", _tone(32000, 3.0, 250 + int(rid) % 97), 32000)
    for lang in ("fr", "it", "jp", "zh"):
        for tech in ("Control", "Vibrato"):
            _ogg(root / "voice" / "gtsinger" / f"{lang}01_{tech}.ogg", _tone(48000, 2.0, 330), 48000)
    _ogg(root / "voice" / "gtsinger" / "EN-Alto-1-Breathy-Control.ogg", _tone(48000, 2.0, 350), 48000)
    for group, prefix in (("Group01-P2H", "P2"), ("Group02-P3H", "P3")):
        for k in range(1, 7):
            _ogg(root / "instrumental" / "bach10-ass" / "Mixtures" / group / f"{prefix}_Mix{k:02d}.ogg",
                 _tone(44100, 3.0, 196 + 20 * k), 44100)
    song = root / "musdb18hq-mini" / "test" / "Some Band - Song"
    song.mkdir(parents=True)
    mix = _tone(44100, 4.0, 220, 2) + _tone(44100, 4.0, 440, 2)
    sf.write(str(song / "mixture.wav"), mix, 44100)
    sf.write(str(song / "vocals.wav"), _tone(44100, 4.0, 440, 2), 44100)
    return root


def test_names_of_singers_groups_and_excerpts():
    assert gtsinger_group(Path("fr01_Breathy.ogg")) == "fr"
    assert gtsinger_group(Path("zh01_breathy.ogg")) == "zh"
    assert gtsinger_group(Path("ge_Control.ogg")) == "ge"
    assert gtsinger_group(Path("EN-Alto-2-Breathy-Control.ogg")) == "en"
    assert bach10_excerpt(Path("PER3_Mix11.ogg")) == 11
    with pytest.raises(DataError, match="Bach10"):
        bach10_excerpt(Path("P2_Mix.ogg"))
    assert source_of("mir1k/amy_1_01[1]") == "mir1k" and source_of("Alpha - One[0]") == ""


def test_hold_out_is_fixed_and_never_takes_trained_singers(shared):
    held = HoldOut.of(shared)
    assert held == HoldOut.of(shared)  # seeded
    assert "amy" not in held.mir1k_singers  # pairs/mir1k's singer was trained on before
    assert len(held.mir1k_singers) == 3 and set(held.mir1k_singers) <= set(SINGERS)
    assert len(held.gtsinger_groups) == 2 and set(held.gtsinger_groups) <= {"fr", "it", "jp", "zh", "en"}
    assert len(held.bach10_excerpts) == 3 and set(held.bach10_excerpts) <= set(range(1, 7))
    assert held != HoldOut.of(shared, seed=1)


def test_training_material_excludes_the_held_out_and_counts_duplicates_once(shared):
    held = HoldOut.of(shared)
    corpus = Corpus(8000)
    counts = add_shared(corpus, shared)
    # eight singers x three clips, the pairs/mir1k copy counted once, three singers held out
    assert counts["mir1k"] == 5 * 3
    assert len(mir1k_clips(shared, held)) + len(mir1k_clips(shared, held, validation=True)) == 24
    # SSVD: recording 1150 is in both splits, both splits are training material
    assert len(held.ssvd_recordings) == 3 and counts["ssvd"] == 6 - 3
    assert counts["gtsinger"] == 9 - sum(2 if g != "en" else 1 for g in held.gtsinger_groups)
    assert counts["bach10"] == 2 * (6 - 3)
    names = {n.split("[")[0] for n, *_ in corpus.pairs + corpus.vocals + corpus.accompaniments}
    for singer in held.mir1k_singers:
        assert not any(n.startswith(f"mir1k/{singer}_") for n in names)
    for rid in held.ssvd_recordings:
        assert f"ssvd/{rid}" not in names
    for n in names:
        if n.startswith("bach10/"):
            assert bach10_excerpt(Path(n)) not in held.bach10_excerpts
        if n.startswith("gtsinger/"):
            assert gtsinger_group(Path(n)) not in held.gtsinger_groups


def test_mir1k_channels_are_accompaniment_left_singing_right(shared):
    corpus = Corpus(16000)
    add_shared(corpus, shared)
    clip = next(p for p in mir1k_clips(shared, HoldOut.of(shared)))
    audio, _ = sf.read(str(clip), dtype="float32")
    name, vocals, accompaniment = next(p for p in corpus.pairs if p[0].startswith(f"mir1k/{clip.stem}"))
    np.testing.assert_allclose(vocals, audio[:, 1], atol=1e-4)
    np.testing.assert_allclose(accompaniment, audio[:, 0], atol=1e-4)


def test_source_weights_draw_by_source(shared):
    corpus = Corpus(8000)
    add_shared(corpus, shared)
    sampler = PatchSampler(corpus, FE, 64, 32, seed=0, source_weights={"mir1k": 0, "ssvd": 3})
    c = sampler.corpus
    assert not any(source_of(n) == "mir1k" for n, *_ in c.pairs + c.vocals + c.accompaniments)
    p, sources = c.probabilities["vocals"], [source_of(n) for n, _ in c.vocals]
    ssvd, other = p[sources.index("ssvd")], p[sources.index("gtsinger")]
    assert ssvd == pytest.approx(3 * other)
    picks = [source_of(c.vocals[sampler._pick("vocals")][0]) for _ in range(400)]
    share = picks.count("ssvd") / len(picks)
    expected = sum(p[i] for i, s in enumerate(sources) if s == "ssvd")
    assert abs(share - expected) < 0.1
    with pytest.raises(DataError, match="no material from nope"):
        PatchSampler(corpus, FE, 64, 32, seed=0, source_weights={"nope": 1})
    with pytest.raises(DataError, match="0 or more"):
        PatchSampler(corpus, FE, 64, 32, seed=0, source_weights={"ssvd": -1})


def test_validation_set_is_held_out_material_only_and_reproducible(shared, tmp_path):
    manifest = build(shared, tmp_path / "a", seconds=5.0)
    build(shared, tmp_path / "b", seconds=5.0)
    held = HoldOut.of(shared)
    parts = song_parts(tmp_path / "a")
    assert sorted(set(parts.values())) == ["mir1k", "musdb", "solo"]
    assert manifest["held_out"]["mir1k_singers"] == list(held.mir1k_singers)
    for song in manifest["songs"]:
        folder = tmp_path / "a" / "test" / song["name"]
        mix, rate = sf.read(str(folder / "mixture.wav"), dtype="float32", always_2d=True)
        voc, _ = sf.read(str(folder / "vocals.wav"), dtype="float32", always_2d=True)
        again, _ = sf.read(str(tmp_path / "b" / "test" / song["name"] / "mixture.wav"), dtype="float32", always_2d=True)
        np.testing.assert_array_equal(mix, again)
        assert mix.shape == voc.shape and np.abs(voc).max() > 0
        for source in song["from"]:
            stem = Path(source).name
            if song["part"] == "mir1k":
                assert stem.split("_")[0] in held.mir1k_singers
            if source.startswith("ssvd/"):
                assert stem in held.ssvd_recordings
            if source.startswith("bach10/"):
                assert bach10_excerpt(Path(stem)) in held.bach10_excerpts
    assert json.loads((tmp_path / "a" / "valset.json").read_text())["songs"] == manifest["songs"]


def test_valset_command_refuses_an_existing_folder(shared, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    assert valset_main(["--shared-root", str(shared), "--out", str(tmp_path / "out")]) == 4
    assert "exists" in capsys.readouterr().err
    assert valset_main(["--shared-root", str(tmp_path / "nothing"), "--out", str(tmp_path / "new")]) == 2
    assert not (tmp_path / "new").exists()
