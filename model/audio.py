"""Audio file I/O and resampling (soundfile and soxr), with user-facing errors.

Audio at every boundary is float32, shape ``(n_samples, n_channels)``, C-contiguous.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from numpy.typing import NDArray

from vocex.model.errors import InputError
from vocex.model.files import atomic_path


class AudioError(InputError):
    """An input that is not usable audio: missing, unreadable, empty, wrong shape (exit 2; a
    ``ValueError`` as before)."""


class AudioReader:
    """An audio file opened for reading in blocks (:func:`open_audio`), validated like
    :func:`read_audio`: the header at open, every block's samples as they are read.

    ``sample_rate``, ``n_channels`` and ``n_samples`` (the header's length) are known at open.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path = Path(path)
        if not path.exists():
            raise AudioError(f"{path}: no such file")
        if path.is_dir():
            raise AudioError(f"{path}: is a directory, expected an audio file")
        try:
            self._file = sf.SoundFile(str(path))
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise _unreadable(path, exc) from None
        truncated = _truncation(self._file.extra_info)
        if truncated:
            self._file.close()
            raise AudioError(f"{path}: truncated or corrupt ({truncated})")
        self.sample_rate, self.n_channels = int(self._file.samplerate), int(self._file.channels)
        self.n_samples = int(self._file.frames)
        if self.n_samples == 0:
            self._file.close()
            raise AudioError(f"{path}: contains no audio samples")

    def blocks(self, block_size: int) -> Iterator[NDArray[np.float32]]:
        """The samples in ``(n, n_channels)`` float32 blocks of ``block_size`` (the last shorter).

        Raises:
            AudioError: unreadable samples, NaN or infinite samples, or none at all.
        """
        n_read = 0
        while True:
            try:
                block = self._file.read(block_size, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, OSError) as exc:
                raise _unreadable(self.path, exc) from None
            if block.shape[0] == 0:
                break
            if not np.all(np.isfinite(block)):
                raise AudioError(f"{self.path}: contains NaN or infinite samples")
            n_read += block.shape[0]
            yield np.ascontiguousarray(block)
        if n_read == 0:
            raise AudioError(f"{self.path}: contains no audio samples")

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_audio(path: str | os.PathLike[str]) -> AudioReader:
    """Open any format soundfile/libsndfile reads (wav, flac, ogg, mp3, ...) for reading in
    blocks; use as a context manager.

    Raises:
        AudioError: missing path, a directory, not audio, truncated, or zero samples.
    """
    return AudioReader(path)


def read_audio(path: str | os.PathLike[str]) -> tuple[NDArray[np.float32], int]:
    """Read any format soundfile/libsndfile reads (wav, flac, ogg, mp3, ...).

    Returns:
        ``(audio, sample_rate)``; ``audio`` is ``(n_samples, n_channels)`` float32.
    Raises:
        AudioError: missing path, a directory, not audio, or zero samples.
    """
    with open_audio(path) as reader:
        blocks = list(reader.blocks(max(reader.n_samples, 1 << 16)))
        audio = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
        return np.ascontiguousarray(audio), reader.sample_rate


def _unreadable(path: Path, exc: BaseException) -> AudioError:
    reason = str(exc).split(":")[-1].strip() or type(exc).__name__
    return AudioError(f"{path}: not a readable audio file ({reason})")


def _truncation(log: str) -> str | None:
    """libsndfile's own diagnosis of a cut-off file: its header log marks a chunk whose
    declared length runs past the end of the file as ``data : 352800 (should be 912)``."""
    for line in log.splitlines():
        m = re.match(r"\s*(data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", line)
        if m and int(m.group(3)) < int(m.group(2)):
            return f"its header promises {m.group(2)} bytes of audio, the file holds {m.group(3)}"
    return None


class AudioWriter:
    """An audio file written in blocks of ``(n, n_channels)`` float32; use as a context manager.

    It writes where it is told: put it inside :func:`~vocex.model.files.atomic_path` so that a
    failure or a kill never leaves a half-written file under the final name
    (:func:`write_audio` does).  The format follows the suffix (``.wav`` is 32-bit float unless
    ``subtype`` says otherwise); ``name`` is the path errors mention.  A full disk is an
    ``OSError`` with ``errno.ENOSPC``.
    """

    def __init__(self, path: str | os.PathLike[str], sample_rate: int, n_channels: int,
                 subtype: str | None = None, suffix: str | None = None, name: str | os.PathLike[str] | None = None) -> None:
        path = Path(path)
        self.name = Path(name) if name is not None else path
        suffix = (suffix or path.suffix).lower() or ".wav"
        if subtype is None and suffix == ".wav":
            subtype = "FLOAT"
        self._folder = path.parent
        self._file = self._io(lambda: sf.SoundFile(str(path), "w", sample_rate, n_channels, subtype=subtype,
                                                   format=suffix.lstrip(".").upper()), 0)

    def write(self, audio: NDArray[np.float32]) -> None:
        """Append ``(n, n_channels)`` samples."""
        self._io(lambda: self._file.write(audio), audio.nbytes)

    def close(self) -> None:
        self._io(self._file.close, 0)

    def __enter__(self) -> AudioWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _io(self, call, nbytes: int):
        try:
            return call()
        except sf.LibsndfileError as exc:  # libsndfile says only "System error." for a full disk
            if shutil.disk_usage(self._folder).free < nbytes + (1 << 20):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.name)) from None
            raise OSError(errno.EIO, f"libsndfile could not write it ({exc})", str(self.name)) from None


def write_audio(
    path: str | os.PathLike[str], audio: NDArray[np.float32], sample_rate: int, subtype: str | None = None
) -> None:
    """Write ``(n_samples, n_channels)`` audio atomically: a temporary file, then a rename.

    A failure never leaves a half-written file at ``path``.  The format follows the
    suffix (``.wav`` is written as 32-bit float unless ``subtype`` says otherwise).
    """
    path = Path(path)
    suffix = path.suffix.lower() or ".wav"
    with atomic_path(path, suffix=suffix) as tmp, AudioWriter(tmp, sample_rate, audio.shape[1], subtype, suffix, path) as out:
        out.write(audio)


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
