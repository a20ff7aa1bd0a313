"""Training and evaluation material: readers for MUSDB18, MUSDB18-HQ, DSD100 and the extra
real material in ``../shared/data``, and the random-mix patch sampler.

Everything is loaded at the model's sample rate.  Test splits are only ever read by the
evaluation code (``subset="test"``); the training readers take training splits only.
"""

from __future__ import annotations

import re
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
from vocex.model.errors import InputError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
DSD100_SUBSETS = {"train": "Dev", "test": "Test"}


class DataError(InputError):
    """A data root that does not hold what was asked for (exit 2; a ``ValueError`` as before)."""


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
    # {pool: draw probability of each item}; a pool not here draws its items uniformly
    probabilities: dict[str, NDArray[np.float64]] = field(default_factory=dict)

    def weighted(self, source_weights: dict[str, float]) -> Corpus:
        """The same material drawn by source weight (see :class:`PatchSampler`)."""
        unknown = set(source_weights) - {source_of(n) for n, *_ in self.pairs + self.vocals + self.accompaniments}
        if unknown:
            raise DataError(f"--source-weight: no material from {', '.join(sorted(unknown))} in this corpus")
        if any(not w >= 0 for w in source_weights.values()):
            raise DataError("--source-weight: weights must be 0 or more")
        out = Corpus(self.sample_rate)
        for pool in ("pairs", "vocals", "accompaniments"):
            items = [it for it in getattr(self, pool) if source_weights.get(source_of(it[0]), 1.0) > 0]
            setattr(out, pool, items)
            w = np.array([source_weights.get(source_of(it[0]), 1.0) for it in items], dtype=np.float64)
            if items:
                out.probabilities[pool] = w / w.sum()
        return out

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


# --------------------------------------------------------------------------- real material

VALIDATION_SEED = 0  # fixes which singers, recordings and excerpts are held out for validation
MIR1K_HELD_SINGERS = 3
SSVD_HELD_RECORDINGS = 12
GTSINGER_HELD_GROUPS = 2
BACH10_HELD_EXCERPTS = 3
_GTSINGER_LANGUAGE = re.compile(r"([a-z]{2})\d*_", re.IGNORECASE)
_BACH10_EXCERPT = re.compile(r"_Mix(\d+)$")


def _audio_files(folder: Path, recursive: bool = False) -> list[Path]:
    if not folder.is_dir():
        return []
    found = folder.rglob("*") if recursive else folder.glob("*")
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def mir1k_singer(path: Path) -> str:
    """MIR-1K's singer id: the file name's prefix (``abjones_1_01.ogg`` -> ``abjones``)."""
    return path.stem.split("_")[0]


def gtsinger_group(path: Path) -> str:
    """The singer group of a GTSinger demo clip: its language for ``<lang><nn>_<technique>``
    clips (each language is one singer's), else the name before its first ``-``."""
    m = _GTSINGER_LANGUAGE.match(path.stem)
    return m.group(1).lower() if m else path.stem.split("-")[0].lower()


def bach10_excerpt(path: Path) -> int:
    """The chorale excerpt a Bach10 mixture plays: ``P3_Mix07.ogg`` -> 7.  The groups reuse
    the same excerpts under the same number with other instrument sets."""
    m = _BACH10_EXCERPT.search(path.stem)
    if m is None:
        raise DataError(f"{path}: not a Bach10 mixture name (<group>_MixNN)")
    return int(m.group(1))


def ssvd_files(root: Path) -> list[Path]:
    """SSVD recordings under ``voice/ssvd`` (its ``trainvalid/`` and ``test/`` split alike: both
    are training material here), each recording id once."""
    seen: dict[str, Path] = {}
    for path in _audio_files(Path(root) / "voice" / "ssvd", recursive=True):
        seen.setdefault(path.stem, path)
    return sorted(seen.values(), key=lambda p: p.stem)


@dataclass(frozen=True)
class HoldOut:
    """Real material kept out of training for the validation set (:mod:`vocex.train.valset`):
    MIR-1K singers, SSVD recordings, GTSinger singer groups and Bach10 chorale excerpts, drawn
    with :data:`VALIDATION_SEED` from what ``root`` holds.  MIR-1K singers of ``pairs/mir1k``
    (trained on before) are never drawn."""

    mir1k_singers: tuple[str, ...]
    ssvd_recordings: tuple[str, ...]
    gtsinger_groups: tuple[str, ...]
    bach10_excerpts: tuple[int, ...]

    @classmethod
    def of(cls, root: Path, seed: int = VALIDATION_SEED) -> HoldOut:
        root = Path(root)
        rng = np.random.default_rng(seed)

        def draw(items: list, n: int) -> tuple:  # at most half of what there is: training keeps the rest
            items = sorted(set(items))
            chosen = rng.choice(len(items), size=min(n, len(items) // 2), replace=False)
            return tuple(sorted(items[int(i)] for i in chosen))

        trained = {mir1k_singer(p) for p in _audio_files(root / "pairs" / "mir1k")}
        singers = [mir1k_singer(p) for p in _audio_files(root / "pairs" / "mir1k-full")]
        # two-letter groups: the languages (one singer each) and ``en`` (the EN-* clips)
        languages = [g for g in (gtsinger_group(p) for p in _audio_files(root / "voice" / "gtsinger")) if len(g) == 2]
        excerpts = [bach10_excerpt(p) for p in _audio_files(root / "instrumental" / "bach10-ass" / "Mixtures", True)]
        return cls(
            mir1k_singers=draw([s for s in singers if s not in trained], MIR1K_HELD_SINGERS),
            ssvd_recordings=draw([p.stem for p in ssvd_files(root)], SSVD_HELD_RECORDINGS),
            gtsinger_groups=draw(languages, GTSINGER_HELD_GROUPS),
            bach10_excerpts=draw(excerpts, BACH10_HELD_EXCERPTS),
        )

    def describe(self) -> dict[str, list]:
        return {"seed": VALIDATION_SEED, "mir1k_singers": list(self.mir1k_singers),
                "ssvd_recordings": list(self.ssvd_recordings), "gtsinger_groups": list(self.gtsinger_groups),
                "bach10_excerpts": list(self.bach10_excerpts)}


def mir1k_clips(root: Path, held: HoldOut, validation: bool = False) -> list[Path]:
    """MIR-1K clips of ``pairs/mir1k-full`` and ``pairs/mir1k`` (the same clips under the same
    names: each counted once): the training singers', or with ``validation`` the held-out ones'."""
    clips: dict[str, Path] = {}
    for folder in ("mir1k-full", "mir1k"):
        for path in _audio_files(Path(root) / "pairs" / folder):
            clips.setdefault(path.stem, path)
    return [p for _, p in sorted(clips.items()) if (mir1k_singer(p) in held.mir1k_singers) == validation]


def solo_voices(root: Path, held: HoldOut, validation: bool = False) -> list[tuple[str, Path]]:
    """``(source, path)`` of the solo singing of ``voice/ssvd`` and ``voice/gtsinger``: the
    training part, or with ``validation`` the held-out part."""
    root = Path(root)
    out = [("ssvd", p) for p in ssvd_files(root) if (p.stem in held.ssvd_recordings) == validation]
    out += [("gtsinger", p) for p in _audio_files(root / "voice" / "gtsinger")
            if (gtsinger_group(p) in held.gtsinger_groups) == validation]
    return out


def bach10_mixtures(root: Path, held: HoldOut, validation: bool = False) -> list[Path]:
    """The Bach10 mixtures (the sums of their instrument tracks; the tracks themselves add no
    material), the training excerpts' or with ``validation`` the held-out ones'."""
    folder = Path(root) / "instrumental" / "bach10-ass" / "Mixtures"
    return [p for p in _audio_files(folder, recursive=True) if (bach10_excerpt(p) in held.bach10_excerpts) == validation]


def add_shared(corpus: Corpus, root: Path) -> dict[str, int]:
    """Add the training material of ``../shared/data`` (see its README); never its test songs,
    nor the material :class:`HoldOut` keeps for validation.

    - ``musdb18hq-mini/train``: MUSDB18-HQ training excerpts;
    - ``pairs/mir1k-full`` (with ``pairs/mir1k``): left channel accompaniment, right channel
      singing, the training singers only;
    - ``pairs/musdb-train-excerpt-8k``: ``mix/mixN.wav`` with ``vocal/vocalN.wav``;
    - ``voice/``, ``voice/ssvd``, ``voice/gtsinger``: solo voice for random mixes;
    - ``instrumental/`` and the Bach10 mixtures of ``instrumental/bach10-ass``: instrumentals.

    Item names start with their source (``mir1k/``, ``ssvd/``, ...), the names
    ``--source-weight`` takes.
    """
    root = _check_dir(Path(root), "shared data root")
    rate = corpus.sample_rate
    held = HoldOut.of(root)
    counts: dict[str, int] = {}

    def count(source: str) -> None:
        counts[source] = counts.get(source, 0) + 1

    mini = root / "musdb18hq-mini"
    if (mini / "train").is_dir():
        counts["musdb18hq-mini/train"] = add_musdb_like(corpus, mini)
    for path in mir1k_clips(root, held):
        audio = load_audio(path, rate)
        if audio.shape[1] == 2:
            corpus.add_pair(f"mir1k/{path.stem}", audio[:, 1:2], audio[:, 0:1])
            count("mir1k")
    excerpts = root / "pairs" / "musdb-train-excerpt-8k"
    for mix_path in _audio_files(excerpts / "mix"):
        vocal_path = excerpts / "vocal" / mix_path.name.replace("mix", "vocal", 1)
        if not vocal_path.exists():
            continue
        mix, vocal = load_audio(mix_path, rate), load_audio(vocal_path, rate)
        n = min(len(mix), len(vocal))
        corpus.add_pair(f"excerpt8k/{mix_path.stem}", vocal[:n, :1], mix[:n, :1] - vocal[:n, :1])
        count("musdb-train-excerpt-8k")
    voices = [("voice", p) for p in _audio_files(root / "voice")] + solo_voices(root, held)
    instrumentals = [("instrumental", p) for p in _audio_files(root / "instrumental")]
    instrumentals += [("bach10", p) for p in bach10_mixtures(root, held)]
    for items, pool in ((voices, corpus.vocals), (instrumentals, corpus.accompaniments)):
        for source, path in items:
            audio = load_audio(path, rate).mean(axis=1)
            pool.append((f"{source}/{path.stem}", np.ascontiguousarray(audio, dtype=np.float32)))
            count(source)
    if not counts:
        raise DataError(f"{root}: no training material found (see its README)")
    return counts


def source_of(name: str) -> str:
    """The source an item name starts with (``mir1k/abjones_1_01[1]`` -> ``mir1k``); ``""`` for
    the songs of a MUSDB-like folder."""
    return name.split("/", 1)[0] if "/" in name else ""


def rms(x: NDArray[np.float32]) -> float:
    """Root mean square of all of ``x`` (computed in float64); 0 for an empty array."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


class PatchSampler:
    """Random-mix training patches: ``(mixture_mag, vocal_mag)``, each ``(1, n_bins, n_frames)``.

    With probability ``p_pair`` a patch comes from an aligned pair (its stems re-mixed with
    random gains of +-``gain_db``); otherwise vocals of one source go over the accompaniment
    of another, level-matched: the vocal-to-accompaniment RMS ratio is drawn from
    ``var_db`` (the range where sung vocals sit in produced music; the MUSDB18 mixtures are
    about -3 dB), then both get a common random gain.  With probability ``p_silent`` the
    vocals are left out altogether.  Segments shorter than a patch are tiled.

    ``source_weights`` (``{source: weight}``, sources as :func:`source_of` names them) scale
    how often each source's items are drawn against the others' (1 for a source not named,
    0 leaves a source out); without it every item is equally likely.
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
        source_weights: dict[str, float] | None = None,
    ) -> None:
        if source_weights:
            corpus = corpus.weighted(source_weights)
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

    def _pick(self, pool: str) -> int:
        """Index of a random item of a corpus pool, by the corpus's item weights if any."""
        p = self.corpus.probabilities.get(pool)
        n = len(getattr(self.corpus, pool))
        return int(self.rng.integers(n)) if p is None else int(self.rng.choice(n, p=p))

    def _gain(self) -> float:
        return float(10 ** (self.rng.uniform(-self.gain_db, self.gain_db) / 20))

    def segment_pair(self) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """One random ``(vocals, accompaniment)`` segment, mono, ``segment`` samples each."""
        c = self.corpus
        if self.rng.random() < self.p_pair:
            _, v, a = c.pairs[self._pick("pairs")]
            n = self.segment
            if len(v) >= n:
                s = int(self.rng.integers(0, len(v) - n + 1))
                vocals, accomp = v[s : s + n], a[s : s + n]
            else:
                vocals, accomp = np.resize(v, n), np.resize(a, n)
            vocals, accomp = vocals * self._gain(), accomp * self._gain()
        else:
            vocals = self._crop(c.vocals[self._pick("vocals")][1])
            accomp = self._crop(c.accompaniments[self._pick("accompaniments")][1])
            v_rms, a_rms = rms(vocals), rms(accomp)
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
