"""Accompaniment from the game-music packages Debian ships: real recorded and produced
instrumental music (orchestra, band, electronic), read where the packages install it::

    sudo apt-get install wesnoth-1.16-music warzone2100-music ufoai-music

Some tracks have a choir or a voice in them, which would teach the network that singing is
accompaniment.  Every track is screened with the shipped default model: the excerpt a track
contributes (:data:`EXCERPT_SECONDS` from its middle) is separated, and a track whose
separated vocals carry more than :data:`MAX_VOCAL_SHARE` of its energy is left out.  The
shares are cached (keyed by file, size, time stamp and model), so the screen runs once.

``vocex-train --game-music`` and ``vocex-data --game-music`` use what is installed.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from vocex.model.audio import resample
from vocex.train.data import DataError, rms

GAMES_ROOT = Path("/usr/share/games")
# (package, where it installs its music under GAMES_ROOT, licence of the music)
PACKAGES = (
    ("wesnoth-1.16-music", "wesnoth/1.16/data/core/music", "GPL-2+"),
    ("warzone2100-music", "warzone2100/music", "CC BY-SA 3.0 (the albums' license.txt)"),
    ("ufoai-music", "ufoai/base/0music.pk3", "GPL-2+, CC BY 3.0 and CC BY-SA 3.0 (per file: its copyright file)"),
)
APT_INSTALL = "sudo apt-get install " + " ".join(p for p, _, _ in PACKAGES)
SUFFIXES = (".ogg", ".opus", ".flac", ".wav")
EXCERPT_SECONDS = 90.0  # what one track contributes: its middle, clear of intros and fade-outs
MAX_VOCAL_SHARE = 0.10  # screen: the separated vocals' share of a track's energy
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vocex" / "game-music-screen.json"


@dataclass(frozen=True)
class GameTrack:
    """One installed track: a file, or a ``member`` of a zip archive (ufoai's ``.pk3``)."""

    package: str
    path: Path
    member: str | None = None

    @property
    def name(self) -> str:
        """``package/stem``: unique among the installed tracks."""
        return f"{self.package}/{Path(self.member or self.path.name).stem}"

    def key(self) -> str:
        """Changes when the file does: the screen cache's key."""
        st = self.path.stat()
        return f"{self.path}:{self.member or ''}:{st.st_size}:{int(st.st_mtime)}"

    def excerpt(self, sample_rate: int, seconds: float = EXCERPT_SECONDS) -> NDArray[np.float32]:
        """The middle ``seconds`` (all of a shorter track), ``(n, channels)`` at ``sample_rate``."""
        import soundfile as sf

        if self.member is None:
            source: object = self.path
        else:
            with zipfile.ZipFile(self.path) as archive:
                source = io.BytesIO(archive.read(self.member))
        with sf.SoundFile(source) as f:
            rate, total = f.samplerate, f.frames
            n = min(total, int(seconds * rate)) if total > 0 else int(seconds * rate)
            if total > n:
                f.seek((total - n) // 2)
            audio = f.read(n, dtype="float32", always_2d=True)
        return resample(audio, rate, sample_rate)


def installed_tracks(games_root: Path | None = None) -> list[GameTrack]:
    """The tracks of the installed packages of :data:`PACKAGES` under ``games_root`` (default
    :data:`GAMES_ROOT`); none installed: ``[]``."""
    games_root = GAMES_ROOT if games_root is None else games_root
    tracks: list[GameTrack] = []
    for package, where, _ in PACKAGES:
        place = Path(games_root) / where
        if place.is_file() and zipfile.is_zipfile(place):
            with zipfile.ZipFile(place) as archive:
                members = sorted(m for m in archive.namelist() if Path(m).suffix.lower() in SUFFIXES)
            tracks += [GameTrack(package, place, m) for m in members]
        elif place.is_dir():
            tracks += [GameTrack(package, p) for p in sorted(place.rglob("*"))
                       if p.is_file() and p.suffix.lower() in SUFFIXES]
    return tracks


def vocal_share(vocals: NDArray[np.float32], mixture: NDArray[np.float32]) -> float:
    """The energy of ``vocals`` as a share of the energy of ``mixture`` (same shape; 0 for
    silence)."""
    total = rms(mixture)
    return (rms(vocals) / total) ** 2 if total > 0 else 0.0


def screen(tracks: list[GameTrack], rate: int, max_share: float = MAX_VOCAL_SHARE, model: str = "default",
           cache: Path | None = None, progress: bool = True) -> tuple[list[tuple[GameTrack, NDArray[np.float32]]],
                                                                        dict[str, float]]:
    """The tracks whose excerpt passes the voice screen, each with its excerpt at ``rate``
    (``(n, channels)``), and every track's vocal share (``{name: share}``, measured at the
    screening model's own rate).  Shares are read from and written to ``cache`` (None: the
    user's :data:`CACHE`).  A track is decoded once at ``rate``, and once more at the model's
    rate when its share is not cached and the rates differ."""
    from tqdm import tqdm

    from vocex.api import load, separate

    cache = CACHE if cache is None else cache
    cached: dict[str, float] = {}
    if cache.is_file():
        try:
            cached = json.loads(cache.read_text())
        except (OSError, ValueError):
            cached = {}
    net = None
    kept, shares, changed = [], {}, False
    for track in tqdm(tracks, desc="screening game music", disable=not progress, leave=False):
        key = f"{model}|{track.key()}"
        screened = None  # the excerpt at the screening model's rate, when it had to be screened
        if key not in cached:
            net = net or load(model, threads=1)
            screened = track.excerpt(net.sample_rate)
            vocals, _ = separate(screened, net.sample_rate, net)
            cached[key], changed = vocal_share(vocals, screened), True
        shares[track.name] = cached[key]
        if cached[key] <= max_share:
            same_rate = screened is not None and net.sample_rate == rate
            kept.append((track, screened if same_rate else track.excerpt(rate)))
    if changed:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp")
            tmp.write_text(json.dumps(cached, indent=0, sort_keys=True))
            tmp.replace(cache)
        except OSError:
            pass  # a read-only home: the screen runs again next time
    return kept, shares


def game_music(rate: int, games_root: Path | None = None, cache: Path | None = None,
               progress: bool = True) -> tuple[list[tuple[GameTrack, NDArray[np.float32]]], int]:
    """The screened tracks of the installed packages with their excerpts at ``rate``, and how
    many the screen left out.  Raises :class:`~vocex.train.data.DataError` when no package is
    installed or the screen keeps nothing."""
    games_root = GAMES_ROOT if games_root is None else games_root
    tracks = installed_tracks(games_root)
    if not tracks:
        raise DataError(f"--game-music: no game-music package is installed under {games_root}: {APT_INSTALL}")
    kept, _ = screen(tracks, rate, cache=cache, progress=progress)
    if not kept:
        raise DataError(f"--game-music: all {len(tracks)} tracks have voices in them (vocal share over {MAX_VOCAL_SHARE})")
    return kept, len(tracks) - len(kept)


def add_game_music(corpus, games_root: Path | None = None, cache: Path | None = None) -> dict[str, int]:
    """Add the screened tracks (mono) to ``corpus``'s accompaniments, items named
    ``games/<package>/<track>`` (source ``games`` for ``--source-weight``); returns
    ``{"games:<package>": tracks kept, "games:screened_out": tracks left out}``."""
    kept, screened_out = game_music(corpus.sample_rate, games_root, cache)
    counts: dict[str, int] = {}
    for track, audio in kept:
        corpus.accompaniments.append((f"games/{track.name}", np.ascontiguousarray(audio.mean(axis=1))))
        counts[f"games:{track.package}"] = counts.get(f"games:{track.package}", 0) + 1
    counts["games:screened_out"] = screened_out
    return counts
