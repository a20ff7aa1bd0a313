"""``vocex-average``: one model whose weights are the mean of several fine-tuned models.

    vocex-average runs/a/model.json runs/b/model.json --out runs/soup

Models fine-tuned from the same starting weights on different data or seeds usually stay in
one basin of the loss, and the mean of their weights scores like an ensemble of them at the
cost of one model ("model soups", Wortsman et al., ICML 2022; the same operation as
checkpoint averaging).  Every parameter and batch-norm statistic is averaged; the cards
must agree on everything that shapes the network and its front end.  Writes
``OUT/model.pt`` and ``OUT/model.json`` (the first member's card, with the members'
training records under ``training.average_of``); export it with ``vocex-export``.

``--ensemble`` keeps the members instead: one network whose mask is the mean of theirs
(:class:`vocex.model.unet.UNetEnsemble`), at the cost of all of them per call.  Its members
must share the front end but may differ in width, causality and mask delay (a causal member
beside a symmetric one disagrees with it most, which is what an ensemble gains from).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vocex.model.backends import ModelFiles, load_unet, resolve_model
from vocex.model.card import ModelCard, ensemble_fields
from vocex.model.cli import console
from vocex.model.errors import EXIT_OK, InputError, ModelError, OutputError, raise_as
from vocex.model.files import atomic_path

PROG = "vocex-average"
FRONT_FIELDS = ("sample_rate", "n_fft", "hop", "window", "n_bins", "context_frames", "channels")
SHAPE_FIELDS = FRONT_FIELDS + ("base_channels", "causal", "mask_delay", "members")


def _check_agree(members: list[ModelFiles], fields: tuple[str, ...]) -> None:
    first = members[0].card
    for m in members[1:]:
        diff = [f for f in fields if getattr(m.card, f) != getattr(first, f)]
        if diff:
            raise ModelError(f"{m.card_path} differs from {members[0].card_path} in {', '.join(diff)}")


def average(members: list[ModelFiles]) -> dict[str, Any]:
    """Mean state dict of ``members`` (integer counters such as ``num_batches_tracked`` take the
    largest value).  Raises :class:`ModelError` when the cards disagree on the network's shape."""
    import torch

    _check_agree(members, SHAPE_FIELDS)
    states = [load_unet(m).state_dict() for m in members]
    out: dict[str, Any] = {}
    for key, value in states[0].items():
        stacked = torch.stack([s[key] for s in states])
        out[key] = stacked.mean(0) if value.is_floating_point() else stacked.max(0).values
    return out


def ensemble(members: list[ModelFiles], name: str) -> tuple[dict[str, Any], ModelCard]:
    """State dict and card (without its files) of the ensemble of ``members`` (see the module doc)."""
    _check_agree(members, FRONT_FIELDS)
    nested = [m.card_path for m in members if m.card.members]
    if nested:
        raise ModelError(f"{nested[0]} is an ensemble already; give its members instead")
    state: dict[str, Any] = {}
    for i, m in enumerate(members):
        state.update({f"members.{i}.{k}": v for k, v in load_unet(m).state_dict().items()})
    specs = [{"base_channels": m.card.base_channels, "causal": m.card.causal, "mask_delay": m.card.mask_delay}
             for m in members]
    first, whole = members[0].card, ensemble_fields(specs)
    card = first.replace(
        name=name, scores={}, members=specs, **whole,
        live={**first.live, "lookahead_frames": max(int(first.live.get("lookahead_frames", 0)), whole["mask_delay"])},
        training={"ensemble_of": [{"model": str(m.card_path), **m.card.training} for m in members]})
    return state, card


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="model cards (.json), weights files or folders, two or more")
    p.add_argument("--out", type=Path, required=True, help="folder for model.pt and model.json")
    p.add_argument("--name", help="name in the new card (default: vocex-unet-average or -ensemble)")
    p.add_argument("--ensemble", action="store_true",
                   help="keep every member and average their masks (cost: all of them per call)")
    p.add_argument("--force", action="store_true", help="overwrite an existing model in --out")
    return p


@console(PROG)
def main(argv: list[str] | None = None) -> int:
    import torch

    args = build_parser().parse_args(argv)
    if len(args.models) < 2:
        raise InputError("give two or more models to average")
    weights, card_path = args.out / "model.pt", args.out / "model.json"
    if not args.force and (weights.exists() or card_path.exists()):
        raise OutputError(f"{args.out} already holds a model; use --force to overwrite")
    members = [resolve_model(m) for m in args.models]  # ModelError, CardError: exit 3
    if args.ensemble:
        state, card = ensemble(members, args.name or "vocex-unet-ensemble")
    else:
        state = average(members)
        card = members[0].card.replace(
            name=args.name or "vocex-unet-average", scores={},
            training={"average_of": [{"model": str(m.card_path), **m.card.training} for m in members]})
    card = card.replace(files={"checkpoint": weights.name})
    with raise_as(OutputError, OSError, message=lambda exc: f"cannot write to {args.out}: {exc.strerror or exc}"):
        args.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(weights) as tmp:
            torch.save(state, tmp)
        with atomic_path(card_path) as tmp:
            card.save(tmp)
    what = "ensemble" if args.ensemble else "mean"
    print(f"wrote {weights} and {card_path}: {what} of {len(members)} models", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
