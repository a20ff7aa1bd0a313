"""The game-music reader (``--game-music``) on small made-up packages laid out as Debian
installs them: files found (ogg, opus, a pk3 archive), the middle excerpt, the voice screen and
its cache, and the errors when nothing is installed or nothing passes."""

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vocex.train import gamemusic
from vocex.train.data import Corpus, DataError, source_of
from vocex.train.gamemusic import add_game_music, installed_tracks, screen, vocal_share

RATE = 16000


def _ramp(seconds: float, channels: int = 2) -> np.ndarray:
    """A slow ramp: the excerpt's position shows in its values."""
    n = int(RATE * seconds)
    x = np.linspace(-0.5, 0.5, n, dtype=np.float32)
    return np.stack([x] * channels, axis=1)


@pytest.fixture()
def games(tmp_path: Path) -> Path:
    root = tmp_path / "games"
    music = root / "wesnoth" / "1.16" / "data" / "core" / "music"
    music.mkdir(parents=True)
    sf.write(str(music / "battle.ogg"), _ramp(3.0), RATE, format="OGG", subtype="VORBIS")
    (music / "notes.txt").write_text("not a track")
    album = root / "warzone2100" / "music" / "albums" / "legacy"
    album.mkdir(parents=True)
    tone = 0.2 * np.sin(2 * np.pi * 220 * np.arange(48000 * 2) / 48000).astype(np.float32)
    sf.write(str(album / "track5.opus"), np.stack([tone, tone], axis=1), 48000, format="OGG", subtype="OPUS")
    pk3 = root / "ufoai" / "base" / "0music.pk3"
    pk3.parent.mkdir(parents=True)
    buf = io.BytesIO()
    sf.write(buf, _ramp(2.0, 1), RATE, format="OGG", subtype="VORBIS")
    with zipfile.ZipFile(pk3, "w") as archive:
        archive.writestr("music/", b"")
        archive.writestr("music/dawn.ogg", buf.getvalue())
        archive.writestr("music/readme.txt", b"text")
    return root


def test_installed_tracks_finds_files_and_archive_members(games):
    names = [t.name for t in installed_tracks(games)]
    assert names == ["wesnoth-1.16-music/battle", "warzone2100-music/track5", "ufoai-music/dawn"]
    assert installed_tracks(games.parent / "nothing-here") == []


def test_excerpt_is_the_middle_at_the_asked_rate(games):
    battle, _, dawn = installed_tracks(games)
    whole = _ramp(3.0)[:, 0]
    mid = battle.excerpt(RATE, seconds=1.0)
    assert mid.shape == (RATE, 2)
    # vorbis is lossy: the excerpt's mean is the middle second's, not the start's
    assert abs(float(mid.mean()) - float(whole[RATE:2 * RATE].mean())) < 0.02
    assert dawn.excerpt(8000).shape == (16000, 1)  # shorter than the excerpt: all of it, resampled
    assert battle.excerpt(RATE).shape[0] == 3 * RATE


def test_vocal_share():
    mix = np.ones((100, 2), np.float32)
    assert vocal_share(0.5 * mix, mix) == pytest.approx(0.25)
    assert vocal_share(mix * 0, mix * 0) == 0.0


def test_screen_uses_and_fills_its_cache(games, tmp_path):
    tracks = installed_tracks(games)
    cache = tmp_path / "screen.json"
    # the model runs for the tracks the cache lacks and the cache keeps every share
    kept, shares = screen(tracks, 8000, cache=cache, progress=False)
    assert set(shares) == {t.name for t in tracks}
    assert all(0.0 <= s <= 1.0 for s in shares.values())
    stored = json.loads(cache.read_text())
    assert len(stored) == 3 and all(k.startswith("default|") for k in stored)
    # a cached share decides: one track marked as sung is left out, without the model
    key = next(k for k in stored if "battle" in k)
    stored = {k: (0.9 if k == key else 0.0) for k in stored}
    cache.write_text(json.dumps(stored))
    kept, shares = screen(tracks, 8000, cache=cache, progress=False)
    assert [t.name for t, _ in kept] == ["warzone2100-music/track5", "ufoai-music/dawn"]
    assert shares["wesnoth-1.16-music/battle"] == 0.9
    assert all(audio.ndim == 2 for _, audio in kept)


def test_add_game_music_names_a_source(games, tmp_path):
    cache = tmp_path / "screen.json"
    tracks = installed_tracks(games)
    cache.write_text(json.dumps({f"default|{t.key()}": 0.01 for t in tracks}))
    corpus = Corpus(8000)
    counts = add_game_music(corpus, games, cache)
    assert counts == {"games:wesnoth-1.16-music": 1, "games:warzone2100-music": 1, "games:ufoai-music": 1,
                      "games:screened_out": 0}
    assert {source_of(n) for n, _ in corpus.accompaniments} == {"games"}
    assert all(a.ndim == 1 and a.dtype == np.float32 for _, a in corpus.accompaniments)
    assert corpus.weighted({"games": 2.0}).accompaniments  # --source-weight games=W


def test_nothing_installed_or_nothing_kept_is_a_data_error(games, tmp_path):
    with pytest.raises(DataError, match="apt-get install wesnoth-1.16-music"):
        add_game_music(Corpus(8000), tmp_path / "empty", tmp_path / "c.json")
    cache = tmp_path / "screen.json"
    cache.write_text(json.dumps({f"default|{t.key()}": 0.5 for t in installed_tracks(games)}))
    with pytest.raises(DataError, match="voices"):
        add_game_music(Corpus(8000), games, cache)


def test_cache_key_changes_with_the_file(games):
    battle = installed_tracks(games)[0]
    before = battle.key()
    sf.write(str(battle.path), _ramp(2.0), RATE, format="OGG", subtype="VORBIS")
    assert battle.key() != before


def test_train_cli_reports_missing_packages(tmp_path, monkeypatch, capsys):
    from vocex.train.train import main

    monkeypatch.setattr(gamemusic, "GAMES_ROOT", tmp_path / "none")
    voice = tmp_path / "shared" / "voice"
    voice.mkdir(parents=True)
    sf.write(str(voice / "a.wav"), _ramp(2.0, 1), RATE)
    (tmp_path / "shared" / "instrumental").mkdir()
    sf.write(str(tmp_path / "shared" / "instrumental" / "b.wav"), _ramp(2.0, 1), RATE)
    code = main(["--out", str(tmp_path / "run"), "--shared-root", str(tmp_path / "shared"), "--game-music",
                 "--steps", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no game-music package is installed" in err and len(err.strip().splitlines()) == 1
