"""Atomic file writes: a temporary file (or folder) in the destination folder, then a rename."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(dest: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success it replaces ``dest``.

    On any failure the temporary file is removed and ``dest`` is left as it was, so a
    crash or a full disk never leaves a half-written output.
    """
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(dest: Path) -> Iterator[Path]:
    """Yield a path beside ``dest`` for a new folder (the caller creates it); on success the
    folder takes ``dest``'s place.  An existing ``dest`` is removed only once the new folder is
    complete and in place; on any failure ``dest`` is left as it was."""
    dest = Path(dest)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        yield work / "new"
        old = work / "old"
        if dest.exists():
            dest.rename(old)
        try:
            (work / "new").rename(dest)
        except OSError:
            if old.exists():
                old.rename(dest)
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
