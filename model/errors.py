"""vocex's errors: one class per kind of failure, each carrying the exit status that every
vocex command ends with when it meets one (:func:`vocex.model.cli.console` does the ending).

Exit codes (documented in the README):
    0  success
    1  unexpected internal error (a bug: please report it with the traceback)
    2  bad arguments or bad input (missing / unreadable / empty audio, bad data folder)
    3  model problem (missing, truncated or mismatched model file or card)
    4  output problem (output exists without --force, unwritable or full location)
    5  audio device problem (unknown device, unsupported rate or channel count, server gone)
  130  interrupted (Ctrl-C)

The kinds keep the built-in base their callers catch: :class:`InputError` and
:class:`ModelError` are ``ValueError``s, :class:`OutputError` an ``OSError``,
:class:`DeviceError` a ``RuntimeError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_INPUT = 2
EXIT_MODEL = 3
EXIT_OUTPUT = 4
EXIT_DEVICE = 5
EXIT_INTERRUPTED = 130


class VocexError(Exception):
    """A failure the user can act on: a command prints ``<prog>: error: <message>`` on one
    line and exits with ``exit_code``."""

    exit_code = EXIT_INTERNAL


class InputError(VocexError, ValueError):
    """Bad arguments or bad input: audio, a data folder, settings (exit 2)."""

    exit_code = EXIT_INPUT


class ModelError(VocexError, ValueError):
    """A model that cannot be loaded: missing, truncated or not matching its card (exit 3)."""

    exit_code = EXIT_MODEL


class OutputError(VocexError, OSError):
    """An output that exists (without ``--force``) or cannot be written (exit 4)."""

    exit_code = EXIT_OUTPUT


class DeviceError(VocexError, RuntimeError):
    """The audio device cannot be used as asked, or went away (exit 5)."""

    exit_code = EXIT_DEVICE


@contextmanager
def raise_as(kind: type[VocexError], *catch: type[BaseException],
             message: Callable[[BaseException], str] = str) -> Iterator[None]:
    """Inside the block, an exception of a ``catch`` type becomes a ``kind`` error whose
    message is ``message(exc)`` (default: its own); a :class:`VocexError` passes unchanged.

    For a library's generic exception whose kind depends on the caller: a ``ValueError`` from
    the streaming settings is bad input, an ``OSError`` while writing is an output problem."""
    try:
        yield
    except VocexError:
        raise
    except catch as exc:
        raise kind(message(exc)) from exc
