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
from vocex.model.separate import DEFAULT_SHIFTS

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
    parser.add_argument("--model", help="model card (.json), weights file, folder, or a shipped model by name: "
                        "default, live, live-ensemble, live-low-delay (default: the shipped model for the job)")
    parser.add_argument("--backend", choices=("auto", *backends), default="auto",
                        help="inference backend (auto: ONNX Runtime, else TorchScript)")
    parser.add_argument("--accel", choices=ACCELS, default="auto", help="CUDA when present (auto), or force one")
    parser.add_argument("--threads", type=int, help="inference threads (default: the runtime's choice)")


def add_separation_arguments(parser: argparse.ArgumentParser, streaming_help: str) -> None:
    """The separator options that ``vocex-separate`` and ``vocex-eval`` share: ``--streaming``
    with its hop batch and lookahead, the offline ``--shifts`` and ``--high-band``, and
    ``--mask-temperature`` for both paths.  :func:`separation_conflict` checks them."""
    parser.add_argument("--streaming", action="store_true", help=streaming_help)
    parser.add_argument("--hop-batch", type=int, help="streaming: hops per inference K (default: the model card's)")
    parser.add_argument("--lookahead", type=int, help="streaming: lookahead frames L (default: the model card's)")
    parser.add_argument("--shifts", type=int, default=DEFAULT_SHIFTS,
                        help=f"offline: passes at shifted STFT frames and patch borders, blended (default "
                        f"{DEFAULT_SHIFTS}; each pass costs one network call per frame; more passes score a "
                        "little better at proportionally more compute)")
    parser.add_argument("--mask-temperature", type=float, metavar="T",
                        help="divide the mask's logits by T (default: the card's, offline or live)")
    parser.add_argument("--high-band", action="store_true",
                        help="offline: give the vocals the model's top-band vocal share above its band "
                             "(brighter vocals; helps when the highs are mostly voice, hurts with bright cymbals)")


def separation_conflict(args: argparse.Namespace) -> str | None:
    """Why the options of :func:`add_separation_arguments` cannot go together, or ``None``."""
    if args.high_band and args.streaming:
        return "--high-band is for the offline path, not --streaming"
    return None
