"""``vocex-data``: build a seeded training corpus in MUSDB18-HQ layout.

Writes ``<out>/train/<song>/{mixture,vocals,drums,bass,other}.wav`` (44.1 kHz stereo PCM16,
``mixture`` exactly the sample-wise sum of the four stems) and ``<out>/manifest.json``
(seed, sources, what each song was made of, seconds), so ``vocex-train --musdb-root <out>``
reads it unchanged.  Sources (``--sources``, comma separated):

- ``real``: random remixes of real material from a folder laid out like ``../shared/data``:
  vocal lines cut from ``voice/`` and the vocal tracks of the training pairs
  (``pairs/mir1k`` right channel, ``pairs/musdb-train-excerpt-8k`` vocals,
  ``musdb18hq-mini/train``) over real accompaniment (``instrumental/`` and the pairs'
  accompaniments).
- ``rendered``: accompaniment rendered from MIDI with ``fluidsynth`` and the General MIDI
  soundfont, one render per stem: Bach chorales from ``music21``'s corpus (alto and tenor
  as ``other`` instruments, the bass line as ``bass``; the soprano melody is dropped) and
  generated pop/rock songs (drum, bass and chord patterns at a random tempo and key).  The
  vocals over them are real voices from the shared folder, pitch/time shifted.
- ``sung``: synthetic singing with exact ground truth over accompaniment rendered as for
  ``rendered``: the tune (a chorale's soprano line, or a melody drawn over a pop song's
  chords) is sung by ``espeak-ng`` (pseudo-word lyrics, one syllable per note, a random
  language and voice) pitch-corrected and stretched to the notes with Praat's PSOLA
  (``praat-parselmouth``), with scoops, vibrato and a little intonation error.  The vocals
  are in the accompaniment's key and tempo; nothing is read from the shared folder.

Every song gets augmentation: per-stem gains, pitch shift with time stretch (soxr resampling),
a two-band EQ, a synthetic reverb and stereo placement.  Song ``i`` of source ``s`` depends
only on ``(seed, s, i)`` and the input files, so the same command builds the same corpus.

Evaluation material is never read: only the training folders listed above are opened, any
path with a component named ``test`` is refused, and so is an output folder named ``test``
or inside the shared folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from numpy.typing import NDArray

from vocex.model.audio import load_audio
from vocex.model.cli import console
from vocex.model.errors import EXIT_OK, InputError, OutputError
from vocex.train.data import rms

PROG = "vocex-data"
SAMPLE_RATE = 44100
STEMS = ("vocals", "drums", "bass", "other")
SOURCES = ("real", "rendered", "sung")
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")

Mono = NDArray[np.float32]
Stereo = NDArray[np.float32]


class CorpusError(InputError):
    """Bad arguments, missing input material or a missing system package (exit 2; a
    ``ValueError`` as before).  An output folder that exists or cannot be written is an
    :class:`vocex.model.errors.OutputError` (exit 4)."""


@dataclass(frozen=True)
class CorpusConfig:
    out: Path
    shared_root: Path
    sources: tuple[str, ...] = SOURCES
    songs: int = 40
    seconds: float = 30.0
    seed: int = 0
    soundfont: Path = SOUNDFONT
    chorale_fraction: float = 0.5
    game_music: bool = False
    force: bool = False


# --------------------------------------------------------------------------- material


def _refuse_test(path: Path) -> None:
    if "test" in (part.lower() for part in Path(path).resolve().parts):
        raise CorpusError(f"{path}: refusing to use a path with a folder named 'test' (evaluation only)")


def read_material(path: Path) -> Stereo:
    """``(n_samples, n_channels)`` float32 at 44.1 kHz; refuses evaluation folders."""
    _refuse_test(path)
    return load_audio(path, SAMPLE_RATE)


@dataclass
class Pools:
    """Real material at 44.1 kHz: mono vocal clips and accompaniment items ``{stem: audio}``."""

    vocals: list[tuple[str, Mono]] = field(default_factory=list)
    vocal_weights: list[float] = field(default_factory=list)
    accompaniments: list[tuple[str, dict[str, Stereo]]] = field(default_factory=list)
    accompaniment_weights: list[float] = field(default_factory=list)

    def add_vocal(self, name: str, audio: Mono, weight: float = 1.0) -> None:
        if rms(audio) > 1e-3:  # the near-silent excerpts carry nothing
            self.vocals.append((name, np.ascontiguousarray(audio, dtype=np.float32)))
            self.vocal_weights.append(weight)

    def add_accompaniment(self, name: str, stems: dict[str, Stereo], weight: float = 1.0) -> None:
        if max(rms(a) for a in stems.values()) > 1e-3:
            self.accompaniments.append((name, stems))
            self.accompaniment_weights.append(weight)


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if p.suffix.lower() in AUDIO_SUFFIXES) if folder.is_dir() else []


def load_pools(shared_root: Path, need_accompaniment: bool) -> Pools:
    """Read the training material of a folder laid out like ``../shared/data``.

    Opens only ``voice/``, ``instrumental/``, ``pairs/mir1k``,
    ``pairs/musdb-train-excerpt-8k`` and ``musdb18hq-mini/train``.
    """
    root = Path(shared_root)
    if not root.is_dir():
        raise CorpusError(f"{root}: not a directory (--shared-root)")
    _refuse_test(root)
    pools = Pools()
    for path in _audio_files(root / "voice"):
        speech = "speech" in path.stem or path.suffix.lower() == ".ogg"  # LibriSpeech readings
        pools.add_vocal(f"voice/{path.stem}", read_material(path).mean(axis=1), 0.3 if speech else 1.0)
    for path in _audio_files(root / "pairs" / "mir1k"):
        audio = read_material(path)
        if audio.shape[1] == 2:
            pools.add_vocal(f"mir1k/{path.stem}", audio[:, 1])
            if need_accompaniment:
                pools.add_accompaniment(f"mir1k/{path.stem}", {"other": audio[:, :1]})
    excerpts = root / "pairs" / "musdb-train-excerpt-8k"
    for mix_path in _audio_files(excerpts / "mix"):
        vocal_path = excerpts / "vocal" / mix_path.name.replace("mix", "vocal", 1)
        if not vocal_path.exists():
            continue
        mix, vocal = read_material(mix_path)[:, :1], read_material(vocal_path)[:, :1]
        n = min(len(mix), len(vocal))
        pools.add_vocal(f"excerpt8k/{vocal_path.stem}", vocal[:n, 0], 0.2)  # 57 clips of one song
        if need_accompaniment:
            pools.add_accompaniment(f"excerpt8k/{mix_path.stem}", {"other": mix[:n] - vocal[:n]}, 0.15)
    train = root / "musdb18hq-mini" / "train"
    for song in sorted(p for p in train.glob("*") if p.is_dir()):
        if not (song / "vocals.wav").exists():
            continue
        pools.add_vocal(f"musdb-mini/{song.name}", read_material(song / "vocals.wav").mean(axis=1))
        if need_accompaniment:
            pools.add_accompaniment(
                f"musdb-mini/{song.name}",
                {s: read_material(song / f"{s}.wav") for s in ("drums", "bass", "other") if (song / f"{s}.wav").exists()},
            )
    if need_accompaniment:
        for path in _audio_files(root / "instrumental"):
            pools.add_accompaniment(f"instrumental/{path.stem}", {"other": read_material(path)})
    if not pools.vocals:
        raise CorpusError(f"{root}: no vocal material (voice/, pairs/, musdb18hq-mini/train)")
    if need_accompaniment and not pools.accompaniments:
        raise CorpusError(f"{root}: no accompaniment material (instrumental/, pairs/, musdb18hq-mini/train)")
    return pools


# --------------------------------------------------------------------------- augmentation


def _normalised(weights: list[float]) -> NDArray[np.float64]:
    w = np.asarray(weights, dtype=np.float64)
    return w / w.sum()


def _db(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(10 ** (rng.uniform(lo, hi) / 20))


def pitch_time(audio: NDArray[np.float32], semitones: float) -> NDArray[np.float32]:
    """Shift pitch by ``semitones`` and duration by the same factor (tape-speed change, soxr).

    ``audio``: ``(n_samples,)`` or ``(n_samples, n_channels)`` float32 at 44.1 kHz.
    """
    factor = 2 ** (semitones / 12)
    if abs(factor - 1) < 1e-6:
        return audio
    out_rate = SAMPLE_RATE / factor
    return soxr.resample(audio, SAMPLE_RATE, out_rate, quality="HQ").astype(np.float32, copy=False)


def eq(audio: Stereo, rng: np.random.Generator, max_db: float = 6.0) -> Stereo:
    """Random two-band EQ: low band below 200-800 Hz and high band above 2-8 kHz, +-``max_db``.

    ``audio``: ``(n_samples, n_channels)`` float32.
    """
    from scipy.signal import butter, sosfilt

    low_fc, high_fc = rng.uniform(200, 800), rng.uniform(2000, 8000)
    g_low, g_high = _db(rng, -max_db, max_db) - 1, _db(rng, -max_db, max_db) - 1
    low = sosfilt(butter(2, low_fc, "lowpass", fs=SAMPLE_RATE, output="sos"), audio, axis=0)
    high = sosfilt(butter(2, high_fc, "highpass", fs=SAMPLE_RATE, output="sos"), audio, axis=0)
    return (audio + g_low * low + g_high * high).astype(np.float32)


def reverb(audio: Stereo, rng: np.random.Generator, max_wet: float = 0.3) -> Stereo:
    """Add a synthetic room: decaying stereo noise (RT60 0.3-2 s, 5-30 ms pre-delay).

    ``audio``: ``(n_samples, 2)`` float32; the output has the same length.
    """
    from scipy.signal import fftconvolve

    rt60 = rng.uniform(0.3, 2.0)
    n_ir = int(min(rt60, 1.5) * SAMPLE_RATE)
    pre = int(rng.uniform(0.005, 0.03) * SAMPLE_RATE)
    t = np.arange(n_ir) / SAMPLE_RATE
    ir = rng.standard_normal((n_ir, 2)) * np.exp(-6.9 * t / rt60)[:, None]
    ir[: min(pre, n_ir)] = 0.0
    ir /= np.sqrt(np.sum(ir**2, axis=0, keepdims=True)) + 1e-12
    wet = fftconvolve(audio, ir, axes=0)[: len(audio)]
    mix = rng.uniform(0.0, max_wet)
    return ((1 - mix) * audio + mix * wet).astype(np.float32)


def place(mono: Mono, rng: np.random.Generator, max_pan: float, max_delay_ms: float = 0.0) -> Stereo:
    """Constant-power pan in ``[-max_pan, max_pan]`` (1 = hard) with an optional small
    inter-channel delay; ``mono`` ``(n_samples,)`` -> ``(n_samples, 2)`` float32."""
    pan = rng.uniform(-max_pan, max_pan)
    theta = (pan + 1) * np.pi / 4
    left, right = mono * np.cos(theta), mono * np.sin(theta)
    delay = int(rng.uniform(0, max_delay_ms) * SAMPLE_RATE / 1000)
    if delay:
        if pan < 0:
            right = np.concatenate([np.zeros(delay, np.float32), right[:-delay]])
        else:
            left = np.concatenate([np.zeros(delay, np.float32), left[:-delay]])
    return np.ascontiguousarray(np.stack([left, right], axis=1), dtype=np.float32)


def _stereo(audio: NDArray[np.float32], rng: np.random.Generator, max_pan: float) -> Stereo:
    return place(audio[:, 0], rng, max_pan, 0.6) if audio.shape[1] == 1 else audio


def _crop_at(audio: NDArray[np.float32], n: int, offset: int) -> NDArray[np.float32]:
    """``n`` samples from ``offset``, wrapping around (tiling) when the audio is shorter."""
    if offset + n <= len(audio):
        return audio[offset : offset + n]
    return audio[(offset + np.arange(n)) % len(audio)]


def _offset(length: int, n: int, rng: np.random.Generator) -> int:
    return int(rng.integers(0, length - n + 1)) if length >= n else int(rng.integers(0, length))


def _fit(audio: NDArray[np.float32], n: int, rng: np.random.Generator) -> NDArray[np.float32]:
    """Exactly ``n`` samples: a random crop, or tiled from a random offset when shorter."""
    return _crop_at(audio, n, _offset(len(audio), n, rng))


def _fade(x: NDArray[np.float32], n_fade: int) -> NDArray[np.float32]:
    n_fade = min(n_fade, len(x) // 2)
    if n_fade > 0:
        ramp = np.linspace(0, 1, n_fade, dtype=np.float32)
        shape = (n_fade,) + (1,) * (x.ndim - 1)
        x = x.copy()
        x[:n_fade] *= ramp.reshape(shape)
        x[-n_fade:] *= ramp[::-1].reshape(shape)
    return x


def vocal_line(pools: Pools, n: int, rng: np.random.Generator) -> tuple[Stereo, list[str]]:
    """A lead vocal of ``n`` samples: phrases of 2-8 s from the vocal pool, each pitch/time
    shifted by up to +-3 semitones, with 0.3-3 s gaps; EQ, reverb, near-centre placement.

    Returns ``((n, 2) float32, names of the clips used)``.
    """
    out = np.zeros(n, dtype=np.float32)
    weights = _normalised(pools.vocal_weights)
    used: list[str] = []
    pos = int(rng.uniform(0, 2) * SAMPLE_RATE)
    while pos < n:
        name, clip = pools.vocals[int(rng.choice(len(pools.vocals), p=weights))]
        phrase = int(rng.uniform(2, 8) * SAMPLE_RATE)
        semitones = rng.uniform(-3, 3)
        source = int(phrase * 2 ** (semitones / 12)) + 64
        segment = pitch_time(_fit(clip, source, rng), semitones)[: min(phrase, n - pos)]
        if rms(segment) > 1e-3:
            segment = segment * (0.1 / rms(segment)) * _db(rng, -3, 3)  # phrase dynamics
            out[pos : pos + len(segment)] += _fade(segment, int(0.02 * SAMPLE_RATE))
            used.append(name)
        pos += len(segment) + int(rng.uniform(0.3, 3.0) * SAMPLE_RATE)
    return vocal_bus(out, rng, 0.25), used


def vocal_bus(mono: Mono, rng: np.random.Generator, max_wet: float) -> Stereo:
    """What every lead vocal goes through: near-centre placement, a gentle EQ, a room."""
    stereo = place(mono, rng, 0.25)
    stereo = eq(stereo, rng, 4.0)
    return reverb(stereo, rng, max_wet)


def real_accompaniment(pools: Pools, n: int, rng: np.random.Generator) -> tuple[dict[str, Stereo], list[str]]:
    """Sections of 6-15 s, each from one real accompaniment item (pitch/time shifted up to
    +-2 semitones, EQ'd, placed), crossfaded; returns ``({stem: (n, 2)}, item names)``."""
    stems = {s: np.zeros((n, 2), dtype=np.float32) for s in STEMS[1:]}
    weights = _normalised(pools.accompaniment_weights)
    used: list[str] = []
    pos, n_fade = 0, int(0.05 * SAMPLE_RATE)
    while pos < n:
        name, item = pools.accompaniments[int(rng.choice(len(pools.accompaniments), p=weights))]
        length = min(int(rng.uniform(6, 15) * SAMPLE_RATE), n - pos)
        semitones = rng.uniform(-2, 2)
        source = int(length * 2 ** (semitones / 12)) + 64
        offset = _offset(min(len(a) for a in item.values()), source, rng)  # one crop for all stems
        gain = _db(rng, -3, 3)
        for stem, audio in item.items():
            crop = _crop_at(audio, source, offset)
            part = pitch_time(crop, semitones)[:length]
            part = eq(_stereo(part, rng, 0.3), rng) * gain
            stems[stem][pos : pos + len(part)] += _fade(part, n_fade)
        used.append(name)
        pos += length
    return stems, used


# --------------------------------------------------------------------------- MIDI rendering


@dataclass
class Part:
    """Notes of one MIDI channel: ``(start_beat, length_beats, pitch, velocity)``."""

    program: int
    channel: int
    notes: list[tuple[float, float, int, int]] = field(default_factory=list)


def write_midi(path: Path, parts: list[Part], bpm: float) -> None:
    """One type-1 MIDI file, one track per part (``mido``)."""
    import mido

    tpb = 480
    mid = mido.MidiFile(type=1, ticks_per_beat=tpb)
    tempo_track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=int(round(60e6 / bpm)), time=0)])
    mid.tracks.append(tempo_track)
    for part in parts:
        events: list[tuple[int, int, mido.Message]] = []
        for start, length, pitch, velocity in part.notes:
            on, off = int(round(start * tpb)), int(round((start + length) * tpb))
            pitch = int(np.clip(pitch, 0, 127))
            events.append((on, 1, mido.Message("note_on", channel=part.channel, note=pitch, velocity=int(np.clip(velocity, 1, 127)))))
            events.append((max(off, on + 1), 0, mido.Message("note_off", channel=part.channel, note=pitch, velocity=0)))
        events.sort(key=lambda e: (e[0], e[1]))
        track = mido.MidiTrack()
        if part.channel != 9:
            track.append(mido.Message("program_change", channel=part.channel, program=part.program, time=0))
        now = 0
        for tick, _, msg in events:
            track.append(msg.copy(time=tick - now))
            now = tick
        mid.tracks.append(track)
    mid.save(str(path))


def render(parts: list[Part], bpm: float, n: int, soundfont: Path, workdir: Path, name: str) -> Stereo:
    """Render parts with ``fluidsynth`` (reverb and chorus off): ``(n, 2)`` float32 at 44.1 kHz."""
    if not parts or not any(p.notes for p in parts):
        return np.zeros((n, 2), dtype=np.float32)
    mid, wav = workdir / f"{name}.mid", workdir / f"{name}.wav"
    write_midi(mid, parts, bpm)
    cmd = ["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.5", "-r", str(SAMPLE_RATE),
           "-O", "float", "-F", str(wav), str(soundfont), str(mid)]
    result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if result.returncode != 0 or not wav.exists():
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise CorpusError(f"fluidsynth failed on {mid.name}: {last}")
    audio, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        raise CorpusError(f"fluidsynth wrote {rate} Hz, expected {SAMPLE_RATE}")
    out = np.zeros((n, 2), dtype=np.float32)
    m = min(n, len(audio))
    out[:m] = audio[:m, :2]
    return out


KICK, SNARE, CLAP, HAT, HAT_OPEN, CRASH, RIDE = 36, 38, 39, 42, 46, 49, 51
TOMS = (50, 48, 45, 41)
BASS_PROGRAMS = (32, 33, 34, 35, 36, 38, 39)
CHORD_PROGRAMS = (0, 1, 2, 4, 5, 16, 17, 19, 24, 25, 26, 27, 29, 30, 48, 49, 50, 61, 62, 88, 89, 90, 91, 94)
LEAD_PROGRAMS = (29, 30, 56, 65, 66, 71, 73, 80, 81)
CHORALE_PROGRAMS = (0, 6, 19, 20, 24, 40, 41, 42, 48, 49, 68, 70, 71, 73)
CHORALE_BASS_PROGRAMS = (32, 33, 42, 43, 58, 70)
PROGRESSIONS = ((0, 4, 5, 3), (0, 5, 3, 4), (5, 3, 0, 4), (0, 3, 4, 3), (0, 0, 3, 4), (0, 6, 3, 4), (1, 4, 0, 0))
MAJOR, MINOR = (0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10)


def drum_part(rng: np.random.Generator, n_bars: int, style: str | None = None) -> Part:
    """A 4/4 kit pattern (rock, four-on-the-floor, half-time or shuffle) with fills every 4/8 bars."""
    style = style or str(rng.choice(["rock", "four", "half", "shuffle"]))
    part = Part(0, 9)
    hat = HAT if rng.random() < 0.7 else RIDE
    fill_every = int(rng.choice([4, 8]))

    def hit(beat: float, note: int, vel: float) -> None:
        part.notes.append((beat, 0.25, note, int(vel + rng.normal(0, 6))))

    for bar in range(n_bars):
        b = bar * 4.0
        if bar % fill_every == 0:
            hit(b, CRASH, 100)
        if bar % fill_every == fill_every - 1 and rng.random() < 0.7:
            for i, s in enumerate(np.arange(2, 4, 0.25)):
                hit(b + s, TOMS[min(i // 2, 3)] if rng.random() < 0.6 else SNARE, 90)
            hit(b, KICK, 100)
            continue
        if style == "four":
            for k in range(4):
                hit(b + k, KICK, 105)
                hit(b + k + 0.5, HAT_OPEN, 70)
            for k in (1, 3):
                hit(b + k, CLAP if rng.random() < 0.5 else SNARE, 95)
        elif style == "half":
            hit(b, KICK, 105)
            hit(b + 2, SNARE, 100)
            for k in np.arange(0, 4, 0.5):
                hit(b + k, hat, 65)
        elif style == "shuffle":
            for k in range(4):
                hit(b + k, hat, 75)
                hit(b + k + 2 / 3, hat, 55)
            hit(b, KICK, 105)
            hit(b + 2 + 2 / 3, KICK, 90)
            hit(b + 1, SNARE, 100)
            hit(b + 3, SNARE, 100)
        else:
            for k in np.arange(0, 4, 0.5):
                hit(b + k, hat, 80 if k % 1 == 0 else 60)
            hit(b, KICK, 105)
            hit(b + 2, KICK, 100)
            if rng.random() < 0.5:
                hit(b + 2.5, KICK, 85)
            hit(b + 1, SNARE, 100)
            hit(b + 3, SNARE, 100)
    return part


Note = tuple[float, float, int]  # (start_beat, length_beats, midi pitch) of a sung tune


def pop_song(rng: np.random.Generator, seconds: float, tune_rng: np.random.Generator | None = None
             ) -> tuple[float, dict[str, list[Part]], dict[str, object], list[Note]]:
    """Generated pop/rock: ``(bpm, {stem: parts}, description, tune)``.  With ``tune_rng`` the
    tune is a vocal melody over the song's chords, drawn from ``tune_rng`` alone (so the
    accompaniment does not depend on whether a tune is asked for); otherwise it is empty."""
    bpm = float(rng.uniform(72, 160))
    n_bars = int(np.ceil(seconds * bpm / 240)) + 1
    root = int(rng.integers(0, 12))
    minor = bool(rng.random() < 0.4)
    scale = MINOR if minor else MAJOR
    progression = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
    bars_per_chord = int(rng.choice([1, 2]))

    def chord(degree: int, octave: int) -> list[int]:
        return [12 * octave + root + scale[(degree + k) % 7] + 12 * ((degree + k) // 7) for k in (0, 2, 4)]

    bass = Part(int(rng.choice(BASS_PROGRAMS)), 0)
    bass_style = str(rng.choice(["eighths", "root-fifth", "quarters", "octaves"]))
    chords = Part(int(rng.choice(CHORD_PROGRAMS)), 1)
    chord_style = str(rng.choice(["pad", "stabs", "arpeggio", "strum"]))
    for bar in range(n_bars):
        degree = progression[(bar // bars_per_chord) % len(progression)]
        tones = chord(degree, 5)
        b = bar * 4.0
        low = 12 * 3 + root + scale[degree] - (12 if root + scale[degree] > 7 else 0)
        if bass_style == "eighths":
            bass.notes += [(b + k, 0.45, low, 95) for k in np.arange(0, 4, 0.5)]
        elif bass_style == "root-fifth":
            bass.notes += [(b + k, 0.9, low + (7 if k % 2 else 0), 95) for k in range(4)]
        elif bass_style == "octaves":
            bass.notes += [(b + k, 0.45, low + (12 if (k * 2) % 2 else 0), 95) for k in np.arange(0, 4, 0.5)]
        else:
            bass.notes += [(b + k, 0.9, low, 95) for k in range(4)]
        if chord_style == "pad":
            chords.notes += [(b, 4.0, p, 70) for p in tones]
        elif chord_style == "stabs":
            for k in (0, 1.5, 2.5, 3):
                chords.notes += [(b + k, 0.4, p, 85) for p in tones]
        elif chord_style == "arpeggio":
            seq = tones + [tones[0] + 12]
            chords.notes += [(b + k, 0.3, seq[i % 4], 80) for i, k in enumerate(np.arange(0, 4, 0.25))]
        else:
            for k in range(4):
                chords.notes += [(b + k + 0.02 * i, 0.8, p, 80) for i, p in enumerate(tones + [tones[0] - 12])]
    other = [chords]
    desc: dict[str, object] = {"kind": "pop", "bpm": round(bpm, 1), "root": root, "minor": minor,
                               "bass": [bass.program, bass_style], "chords": [chords.program, chord_style]}
    if rng.random() < 0.5:  # a second accompaniment layer
        pad = Part(int(rng.choice(CHORD_PROGRAMS)), 2)
        for bar in range(0, n_bars, 2):
            degree = progression[(bar // bars_per_chord) % len(progression)]
            pad.notes += [(bar * 4.0, 8.0, p, 55) for p in chord(degree, 4)]
        other.append(pad)
        desc["pad"] = pad.program
    if rng.random() < 0.3:  # an instrumental lead: melodic, but not vocals
        lead = Part(int(rng.choice(LEAD_PROGRAMS)), 3)
        pitch_index = 14
        beat = float(rng.integers(0, 4))
        while beat < n_bars * 4:
            length = float(rng.choice([0.5, 1.0, 1.5, 2.0]))
            pitch_index = int(np.clip(pitch_index + rng.integers(-2, 3), 7, 21))
            pitch = 12 * (4 + pitch_index // 7) + root + scale[pitch_index % 7]
            if rng.random() < 0.8:
                lead.notes.append((beat, length * 0.9, pitch, 75))
            beat += length
        other.append(lead)
        desc["lead"] = lead.program
    drums = [drum_part(rng, n_bars)] if rng.random() < 0.9 else []
    tune: list[Note] = []
    if tune_rng is not None:
        chords_at = [chord(progression[(bar // bars_per_chord) % len(progression)], 5) for bar in range(n_bars)]
        tune = pop_tune(tune_rng, n_bars, root, scale, chords_at)
    return bpm, {"drums": drums, "bass": [bass], "other": other}, desc, tune


def pop_tune(rng: np.random.Generator, n_bars: int, root: int, scale: tuple[int, ...],
             chords_at: list[list[int]]) -> list[Note]:
    """A vocal melody: phrases of 2 or 4 bars with rests between them, a rhythm of eighths to
    half notes, chord tones on the beats and scale steps between them (around MIDI 60-76)."""
    ladder = [12 * octave + root + d for octave in range(4, 7) for d in scale]
    tune: list[Note] = []
    bar = int(rng.integers(0, 2))
    while bar < n_bars:
        length = int(rng.choice([2, 4]))
        beat, end = bar * 4.0 + float(rng.choice([0.0, 0.5, 1.0])), min(bar + length, n_bars) * 4.0 - 0.5
        start = 66 + int(rng.integers(-3, 4))
        i = int(np.argmin([abs(p - start) for p in ladder]))
        while beat < end:
            dur = float(rng.choice([0.5, 0.5, 1.0, 1.0, 1.5, 2.0]))
            tones = chords_at[min(int(beat // 4), n_bars - 1)]
            if beat % 1 == 0 and rng.random() < 0.7:  # on the beat: the nearest chord tone
                near = [j for j, p in enumerate(ladder) if p % 12 in {t % 12 for t in tones}]
                i = min(near, key=lambda j: abs(j - i) + rng.random())
            else:
                i = int(np.clip(i + rng.choice([-2, -1, -1, 1, 1, 2]), 3, len(ladder) - 4))
            tune.append((beat, min(dur, end - beat), ladder[i]))
            beat += dur
        bar += length + int(rng.choice([0, 1, 1, 2]))
    return tune


_CHORALES: list[Path] | None = None


def _chorale_paths() -> list[Path]:
    global _CHORALES
    if _CHORALES is None:
        try:
            from music21 import corpus
        except ImportError:
            raise CorpusError("music21 not installed: pip install 'vocex[data]' (or --chorale-fraction 0)") from None
        _CHORALES = sorted(Path(p) for p in corpus.getComposer("bach") if str(p).endswith((".mxl", ".xml", ".musicxml")))
        if not _CHORALES:
            raise CorpusError("music21's corpus has no Bach chorales")
    return _CHORALES


def chorale_song(rng: np.random.Generator, seconds: float, tune_rng: np.random.Generator | None = None
                 ) -> tuple[float, dict[str, list[Part]], dict[str, object], list[Note]]:
    """A Bach chorale from music21's corpus, looped to length: alto and tenor on ``other``
    instruments, the bass line on a bass instrument, half of them with a generated drum part.
    The soprano (the tune) is not rendered: it is returned as the tune (``tune_rng`` only
    says that it is wanted), for a singer."""
    from music21 import converter

    paths = _chorale_paths()
    for _ in range(20):
        path = paths[int(rng.integers(len(paths)))]
        score = converter.parse(str(path))
        if len(score.parts) == 4:
            break
    else:
        raise CorpusError("no four-part chorale found in music21's corpus")
    bpm = float(rng.uniform(60, 110))
    transpose = int(rng.integers(-5, 7))
    total = float(score.highestTime)
    need = seconds * bpm / 60 + 4
    reps = int(np.ceil(need / max(total, 1.0)))
    programs = [int(rng.choice(CHORALE_PROGRAMS)) for _ in range(2)]
    parts = {"other": [Part(programs[0], 0), Part(programs[1], 1)], "bass": [Part(int(rng.choice(CHORALE_BASS_PROGRAMS)), 2)]}
    targets = [parts["other"][0], parts["other"][1], parts["bass"][0]]
    def line(part: object) -> list[Note]:
        return [(float(n.offset), float(n.quarterLength), n.pitch.midi) for n in part.stripTies().flatten().notes  # type: ignore[attr-defined]
                if hasattr(n, "pitch") and n.quarterLength > 0]

    for target, part in zip(targets, score.parts[1:]):
        notes = line(part)
        shift = transpose - (12 if target is parts["bass"][0] and rng.random() < 0.5 else 0)
        for r in range(reps):
            target.notes += [(r * total + o, d * 0.95, p + shift, int(rng.integers(60, 95))) for o, d, p in notes]
    drums = [drum_part(rng, int(np.ceil(need / 4)), str(rng.choice(["rock", "half"])))] if rng.random() < 0.5 else []
    parts["drums"] = drums
    desc: dict[str, object] = {"kind": "chorale", "score": path.name, "bpm": round(bpm, 1), "transpose": transpose,
                               "programs": programs + [parts["bass"][0].program], "drums": bool(drums)}
    tune: list[Note] = []
    if tune_rng is not None:
        soprano = line(score.parts[0])
        tune = [(r * total + o, d, p + transpose) for r in range(reps) for o, d, p in soprano]
    return bpm, parts, desc, tune


# --------------------------------------------------------------------------- synthetic singing

ESPEAK_LANGUAGES = ("en-us", "en", "es", "it", "de", "pt")
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5")
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7")
CONSONANTS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "y", "sh", "ch", "")
VOWELS = ("a", "e", "i", "o", "u", "ay", "ee", "oh", "oo", "ai")


@dataclass(frozen=True)
class Singer:
    """An espeak-ng voice and how it sings: words per minute before stretching, Praat formant
    shift, vibrato, and the MIDI pitch its tunes are moved to by octaves."""

    voice: str
    words_per_minute: int
    formant_shift: float
    vibrato_hz: float
    vibrato_semitones: float
    centre: int

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Singer:
        female = bool(rng.random() < 0.5)
        variant = str(rng.choice(FEMALE_VARIANTS if female else MALE_VARIANTS))
        return cls(voice=f"{rng.choice(ESPEAK_LANGUAGES)}+{variant}", words_per_minute=int(rng.integers(110, 170)),
                   formant_shift=round(float(rng.uniform(0.9, 1.12)), 3), vibrato_hz=round(float(rng.uniform(4.5, 6.5)), 2),
                   vibrato_semitones=round(float(rng.uniform(0.1, 0.6)), 2), centre=int(rng.integers(64, 71) if female else rng.integers(52, 59)))

    def describe(self) -> str:
        return (f"espeak-ng {self.voice} {self.words_per_minute} wpm, formants x{self.formant_shift}, "
                f"vibrato {self.vibrato_hz} Hz +-{self.vibrato_semitones} st, around MIDI {self.centre}")


def lyrics(rng: np.random.Generator, n_syllables: int) -> str:
    """Pseudo-words of consonant-vowel syllables, ``n_syllables`` in all."""
    words: list[str] = []
    while n_syllables > 0:
        k = min(n_syllables, int(rng.integers(1, 4)))
        words.append("".join(str(rng.choice(CONSONANTS)) + str(rng.choice(VOWELS)) for _ in range(k)))
        n_syllables -= k
    return " ".join(words)


def phrases(tune: list[Note], bpm: float, max_seconds: float = 8.0) -> list[list[Note]]:
    """Split a tune into breaths: at rests of half a beat or more, and before a phrase would
    pass ``max_seconds``; each phrase's last note leaves up to half a beat for the breath."""
    out: list[list[Note]] = []
    current: list[Note] = []
    for note in sorted(tune):
        if current:
            gap = note[0] - (current[-1][0] + current[-1][1])
            if gap >= 0.5 or (note[0] + note[1] - current[0][0]) * 60 / bpm > max_seconds:
                out.append(current)
                current = []
        current.append(note)
    if current:
        out.append(current)
    return [p[:-1] + [(p[-1][0], max(p[-1][1] - 0.5, p[-1][1] / 2), p[-1][2])] for p in out]


def sing_phrase(notes: list[Note], bpm: float, singer: Singer, rng: np.random.Generator, workdir: Path,
                transpose: int = 0) -> Mono:
    """One phrase: espeak-ng speaks a syllable per note, Praat (parselmouth, PSOLA) stretches
    it to the phrase's length and replaces its pitch with the notes (scoops, vibrato and a
    little intonation error); ``(n,)`` float32 at 44.1 kHz, ``n`` the phrase's length."""
    import parselmouth
    from parselmouth.praat import call, run

    # Praat's PSOLA draws random numbers (unvoiced stretches): seed it, so songs rebuild exactly
    run(f"random_initializeWithSeedUnsafelyButPredictably ({int(rng.integers(2**31))})")
    beat = 60.0 / bpm
    start = notes[0][0]
    seconds = (notes[-1][0] + notes[-1][1] - start) * beat
    wav = workdir / "phrase.wav"
    cmd = ["espeak-ng", "-v", singer.voice, "-s", str(singer.words_per_minute), "-w", str(wav),
           lyrics(rng, len(notes))]
    result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if result.returncode != 0 or not wav.exists():
        raise CorpusError(f"espeak-ng failed: {(result.stderr.strip().splitlines() or ['no output'])[-1]}")
    speech = parselmouth.Sound(str(wav))
    if abs(singer.formant_shift - 1) > 1e-3:
        speech = call(speech, "Change gender", 75, 600, singer.formant_shift, 0, 1, 1)
    stretch = float(np.clip(seconds / speech.duration, 0.5, 6.0))
    manipulation = call(speech, "To Manipulation", 0.01, 75, 600)
    durations = call("Create DurationTier", "stretch", speech.xmin, speech.xmax)
    call(durations, "Add point", speech.xmin, stretch)
    call([manipulation, durations], "Replace duration tier")
    pitch = call("Create PitchTier", "tune", speech.xmin, speech.xmax)
    for onset, length, midi in notes:
        a, b = (onset - start) * beat, (onset - start + length) * beat
        hz = 440.0 * 2 ** ((midi + transpose + rng.normal(0, 0.08) - 69) / 12)
        scoop = rng.uniform(-1.0, 0.0) if rng.random() < 0.3 else 0.0  # semitones, sung up into the note
        for t in np.arange(a, b, 0.01):
            into = t - a
            cents = 100 * scoop * max(0.0, 1 - into / 0.08)
            cents += 100 * singer.vibrato_semitones * np.sin(2 * np.pi * singer.vibrato_hz * into) * min(1.0, max(0.0, into - 0.15) / 0.3)
            call(pitch, "Add point", t / stretch + speech.xmin, hz * 2 ** (cents / 1200))
    call([manipulation, pitch], "Replace pitch tier")
    sung = call(manipulation, "Get resynthesis (overlap-add)")
    audio = soxr.resample(sung.values[0], sung.sampling_frequency, SAMPLE_RATE).astype(np.float32)
    n = int(round(seconds * SAMPLE_RATE))
    out = np.zeros(n, dtype=np.float32)
    out[: min(n, len(audio))] = audio[:n]
    return out


def sung_line(tune: list[Note], bpm: float, n: int, rng: np.random.Generator, workdir: Path) -> tuple[Stereo, list[str]]:
    """Synthetic singing of ``tune`` by one drawn :class:`Singer` (``n`` samples, 15 % of the
    phrases left out for instrumental gaps), levelled per phrase, placed near the centre, EQ'd
    and reverberated like the real vocal lines: ``((n, 2) float32, [singer description])``."""
    singer = Singer.draw(rng)
    beat = 60.0 / bpm
    pitches = [p for _, _, p in tune]
    transpose = 12 * int(round((singer.centre - float(np.median(pitches))) / 12)) if pitches else 0
    out = np.zeros(n, dtype=np.float32)
    for phrase in phrases(tune, bpm):
        pos = int(round(phrase[0][0] * beat * SAMPLE_RATE))
        if pos >= n or rng.random() < 0.15:
            continue
        segment = sing_phrase(phrase, bpm, singer, rng, workdir, transpose)[: n - pos]
        if rms(segment) > 1e-4:
            segment = segment * (0.1 / rms(segment)) * _db(rng, -3, 3)
            out[pos : pos + len(segment)] += _fade(segment, int(0.01 * SAMPLE_RATE))
    return vocal_bus(out, rng, 0.3), [singer.describe()]


# --------------------------------------------------------------------------- songs


def _mixdown(vocals: Stereo, accompaniment: dict[str, Stereo], rng: np.random.Generator) -> dict[str, NDArray[np.int16]]:
    """Level the vocals against the accompaniment (-8..+2 dB where the vocals sound), set a
    random loudness, quantise every stem to PCM16 so the mixture is their exact sum."""
    acc = sum(accompaniment.values())
    active = np.abs(vocals).max(axis=1) > 1e-4
    v_rms = rms(vocals[active]) if active.any() else 0.0
    a_rms = rms(acc[active]) if active.any() else rms(acc)
    stems = dict(accompaniment)
    if v_rms > 0 and a_rms > 0:
        vocals = vocals * (_db(rng, -8, 2) * a_rms / v_rms)
    stems["vocals"] = vocals
    peak = float(np.abs(sum(stems.values())).max())
    peak = max(peak, max(float(np.abs(a).max()) for a in stems.values()), 1e-9)
    scale = rng.uniform(0.3, 0.9) / peak
    out = {s: np.round(stems[s] * scale * 32767).astype(np.int16) for s in STEMS}
    out["mixture"] = sum(out[s].astype(np.int32) for s in STEMS).clip(-32768, 32767).astype(np.int16)
    return out


def make_song(source: str, index: int, cfg: CorpusConfig, pools: Pools, workdir: Path) -> tuple[dict[str, NDArray[np.int16]], dict[str, object]]:
    """One song: ``({stem: (n, 2) int16}, manifest entry)``; depends only on ``(seed, source, index)``."""
    rng = np.random.default_rng([cfg.seed, SOURCES.index(source), index])
    n = int(round(cfg.seconds * SAMPLE_RATE))
    if source == "real":
        vocals, vocal_names = vocal_line(pools, n, rng)
        accompaniment, names = real_accompaniment(pools, n, rng)
        entry: dict[str, object] = {"source": source, "vocals": vocal_names, "accompaniment": names}
        return _mixdown(vocals, accompaniment, rng), entry
    tune_rng = np.random.default_rng([cfg.seed, SOURCES.index(source), index, 1]) if source == "sung" else None
    if tune_rng is None:
        vocals, vocal_names = vocal_line(pools, n, rng)
    make: Callable[..., tuple[float, dict[str, list[Part]], dict[str, object], list[Note]]]
    make = chorale_song if rng.random() < cfg.chorale_fraction else pop_song
    bpm, parts, desc, tune = make(rng, cfg.seconds, tune_rng)
    accompaniment = {}
    for stem in STEMS[1:]:
        audio = render(parts.get(stem, []), bpm, n, cfg.soundfont, workdir, stem)
        if np.abs(audio).max() > 0:
            audio = eq(audio, rng) * _db(rng, -4, 4) * (2.0 if stem == "drums" else 1.0)  # GM kits are quiet
            if stem == "other" and rng.random() < 0.5:
                audio = reverb(audio, rng, 0.3)
        accompaniment[stem] = audio
    if tune_rng is not None:
        vocals, vocal_names = sung_line(tune, bpm, n, tune_rng, workdir)
    return _mixdown(vocals, accompaniment, rng), {"source": source, "vocals": vocal_names, "accompaniment": desc}


def check_tools(cfg: CorpusConfig) -> dict[str, str]:
    """Fail early, in one line, when a system package a source needs is missing."""
    tools: dict[str, str] = {}
    if "sung" in cfg.sources:
        if shutil.which("espeak-ng") is None:
            raise CorpusError("espeak-ng not found: apt-get install espeak-ng")
        try:
            import parselmouth
        except ImportError:
            raise CorpusError("parselmouth not installed: pip install 'vocex[data]'") from None
        version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip()
        tools["espeak-ng"] = version.split(" Data at")[0]
        tools["praat-parselmouth"] = str(parselmouth.VERSION)
    if "rendered" in cfg.sources or "sung" in cfg.sources:
        if shutil.which("fluidsynth") is None:
            raise CorpusError("fluidsynth not found: apt-get install fluidsynth fluid-soundfont-gm")
        if not Path(cfg.soundfont).is_file():
            raise CorpusError(f"{cfg.soundfont}: soundfont not found: apt-get install fluid-soundfont-gm")
        try:
            import mido  # noqa: F401
        except ImportError:
            raise CorpusError("mido not installed: pip install 'vocex[data]'") from None
        version = subprocess.run(["fluidsynth", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
        tools["fluidsynth"] = version.strip()
        if cfg.chorale_fraction > 0:
            _chorale_paths()
            import music21

            tools["music21"] = str(music21.__version__)
    return tools


def check_out(cfg: CorpusConfig) -> None:
    out = Path(cfg.out).resolve()
    if "test" in (p.lower() for p in out.parts):
        raise CorpusError(f"{cfg.out}: refusing to write a corpus under a folder named 'test'")
    shared = Path(cfg.shared_root).resolve()
    if out == shared or shared in out.parents:
        raise CorpusError(f"{cfg.out}: refusing to write inside the shared data folder {cfg.shared_root}")
    if (out / "manifest.json").exists() and not cfg.force:
        raise OutputError(f"{cfg.out} already holds a corpus (manifest.json); use --force to rebuild")


def build(cfg: CorpusConfig, progress: bool = True) -> dict[str, object]:
    """Build the corpus; returns the manifest (also written to ``<out>/manifest.json``)."""
    from tqdm import tqdm

    from vocex.model.audio import write_audio

    if cfg.songs < 1 or cfg.seconds < 1:
        raise CorpusError("--songs must be >= 1 and --seconds >= 1")
    for s in cfg.sources:
        if s not in SOURCES:
            raise CorpusError(f"unknown source {s!r}; choose from {','.join(SOURCES)}")
    if cfg.game_music and "real" not in cfg.sources:
        raise CorpusError("--game-music adds accompaniment to the real source: add real to --sources")
    check_out(cfg)
    tools = check_tools(cfg)
    started = time.monotonic()
    # synthetic singing over rendered stems needs nothing from the shared folder
    needs_shared = any(s in cfg.sources for s in ("real", "rendered"))
    pools = load_pools(cfg.shared_root, need_accompaniment="real" in cfg.sources) if needs_shared else Pools()
    screened_out = 0
    if cfg.game_music and "real" in cfg.sources:
        from vocex.train.gamemusic import game_music

        kept, screened_out = game_music(SAMPLE_RATE, progress=progress)
        for track, audio in kept:
            pools.add_accompaniment(f"games/{track.name}", {"other": audio})
    train = Path(cfg.out) / "train"
    try:
        train.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{cfg.out}: cannot create ({exc.strerror})") from None
    songs: list[dict[str, object]] = []
    jobs = [(s, i) for s in cfg.sources for i in range(cfg.songs)]
    with tempfile.TemporaryDirectory(prefix="vocex-data-") as tmp:
        for source, index in tqdm(jobs, desc=PROG, unit="song", disable=not progress, dynamic_ncols=True):
            audio, entry = make_song(source, index, cfg, pools, Path(tmp))
            name = f"{source}-{index:03d}"
            folder = train / name
            folder.mkdir(exist_ok=True)
            for stem, data in audio.items():
                write_audio(folder / f"{stem}.wav", data, SAMPLE_RATE, subtype="PCM_16")
            songs.append({"name": name, "seconds": cfg.seconds, **entry})
    seconds = {s: round(sum(float(x["seconds"]) for x in songs if x["source"] == s), 1) for s in cfg.sources}
    manifest: dict[str, object] = {
        "tool": PROG, "version": 1, "seed": cfg.seed, "sources": list(cfg.sources), "songs_per_source": cfg.songs,
        "song_seconds": cfg.seconds, "sample_rate": SAMPLE_RATE, "seconds": seconds,
        "total_seconds": round(sum(seconds.values()), 1), "chorale_fraction": cfg.chorale_fraction,
        "shared_root": str(cfg.shared_root), "vocal_clips": len(pools.vocals),
        "accompaniment_items": len(pools.accompaniments), "game_music_screened_out": screened_out, "tools": tools,
        "build_seconds": round(time.monotonic() - started, 1), "songs": songs,
    }
    (Path(cfg.out) / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path.home() / ".cache" / "vocex" / "corpus",
                   help="corpus folder (default: ~/.cache/vocex/corpus)")
    p.add_argument("--shared-root", type=Path, default=Path("../shared/data"),
                   help="folder laid out like ../shared/data (its training material only is read)")
    p.add_argument("--sources", default=",".join(SOURCES), help=f"comma-separated, from {','.join(SOURCES)}")
    p.add_argument("--songs", type=int, default=CorpusConfig.songs, help="songs per source")
    p.add_argument("--seconds", type=float, default=CorpusConfig.seconds, help="length of each song")
    p.add_argument("--seed", type=int, default=CorpusConfig.seed)
    p.add_argument("--soundfont", type=Path, default=SOUNDFONT)
    p.add_argument("--chorale-fraction", type=float, default=CorpusConfig.chorale_fraction,
                   help="share of rendered songs made from Bach chorales (the rest: generated pop)")
    p.add_argument("--game-music", action="store_true",
                   help="real source: also remix over the installed Debian game-music packages (tracks with "
                        "voices screened out; vocex.train.gamemusic)")
    p.add_argument("--force", action="store_true", help="rebuild over an existing corpus")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@console(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sources = tuple(s.strip() for s in args.sources.split(",") if s.strip())
    cfg = CorpusConfig(out=args.out, shared_root=args.shared_root, sources=sources, songs=args.songs,
                       seconds=args.seconds, seed=args.seed, soundfont=args.soundfont,
                       chorale_fraction=args.chorale_fraction, game_music=args.game_music, force=args.force)
    manifest = build(cfg, progress=not args.quiet)  # CorpusError, AudioError: exit 2; OutputError: 4
    print(f"wrote {cfg.out}: {len(manifest['songs'])} songs, {manifest['total_seconds']} s "  # type: ignore[arg-type]
          f"in {manifest['build_seconds']} s", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
