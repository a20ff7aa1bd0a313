"""What every vocex command shares: exit codes, model options, one-line errors.

Exit codes (documented in the README):
    0  success
    1  unexpected internal error (a bug: please report it with the traceback)
    2  bad arguments or bad input (missing / unreadable / empty audio, bad data folder)
    3  model problem (missing, truncated or mismatched model file or card)
    4  output problem (output exists without --force, unwritable or full location)
    5  audio device problem (unknown device, unsupported rate or channel count, server gone)
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import sys

from vocex.model.backends import ACCELS, BACKENDS

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_INPUT = 2
EXIT_MODEL = 3
EXIT_OUTPUT = 4
EXIT_DEVICE = 5
EXIT_INTERRUPTED = 130


def fail(prog: str, message: str, code: int) -> int:
    """Print ``prog: error: message`` on one line of stderr; return ``code``."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return code


def add_model_arguments(parser: argparse.ArgumentParser, backends: tuple[str, ...] = tuple(BACKENDS)) -> None:
    """``--model``, ``--backend``, ``--accel``, ``--threads``."""
    parser.add_argument("--model", help="model card (.json), weights file or folder (default: shipped model)")
    parser.add_argument("--backend", choices=("auto", *backends), default="auto",
                        help="inference backend (auto: ONNX Runtime, else TorchScript)")
    parser.add_argument("--accel", choices=ACCELS, default="auto", help="CUDA when present (auto), or force one")
    parser.add_argument("--threads", type=int, help="inference threads (default: the runtime's choice)")
