"""Audio file I/O and resampling (soundfile and soxr), with user-facing errors.

Audio at every boundary is float32, shape ``(n_samples, n_channels)``, C-contiguous.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from numpy.typing import NDArray

from vocex.model.files import atomic_path


class AudioError(ValueError):
    """An input that is not usable audio: missing, unreadable, empty, wrong shape."""


def read_audio(path: str | os.PathLike[str]) -> tuple[NDArray[np.float32], int]:
    """Read any format soundfile/libsndfile reads (wav, flac, ogg, mp3, ...).

    Returns:
        ``(audio, sample_rate)``; ``audio`` is ``(n_samples, n_channels)`` float32.
    Raises:
        AudioError: missing path, a directory, not audio, or zero samples.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, expected an audio file")
    try:
        with sf.SoundFile(str(path)) as f:  # one open: the header log, then the samples
            truncated = _truncation(f.extra_info)
            audio, sample_rate = f.read(dtype="float32", always_2d=True), f.samplerate
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        reason = str(exc).split(":")[-1].strip() or type(exc).__name__
        raise AudioError(f"{path}: not a readable audio file ({reason})") from None
    if truncated:
        raise AudioError(f"{path}: truncated or corrupt ({truncated})")
    if audio.shape[0] == 0:
        raise AudioError(f"{path}: contains no audio samples")
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{path}: contains NaN or infinite samples")
    return np.ascontiguousarray(audio), int(sample_rate)


def _truncation(log: str) -> str | None:
    """libsndfile's own diagnosis of a cut-off file: its header log marks a chunk whose
    declared length runs past the end of the file as ``data : 352800 (should be 912)``."""
    for line in log.splitlines():
        m = re.match(r"\s*(data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", line)
        if m and int(m.group(3)) < int(m.group(2)):
            return f"its header promises {m.group(2)} bytes of audio, the file holds {m.group(3)}"
    return None


def write_audio(
    path: str | os.PathLike[str], audio: NDArray[np.float32], sample_rate: int, subtype: str | None = None
) -> None:
    """Write ``(n_samples, n_channels)`` audio atomically: a temporary file, then a rename.

    A failure never leaves a half-written file at ``path``.  The format follows the
    suffix (``.wav`` is written as 32-bit float unless ``subtype`` says otherwise).
    """
    path = Path(path)
    suffix = path.suffix.lower() or ".wav"
    if subtype is None and suffix == ".wav":
        subtype = "FLOAT"
    with atomic_path(path, suffix=suffix) as tmp:
        try:
            sf.write(str(tmp), audio, sample_rate, subtype=subtype, format=suffix.lstrip(".").upper())
        except sf.LibsndfileError as exc:  # libsndfile says only "System error." for a full disk
            if shutil.disk_usage(path.parent).free < audio.nbytes + (1 << 20):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
            raise OSError(errno.EIO, f"libsndfile could not write it ({exc})", str(path)) from None


def resample(
    audio: NDArray[np.float32], in_rate: int, out_rate: int, n_out: int | None = None
) -> NDArray[np.float32]:
    """Resample ``(n_samples, n_channels)`` float32 with soxr (HQ).

    ``n_out`` trims or zero-pads the result to an exact length (for round trips).
    """
    if in_rate == out_rate:
        out = audio
    else:
        out = soxr.resample(audio, in_rate, out_rate, quality="HQ").astype(np.float32, copy=False)
    if n_out is not None and out.shape[0] != n_out:
        fixed = np.zeros((n_out, audio.shape[1]), dtype=np.float32)
        n = min(n_out, out.shape[0])
        fixed[:n] = out[:n]
        out = fixed
    return np.ascontiguousarray(out, dtype=np.float32)


def load_audio(path: str | os.PathLike[str], sample_rate: int) -> NDArray[np.float32]:
    """Read a file and resample it to ``sample_rate``: ``(n_samples, n_channels)``."""
    audio, rate = read_audio(path)
    return resample(audio, rate, sample_rate)
