"""Training and evaluation material: readers for MUSDB18, MUSDB18-HQ, DSD100 and the extra
real material in ``../shared/data``, and the random-mix patch sampler.

Everything is loaded at the model's sample rate.  Test splits are only ever read by the
evaluation code (``subset="test"``); the training readers take training splits only.
"""

from __future__ import annotations

import shutil
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from vocex.model.audio import load_audio, read_audio, resample
from vocex.model.card import FrontEnd
from vocex.model.dsp import stft

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
DSD100_SUBSETS = {"train": "Dev", "test": "Test"}


class DataError(ValueError):
    """A data root that does not hold what was asked for."""


@dataclass
class Track:
    """One song with its references, ``(n_samples, n_channels)`` float32 each."""

    name: str
    mixture: NDArray[np.float32]
    vocals: NDArray[np.float32]
    sample_rate: int

    @property
    def accompaniment(self) -> NDArray[np.float32]:
        return self.mixture - self.vocals


def _check_dir(root: Path, what: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory ({what})")
    return root


def detect_layout(root: Path) -> str:
    """``musdb`` (.stem.mp4), ``musdb-hq`` (folders of wav stems) or ``dsd100``."""
    root = _check_dir(root, "data root")
    if (root / "Mixtures").is_dir() and (root / "Sources").is_dir():
        return "dsd100"
    if any(root.glob("*/*.stem.mp4")):
        return "musdb"
    if any(root.glob("*/*/vocals.wav")):
        return "musdb-hq"
    raise DataError(
        f"{root}: neither a MUSDB18 (train/ test/ with .stem.mp4), MUSDB18-HQ "
        "(train/ test/ with <song>/vocals.wav) nor a DSD100 (Mixtures/ Sources/) folder"
    )


def iter_tracks(root: Path, subset: str, sample_rate: int | None = None) -> Iterator[Track]:
    """Songs of a MUSDB18 / MUSDB18-HQ / DSD100 folder, ``subset`` ``train`` or ``test``.

    ``sample_rate=None`` keeps the files' own rate (what evaluation wants).
    """
    if subset not in ("train", "test"):
        raise DataError(f"subset must be 'train' or 'test', got {subset!r}")
    layout = detect_layout(root)
    if layout == "dsd100":
        yield from _dsd100_tracks(Path(root), subset, sample_rate)
    else:
        yield from _musdb_tracks(Path(root), subset, sample_rate, is_wav=layout == "musdb-hq")


def _musdb_hq_tracks(root: Path, subset: str, sample_rate: int | None) -> Iterator[Track]:
    """MUSDB18-HQ: ``<root>/<subset>/<song>/{mixture,vocals}.wav``, read with soundfile.

    The same songs and samples as ``musdb.DB(is_wav=True)``, without musdb's import of
    stempeg (which refuses to import when ffmpeg is absent)."""
    songs = sorted(p for p in (root / subset).glob("*") if (p / "vocals.wav").is_file())
    if not songs:
        raise DataError(f"{root}: no {subset} songs found")
    for song in songs:
        mixture, rate = read_audio(song / "mixture.wav")
        vocals, vocal_rate = read_audio(song / "vocals.wav")
        if vocal_rate != rate or vocals.shape != mixture.shape:
            raise DataError(f"{song}: mixture.wav and vocals.wav differ in rate or shape")
        if sample_rate is not None and sample_rate != rate:
            mixture, vocals = (resample(a, rate, sample_rate) for a in (mixture, vocals))
            rate = sample_rate
        yield Track(song.name, mixture, vocals, rate)


def _musdb_tracks(root: Path, subset: str, sample_rate: int | None, is_wav: bool) -> Iterator[Track]:
    if is_wav:
        yield from _musdb_hq_tracks(root, subset, sample_rate)
        return
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        raise DataError(f"{root}: MUSDB18 .stem.mp4 files need ffmpeg and ffprobe (apt-get install ffmpeg)")
    import musdb  # heavy import (stempeg), only where needed

    db = musdb.DB(root=str(root), subsets=subset, is_wav=False)
    if not db.tracks:
        raise DataError(f"{root}: no {subset} songs found")
    for t in db.tracks:
        mixture = t.audio.astype(np.float32)
        vocals = t.targets["vocals"].audio.astype(np.float32)
        rate = int(t.rate)
        if sample_rate is not None and sample_rate != rate:
            mixture, vocals = (resample(a, rate, sample_rate) for a in (mixture, vocals))
            rate = sample_rate
        yield Track(t.name, np.ascontiguousarray(mixture), np.ascontiguousarray(vocals), rate)


def _dsd100_tracks(root: Path, subset: str, sample_rate: int | None) -> Iterator[Track]:
    split = DSD100_SUBSETS[subset]
    songs = sorted(p for p in (root / "Mixtures" / split).iterdir() if p.is_dir())
    if not songs:
        raise DataError(f"{root}: no songs in Mixtures/{split}")
    for song in songs:
        sources = root / "Sources" / split / song.name
        mixture, rate = read_audio(song / "mixture.wav")
        vocals, _ = read_audio(sources / "vocals.wav")
        n = min(len(mixture), len(vocals))
        mixture, vocals = mixture[:n], vocals[:n]
        if sample_rate is not None and sample_rate != rate:
            mixture, vocals = (resample(a, rate, sample_rate) for a in (mixture, vocals))
            rate = sample_rate
        yield Track(song.name, mixture, vocals, rate)


@dataclass
class Corpus:
    """Mono material at one sample rate.

    ``pairs``: aligned (vocals, accompaniment) of the same song;
    ``vocals`` / ``accompaniments``: pools for random mixing (the pairs' stems included).
    """

    sample_rate: int
    pairs: list[tuple[str, NDArray[np.float32], NDArray[np.float32]]] = field(default_factory=list)
    vocals: list[tuple[str, NDArray[np.float32]]] = field(default_factory=list)
    accompaniments: list[tuple[str, NDArray[np.float32]]] = field(default_factory=list)

    def add_pair(self, name: str, vocals: NDArray[np.float32], accompaniment: NDArray[np.float32]) -> None:
        """Add a song; every channel becomes its own mono pair."""
        for c in range(vocals.shape[1]):
            v = np.ascontiguousarray(vocals[:, c])
            a = np.ascontiguousarray(accompaniment[:, c])
            self.pairs.append((f"{name}[{c}]", v, a))
            self.vocals.append((f"{name}[{c}]", v))
            self.accompaniments.append((f"{name}[{c}]", a))

    def seconds(self) -> dict[str, float]:
        rate = float(self.sample_rate)
        return {
            "pairs": sum(len(v) for _, v, _ in self.pairs) / rate,
            "vocals": sum(len(v) for _, v in self.vocals) / rate,
            "accompaniments": sum(len(a) for _, a in self.accompaniments) / rate,
        }

    def split(self, fraction: float) -> tuple[Corpus, Corpus]:
        """Deterministic split by name hash: ``(train, validation)``."""
        def held(name: str) -> bool:
            return zlib.crc32(name.split("[")[0].encode()) % 1000 < fraction * 1000

        train, val = Corpus(self.sample_rate), Corpus(self.sample_rate)
        for item in self.pairs:
            (val if held(item[0]) else train).pairs.append(item)
        for item in self.vocals:
            (val if held(item[0]) else train).vocals.append(item)
        for item in self.accompaniments:
            (val if held(item[0]) else train).accompaniments.append(item)
        return train, val


def add_musdb_like(corpus: Corpus, root: Path) -> int:
    """Add the training songs of a MUSDB18 / MUSDB18-HQ / DSD100 folder; returns the count."""
    n = 0
    for track in iter_tracks(root, "train", corpus.sample_rate):
        corpus.add_pair(track.name, track.vocals, track.accompaniment)
        n += 1
    return n


def add_shared(corpus: Corpus, root: Path) -> dict[str, int]:
    """Add the training material of ``../shared/data`` (see its README); never its test songs.

    - ``musdb18hq-mini/train``: MUSDB18-HQ training excerpts;
    - ``pairs/mir1k``: left channel accompaniment, right channel singing;
    - ``pairs/musdb-train-excerpt-8k``: ``mix/mixN.wav`` with ``vocal/vocalN.wav``;
    - ``voice/`` and ``instrumental/``: solo voice and instrumental pools for random mixes.
    """
    root = _check_dir(Path(root), "shared data root")
    rate = corpus.sample_rate
    counts: dict[str, int] = {}
    mini = root / "musdb18hq-mini"
    if (mini / "train").is_dir():
        counts["musdb18hq-mini/train"] = add_musdb_like(corpus, mini)
    mir = root / "pairs" / "mir1k"
    for path in sorted(mir.glob("*.wav")):
        audio = load_audio(path, rate)
        if audio.shape[1] == 2:
            corpus.add_pair(f"mir1k/{path.stem}", audio[:, 1:2], audio[:, 0:1])
            counts["mir1k"] = counts.get("mir1k", 0) + 1
    excerpts = root / "pairs" / "musdb-train-excerpt-8k"
    for mix_path in sorted((excerpts / "mix").glob("*.wav")):
        vocal_path = excerpts / "vocal" / mix_path.name.replace("mix", "vocal", 1)
        if not vocal_path.exists():
            continue
        mix, vocal = load_audio(mix_path, rate), load_audio(vocal_path, rate)
        n = min(len(mix), len(vocal))
        corpus.add_pair(f"excerpt8k/{mix_path.stem}", vocal[:n, :1], mix[:n, :1] - vocal[:n, :1])
        counts["musdb-train-excerpt-8k"] = counts.get("musdb-train-excerpt-8k", 0) + 1
    for folder, pool in (("voice", corpus.vocals), ("instrumental", corpus.accompaniments)):
        for path in sorted((root / folder).glob("*")):
            if path.suffix.lower() in AUDIO_SUFFIXES:
                audio = load_audio(path, rate).mean(axis=1)
                pool.append((f"{folder}/{path.stem}", np.ascontiguousarray(audio, dtype=np.float32)))
                counts[folder] = counts.get(folder, 0) + 1
    if not counts:
        raise DataError(f"{root}: no training material found (see its README)")
    return counts


def _rms(x: NDArray[np.float32]) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


class PatchSampler:
    """Random-mix training patches: ``(mixture_mag, vocal_mag)``, each ``(1, n_bins, n_frames)``.

    With probability ``p_pair`` a patch comes from an aligned pair (its stems re-mixed with
    random gains of +-``gain_db``); otherwise vocals of one source go over the accompaniment
    of another, level-matched: the vocal-to-accompaniment RMS ratio is drawn from
    ``var_db`` (the range where sung vocals sit in produced music; the MUSDB18 mixtures are
    about -3 dB), then both get a common random gain.  With probability ``p_silent`` the
    vocals are left out altogether.  Segments shorter than a patch are tiled.
    """

    def __init__(
        self,
        corpus: Corpus,
        front_end: FrontEnd,
        n_bins: int,
        context_frames: int,
        seed: int,
        p_pair: float = 0.5,
        p_silent: float = 0.1,
        gain_db: float = 6.0,
        random_mix: bool = True,
        var_db: tuple[float, float] = (-8.0, 2.0),
    ) -> None:
        if not corpus.pairs and not (corpus.vocals and corpus.accompaniments):
            raise DataError("no training material: give at least one data root")
        self.corpus = corpus
        self.fe = front_end
        self.n_bins = n_bins
        self.n_frames = context_frames
        self.rng = np.random.default_rng(seed)
        self.p_pair = p_pair if (corpus.pairs and random_mix) else float(bool(corpus.pairs))
        if not random_mix and not corpus.pairs:
            raise DataError("random mixing is off but there are no aligned pairs")
        self.p_silent = p_silent
        self.gain_db = gain_db
        self.var_db = var_db
        # frames fully inside the segment: skip the first `lead` padded frames of stft()
        self.lead = -(-front_end.n_fft // front_end.hop) - 1
        self.segment = (context_frames + self.lead) * front_end.hop

    def _crop(self, signal: NDArray[np.float32], start: int | None = None) -> NDArray[np.float32]:
        n = self.segment
        if len(signal) >= n:
            s = self.rng.integers(0, len(signal) - n + 1) if start is None else start
            return signal[s : s + n]
        reps = -(-n // len(signal)) + 1
        offset = self.rng.integers(0, len(signal))
        return np.tile(signal, reps)[offset : offset + n]

    def _gain(self) -> float:
        return float(10 ** (self.rng.uniform(-self.gain_db, self.gain_db) / 20))

    def segment_pair(self) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """One random ``(vocals, accompaniment)`` segment, mono, ``segment`` samples each."""
        c = self.corpus
        if self.rng.random() < self.p_pair:
            _, v, a = c.pairs[self.rng.integers(len(c.pairs))]
            n = self.segment
            if len(v) >= n:
                s = int(self.rng.integers(0, len(v) - n + 1))
                vocals, accomp = v[s : s + n], a[s : s + n]
            else:
                vocals, accomp = np.resize(v, n), np.resize(a, n)
            vocals, accomp = vocals * self._gain(), accomp * self._gain()
        else:
            vocals = self._crop(c.vocals[self.rng.integers(len(c.vocals))][1])
            accomp = self._crop(c.accompaniments[self.rng.integers(len(c.accompaniments))][1])
            v_rms, a_rms = _rms(vocals), _rms(accomp)
            if v_rms > 1e-4 and a_rms > 1e-4:
                ratio = 10 ** (self.rng.uniform(*self.var_db) / 20)
                vocals = vocals * (ratio * a_rms / v_rms)
            common = self._gain()
            vocals, accomp = vocals * common, accomp * common
        if self.rng.random() < self.p_silent:
            vocals = np.zeros_like(vocals)
        return vocals.astype(np.float32), accomp.astype(np.float32)

    def magnitudes(
        self, vocals: NDArray[np.float32], accompaniment: NDArray[np.float32]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Mixture and vocal magnitude patches ``(1, n_bins, n_frames)`` of one segment."""
        fe = self.fe
        both = np.stack([vocals + accompaniment, vocals], axis=1)
        spec = stft(both, fe.n_fft, fe.hop, fe.window)[:, : self.n_bins, self.lead : self.lead + self.n_frames]
        mag = np.abs(spec).astype(np.float32)
        return mag[0:1], mag[1:2]

    def batch(self, batch_size: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """``(mix, vocals)`` magnitudes, each ``(batch, 1, n_bins, n_frames)`` float32."""
        mixes, vocs = zip(*(self.magnitudes(*self.segment_pair()) for _ in range(batch_size)))
        return np.stack(mixes), np.stack(vocs)
