"""What every vocex command shares: the console wrapper that turns errors into one line and
the documented exit status (:mod:`vocex.model.errors` lists them), model options.
"""

from __future__ import annotations

import argparse
import functools
import sys
import traceback
from collections.abc import Callable

from vocex.model.backends import ACCELS, BACKENDS, ModelFiles, shipped_models
from vocex.model.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, InputError, VocexError
from vocex.model.separate import DEFAULT_SHIFTS

Main = Callable[[list[str] | None], int]


def fail(prog: str, message: object, code: int) -> int:
    """Print ``prog: error: message`` on one line of stderr; return ``code``."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return code


def console(prog: str) -> Callable[[Main], Main]:
    """Decorator for a command's ``main(argv=None) -> int``, the same for every console script:

    - a :class:`vocex.model.errors.VocexError` prints ``prog: error: <message>`` on one line
      and returns its ``exit_code``;
    - Ctrl-C (``KeyboardInterrupt``) prints ``prog: interrupted`` (and ``; <what it says>``
      when a command re-raises it with a word for the user) and returns 130;
    - any other exception is a bug: its traceback, one line asking for a report, and 1.

    argparse's own exits (``SystemExit``) pass through.  The wrapped ``main`` returns the
    status, so tests call it directly; the console script's ``sys.exit(main())`` ends with it."""

    def wrap(body: Main) -> Main:
        @functools.wraps(body)
        def main(argv: list[str] | None = None) -> int:
            try:
                return body(argv)
            except VocexError as exc:
                return fail(prog, exc, exc.exit_code)
            except KeyboardInterrupt as exc:
                print(f"{prog}: interrupted{f'; {exc}' if str(exc) else ''}", file=sys.stderr)
                return EXIT_INTERRUPTED
            except Exception as exc:
                traceback.print_exc()
                return fail(prog, f"internal error ({type(exc).__name__}): a bug, please report it with the "
                            "traceback above", EXIT_INTERNAL)

        main.console_prog = prog  # type: ignore[attr-defined]  # which command it ends (tests check every script)
        return main

    return wrap


def add_model_arguments(parser: argparse.ArgumentParser, backends: tuple[str, ...] = tuple(BACKENDS),
                        threads_default: str = "the runtime's choice") -> None:
    """``--model``, ``--backend``, ``--accel``, ``--threads`` (``threads_default`` says what
    the command does without it)."""
    parser.add_argument("--model", help="model card (.json), weights file, folder, or a shipped model by name: "
                        f"{', '.join(shipped_models())} (default: the shipped model for the job)")
    parser.add_argument("--backend", choices=("auto", *backends), default="auto",
                        help="inference backend (auto: ONNX Runtime, else TorchScript)")
    parser.add_argument("--accel", choices=ACCELS, default="auto", help="CUDA when present (auto), or force one")
    parser.add_argument("--threads", type=int, help=f"inference threads (default: {threads_default})")


def add_separation_arguments(parser: argparse.ArgumentParser, streaming_help: str) -> None:
    """The separator options that ``vocex-separate`` and ``vocex-eval`` share: ``--streaming``
    with its hop batch and lookahead, the offline ``--shifts`` and ``--high-band``, and
    ``--mask-temperature`` for both paths.  :func:`check_separation_options` checks them."""
    parser.add_argument("--streaming", action="store_true", help=streaming_help)
    parser.add_argument("--hop-batch", type=int, help="streaming: hops per inference K (default: the model card's)")
    parser.add_argument("--lookahead", type=int, help="streaming: lookahead frames L (default: the model card's)")
    parser.add_argument("--shifts", type=int, default=DEFAULT_SHIFTS,
                        help=f"offline: passes at shifted STFT frames and patch borders, blended (default "
                        f"{DEFAULT_SHIFTS}; each pass costs one network call per frame; more passes score a "
                        "little better at proportionally more compute)")
    parser.add_argument("--mask-temperature", type=float, metavar="T",
                        help="divide the mask's logits by T (default: the card's, offline or live)")
    parser.add_argument("--high-band", action=argparse.BooleanOptionalAction, default=None,
                        help="offline: give the vocals the model's top-band vocal share above its band, or "
                             "not (default: the card's; the shipped default model does): sibilants and breaths "
                             "go with the vocals; bright cymbals can follow them")


def check_separation_options(args: argparse.Namespace) -> None:
    """Raise :class:`~vocex.model.errors.InputError` if the options of
    :func:`add_separation_arguments` cannot go together."""
    if args.high_band and args.streaming:
        raise InputError("--high-band is for the offline path, not --streaming")


def stream_if_stateful(args: argparse.Namespace, files: ModelFiles, prog: str) -> None:
    """A model that streams statefully (card ``streaming: "stateful"``) separates a file as
    its stream, the causal network run over the whole signal that it was trained for (in
    window patches its first columns would lack their past): switch ``args.streaming`` on
    with a note on stderr, or raise :class:`~vocex.model.errors.InputError` for an option of
    the offline path."""
    if files.card.streaming != "stateful" or args.streaming:
        return
    name = files.card_path.stem
    for option, given in (("--high-band", args.high_band), ("--plot", getattr(args, "plot", False))):
        if given:
            raise InputError(f"{option} is for the offline path; {name} streams statefully, so it separates "
                             "as a stream")
    args.streaming = True
    print(f"{prog}: {name} streams statefully: separating as its stream (--streaming)", file=sys.stderr)
