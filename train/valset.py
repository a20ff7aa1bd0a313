"""``vocex-valset``: build the validation set every model choice is made on.

Real material only, never trained on, in MUSDB18-HQ layout so ``vocex-eval --musdb-root DIR
--subset test`` scores it like any MUSDB18 folder.  Three parts (the part is the song name's
prefix and the ``part`` of each song in ``DIR/valset.json``):

- ``musdb``: the three MUSDB18 test songs of ``musdb18hq-mini/test`` (44.1 kHz stereo), the
  part most like the music users play;
- ``mir1k``: real karaoke clips of the MIR-1K singers :class:`~vocex.train.data.HoldOut`
  keeps out of training, a singer's clips joined into songs of about ``--seconds``
  (16 kHz mono, singing plus accompaniment as recorded);
- ``solo``: held-out solo singers (SSVD recordings, GTSinger languages) over held-out real
  instrumentals (Bach10 chorale excerpts), phrases with pauses, at vocal-to-accompaniment
  ratios drawn from ``-6 .. 0`` dB (44.1 kHz mono).

The hold-out and every draw follow :data:`~vocex.train.data.VALIDATION_SEED`, so the same
command on the same data builds the same set; ``valset.json`` records what went into it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from vocex.model.audio import load_audio, read_audio, write_audio
from vocex.model.cli import console
from vocex.model.errors import EXIT_OK, InputError, OutputError, raise_as
from vocex.train.data import (VALIDATION_SEED, DataError, HoldOut, bach10_mixtures, mir1k_clips, mir1k_singer, rms,
                              solo_voices)

PROG = "vocex-valset"
PARTS = ("musdb", "mir1k", "solo")
SOLO_RATE = 44100
SOLO_SONGS = 6
MIR1K_SONGS_PER_SINGER = 2
SOLO_RATIO_DB = (-6.0, 0.0)


def _write_song(out: Path, name: str, mixture: NDArray[np.float32], vocals: NDArray[np.float32], rate: int) -> None:
    folder = out / "test" / name
    folder.mkdir(parents=True)
    write_audio(folder / "mixture.wav", mixture, rate)
    write_audio(folder / "vocals.wav", vocals, rate)


def musdb_songs(shared: Path, out: Path) -> list[dict[str, object]]:
    songs = []
    for song in sorted(p for p in (shared / "musdb18hq-mini" / "test").glob("*") if (p / "vocals.wav").is_file()):
        name = f"musdb - {song.name}"
        (out / "test" / name).mkdir(parents=True)
        for stem in ("mixture", "vocals"):
            shutil.copyfile(song / f"{stem}.wav", out / "test" / name / f"{stem}.wav")
        songs.append({"name": name, "part": "musdb", "from": [f"musdb18hq-mini/test/{song.name}"]})
    return songs


def mir1k_songs(shared: Path, out: Path, held: HoldOut, seconds: float) -> list[dict[str, object]]:
    songs = []
    by_singer: dict[str, list[Path]] = {}
    for path in mir1k_clips(shared, held, validation=True):
        by_singer.setdefault(mir1k_singer(path), []).append(path)
    for singer, clips in sorted(by_singer.items()):
        queue = list(clips)
        for k in range(MIR1K_SONGS_PER_SINGER):
            parts, used, rate = [], [], 16000
            while queue and sum(len(p) for p in parts) < seconds * rate:
                path = queue.pop(0)
                audio, rate = read_audio(path)
                if audio.shape[1] != 2:
                    raise DataError(f"{path}: MIR-1K clips are stereo (accompaniment left, singing right)")
                parts.append(audio)
                used.append(path.relative_to(shared).as_posix())
            if not parts:
                break
            both = np.concatenate(parts)
            accompaniment, vocals = both[:, :1], both[:, 1:2]
            name = f"mir1k - {singer} {k + 1}"
            _write_song(out, name, accompaniment + vocals, np.ascontiguousarray(vocals), rate)
            songs.append({"name": name, "part": "mir1k", "from": used})
    return songs


def _phrases(clips: list[tuple[str, NDArray[np.float32]]], n: int, rng: np.random.Generator
             ) -> tuple[NDArray[np.float32], list[str]]:
    """``n`` samples of singing: random stretches of the clips with pauses of 0.3-2 s between."""
    out = np.zeros(n, dtype=np.float32)
    used: list[str] = []
    pos = int(rng.uniform(0.0, 1.0) * SOLO_RATE)
    while pos < n:
        name, clip = clips[int(rng.integers(len(clips)))]
        length = min(len(clip), int(rng.uniform(4.0, 12.0) * SOLO_RATE), n - pos)
        start = int(rng.integers(0, len(clip) - length + 1))
        out[pos : pos + length] = clip[start : start + length]
        used.append(name)
        pos += length + int(rng.uniform(0.3, 2.0) * SOLO_RATE)
    return out, used


def solo_songs(shared: Path, out: Path, held: HoldOut, seconds: float, rng: np.random.Generator
               ) -> list[dict[str, object]]:
    voices = [(f"{source}/{p.stem}", load_audio(p, SOLO_RATE).mean(axis=1)) for source, p in solo_voices(shared, held, True)]
    backing = [(f"bach10/{p.stem}", load_audio(p, SOLO_RATE).mean(axis=1)) for p in bach10_mixtures(shared, held, True)]
    if not voices or not backing:
        return []
    n = int(seconds * SOLO_RATE)
    songs = []
    for k in range(SOLO_SONGS):
        vocals, sung = _phrases(voices, n, rng)
        order = rng.permutation(len(backing))
        accompaniment = np.concatenate([backing[int(i)][1] for i in order])
        while len(accompaniment) < n:
            accompaniment = np.concatenate([accompaniment, accompaniment])
        accompaniment = accompaniment[:n]
        ratio_db = float(rng.uniform(*SOLO_RATIO_DB))
        vocals *= 10 ** (ratio_db / 20) * rms(accompaniment) / max(rms(vocals), 1e-6)
        peak = max(float(np.abs(vocals + accompaniment).max()), 1e-6)
        scale = min(1.0, 0.9 / peak)
        vocals, accompaniment = vocals * scale, accompaniment * scale
        name = f"solo - {k + 1:02d}"
        _write_song(out, name, (vocals + accompaniment)[:, None], vocals[:, None], SOLO_RATE)
        songs.append({"name": name, "part": "solo", "vocal_to_accompaniment_db": round(ratio_db, 2),
                      "from": sorted(set(sung)) + [backing[int(i)][0] for i in order]})
    return songs


def build(shared: Path, out: Path, seconds: float = 30.0) -> dict[str, object]:
    """Write the validation set to ``out`` (which must not exist); returns its manifest."""
    if not (shared / "musdb18hq-mini" / "test").is_dir():
        raise DataError(f"{shared}: no musdb18hq-mini/test (is this the shared data folder?)")
    held = HoldOut.of(shared)
    rng = np.random.default_rng(VALIDATION_SEED)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    songs = musdb_songs(shared, tmp) + mir1k_songs(shared, tmp, held, seconds) + solo_songs(shared, tmp, held, seconds, rng)
    manifest = {"command": f"{PROG} --shared-root {shared} --out {out}", "seconds": seconds,
                "held_out": held.describe(), "songs": songs}
    (tmp / "valset.json").write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.rename(out)
    return manifest


def song_parts(root: Path) -> dict[str, str] | None:
    """``{song name: part}`` of a folder this command built, else ``None``."""
    manifest = Path(root) / "valset.json"
    if not manifest.is_file():
        return None
    return {s["name"]: s["part"] for s in json.loads(manifest.read_text())["songs"]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--shared-root", type=Path, required=True, help="folder laid out like ../shared/data")
    p.add_argument("--out", type=Path, required=True, help="new folder for the set (MUSDB18-HQ layout)")
    p.add_argument("--seconds", type=float, default=30.0, help="length of the built songs")
    return p


@console(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out.exists():
        raise OutputError(f"{args.out} exists; remove it or choose another --out")
    if not args.seconds > 0:
        raise InputError("--seconds must be positive")
    # DataError, AudioError: exit 2
    with raise_as(OutputError, OSError, message=lambda exc: f"cannot write {args.out}: {exc.strerror or exc}"):
        manifest = build(args.shared_root, args.out, args.seconds)
    counts = {part: sum(s["part"] == part for s in manifest["songs"]) for part in PARTS}
    print(f"wrote {args.out}: " + ", ".join(f"{n} {part}" for part, n in counts.items()), file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
