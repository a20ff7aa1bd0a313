import numpy as np
import pytest

from vocex.model.card import FrontEnd
from vocex.train.data import (Corpus, DataError, HoldOut, PatchSampler, add_musdb_like, add_shared, detect_layout,
                              iter_tracks, mir1k_clips)
from tests.conftest import SHARED_DATA, needs_shared_data

FE = FrontEnd(8000, 128, 32, "sqrt_hann")


def test_musdb_hq_reader(musdb_hq):
    assert detect_layout(musdb_hq) == "musdb-hq"
    train = list(iter_tracks(musdb_hq, "train"))
    test = list(iter_tracks(musdb_hq, "test"))
    assert [t.name for t in train] == ["Alpha - One", "Beta - Two"]
    assert [t.name for t in test] == ["Delta - Four", "Gamma - Three"]
    t = train[0]
    assert t.mixture.shape == t.vocals.shape == (24000, 2) and t.sample_rate == 8000
    assert np.abs(t.accompaniment + t.vocals - t.mixture).max() < 1e-6


def test_dsd100_reader_and_resampling(dsd100):
    assert detect_layout(dsd100) == "dsd100"
    (train,) = iter_tracks(dsd100, "train", sample_rate=4000)
    (test,) = iter_tracks(dsd100, "test")
    assert train.name == "001 - A" and test.name == "002 - B"
    assert train.sample_rate == 4000 and train.mixture.shape == (12000, 2)


def test_bad_roots(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        detect_layout(tmp_path / "missing")
    with pytest.raises(DataError, match="neither"):
        detect_layout(tmp_path)
    with pytest.raises(DataError, match="subset"):
        list(iter_tracks(tmp_path, "valid"))


def test_training_reads_only_training_songs(musdb_hq):
    corpus = Corpus(8000)
    assert add_musdb_like(corpus, musdb_hq) == 2
    names = {n.split("[")[0] for n, _, _ in corpus.pairs}
    assert names == {"Alpha - One", "Beta - Two"}
    assert len(corpus.pairs) == 4  # two songs x two channels


def test_patch_sampler_shapes_and_random_mix(musdb_hq):
    corpus = Corpus(8000)
    add_musdb_like(corpus, musdb_hq)
    corpus.vocals.append(("short-voice", np.ones(100, np.float32) * 0.1))  # shorter than a patch
    sampler = PatchSampler(corpus, FE, n_bins=64, context_frames=64, seed=0, p_pair=0.5)
    mix, voc = sampler.batch(6)
    assert mix.shape == voc.shape == (6, 1, 64, 64) and mix.dtype == np.float32
    assert np.all(mix >= 0) and np.all(voc >= 0)
    again = PatchSampler(corpus, FE, n_bins=64, context_frames=64, seed=0, p_pair=0.5).batch(6)
    np.testing.assert_array_equal(again[0], mix)  # seeded


def test_patch_magnitudes_are_the_mixture_of_the_stems():
    corpus = Corpus(8000)
    rng = np.random.default_rng(0)
    corpus.add_pair("x", rng.standard_normal((20000, 1)).astype(np.float32), rng.standard_normal((20000, 1)).astype(np.float32))
    sampler = PatchSampler(corpus, FE, 64, 64, seed=1, p_silent=0.0, random_mix=False)
    v, a = sampler.segment_pair()
    mix, voc = sampler.magnitudes(v, a)
    mix_only, _ = sampler.magnitudes(v + a, np.zeros_like(v))
    np.testing.assert_allclose(mix, mix_only, rtol=1e-5, atol=1e-5)
    assert voc.sum() > 0


def test_split_is_deterministic_and_disjoint(musdb_hq):
    corpus = Corpus(8000)
    add_musdb_like(corpus, musdb_hq)
    train, val = corpus.split(0.5)
    t = {n for n, _, _ in train.pairs}
    v = {n for n, _, _ in val.pairs}
    assert not t & v and t | v == {n for n, _, _ in corpus.pairs}


@needs_shared_data()
def test_shared_material_reader_skips_test_songs():
    corpus = Corpus(8192)
    counts = add_shared(corpus, SHARED_DATA)
    held = HoldOut.of(SHARED_DATA)
    # every MIR-1K clip once (pairs/mir1k's five are among pairs/mir1k-full's), the held-out singers' left out
    assert counts["mir1k"] == len(mir1k_clips(SHARED_DATA, held)) and counts["mir1k"] > 500
    assert counts["musdb18hq-mini/train"] == 1
    assert counts["musdb-train-excerpt-8k"] >= 50 and counts["voice"] >= 5 and counts["instrumental"] >= 5
    assert counts["ssvd"] >= 100 and counts["gtsinger"] >= 50 and counts["bach10"] >= 20
    names = " ".join(n for n, _ in corpus.vocals + corpus.accompaniments)
    for singer in held.mir1k_singers:
        assert f"mir1k/{singer}_" not in names
    for test_song in ("AM Contra", "Al James", "Angels In Amplifiers"):
        assert test_song not in names
