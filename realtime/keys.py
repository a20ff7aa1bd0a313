"""Keys typed in ``vocex-live``'s terminal change the separator's mode, mix and bypass while
it plays (:data:`KEYS_HELP`); a thread of its own reads them, never the audio thread."""

from __future__ import annotations

import os
import select
import sys
import threading
import time
from typing import Any

from vocex.realtime.stream import StreamingSeparator

MIX_STEP = 0.1  # what one + or - key adds to or takes from the mix
KEYS_HELP = """keys while it plays (in a terminal, unless --no-status):
  k  karaoke (the song without its vocals)     v  vocals only
  +  mix up 10 %      -  mix down 10 %          b  bypass on/off (the dry input)
  q  quit (as --duration ends it)
each change crossfades over a few milliseconds and shows in the status line"""


class KeyControl:
    """Keys typed in a terminal change a separator's mode, mix and bypass while it plays.

    ``start()`` puts the terminal ``fd`` in cbreak mode (keys arrive one by one, unechoed;
    Ctrl-C still interrupts) and reads it on a thread of its own, never the audio thread;
    ``close()`` stops the thread and gives the terminal its settings back.  Every change is
    recorded in ``events`` (when, as Unix time; the key; the new mode, mix and bypass)."""

    def __init__(self, separator: StreamingSeparator, stop_event: threading.Event, fd: int = 0) -> None:
        self.sep, self.stop_event, self.fd = separator, stop_event, fd
        self.events: list[dict[str, Any]] = []
        self.quit = False
        self._saved: list | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def apply(self, key: str) -> bool:
        """Act on one key; returns whether it was one of :data:`KEYS_HELP`."""
        sep = self.sep
        if key in "kv":
            sep.mode = "karaoke" if key == "k" else "vocals"
        elif key in "+=-_":
            step = MIX_STEP if key in "+=" else -MIX_STEP
            sep.mix = min(1.0, max(0.0, round(sep.mix + step, 6)))
        elif key == "b":
            sep.bypass = not sep.bypass
        elif key == "q":
            self.quit = True
            self.stop_event.set()
        else:
            return False
        self.events.append({"unix": round(time.time(), 3), "key": key, "mode": sep.mode, "mix": sep.mix,
                            "bypass": sep.bypass})
        return True

    def start(self) -> bool:
        """Returns False (and changes nothing) if the terminal refuses cbreak mode."""
        import termios
        import tty

        try:
            self._saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd, termios.TCSANOW)
        except (termios.error, OSError):
            self._saved = None
            return False
        self._thread = threading.Thread(target=self._read, name="vocex-keys", daemon=True)
        self._thread.start()
        return True

    def _read(self) -> None:
        while not self._done.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if not ready:
                continue
            data = os.read(self.fd, 64)
            if not data:  # the terminal is gone
                return
            for key in data.decode(errors="ignore"):
                self.apply(key)

    def close(self) -> None:
        """Stop reading and restore the terminal (safe to call twice, or before ``start``)."""
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self._saved is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None


def keys_wanted(no_status: bool, stdin=None) -> bool:
    """Key control runs unless ``--no-status``, only when stdin is a terminal, and not in
    the background (``vocex-live &``: changing the terminal's settings would stop it)."""
    if no_status:
        return False
    try:
        fd = (sys.stdin if stdin is None else stdin).fileno()
        if not os.isatty(fd):
            return False
    except (AttributeError, ValueError, OSError):  # no stdin, or a closed one
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:  # a terminal that is not our controlling one: no job control to mind
        return True
