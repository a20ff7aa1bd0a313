"""``vocex-export``: write ONNX and TorchScript files (and a card) from a trained checkpoint.

    vocex-export runs/my-run/model.json -o models/ --name mymodel

writes ``models/mymodel.{pt,onnx,ts,json}``; the card lists the files it wrote.  Existing
files are never overwritten without ``--force``.  ``--stateful`` (a causal U-Net) also writes
the folder ``mymodel.stateful/``, the stateful streaming form (vocex.model.stateful: a graph
per kind of step and their weights), and marks the card to stream in that form.  ``--half``
rounds the network's parameters to float16 first and stores the weights in float16 (half the
bytes; the graphs still compute in float32): score the exported model before shipping it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import warnings
from pathlib import Path

from vocex.model.card import CHANNEL_POLICIES
from vocex.model.cli import console
from vocex.model.errors import EXIT_OK, ModelError, OutputError, raise_as
from vocex.model.files import atomic_folder, atomic_path
from vocex.model.backends import ModelFiles, load_unet, resolve_model, script_unet
from vocex.model.weightsio import share_weights

PROG = "vocex-export"
ONNX_OPSET = 17


def _atomic(dest: Path, write) -> None:  # write(tmp_path)
    with atomic_path(dest) as tmp:
        write(tmp)


def export_onnx(model, card, dest: Path, newest: int = 0, fold_batch_norm: bool = True) -> None:
    """ONNX of ``mask = model(magnitude)`` with a dynamic batch axis; with ``newest`` N, of
    ``model.newest(magnitude, N)`` (the newest N mask columns, for the live path).  Without
    ``fold_batch_norm`` the batch norms stay nodes of their own (ONNX Runtime folds them
    into the convolutions when it loads the graph), so the stored parameters are the
    network's own, e.g. exact in float16 after :func:`round_to_half`."""
    import torch

    from vocex.model.unet import NewestColumns

    if newest:
        model = NewestColumns(model, newest)

    example = torch.rand(1, 1, card.n_bins, card.context_frames)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            # the newest-columns slices are fixed by the card's window; the tracer warns anyway
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="Constant folding")
            warnings.filterwarnings("ignore", message="It is recommended that constant folding")  # eval mode: no-op
            torch.onnx.export(
                model, (example,), str(tmp), dynamo=False, opset_version=ONNX_OPSET,
                input_names=["magnitude"], output_names=["mask"],
                dynamic_axes={"magnitude": {0: "batch"}, "mask": {0: "batch"}},
                training=torch.onnx.TrainingMode.EVAL if fold_batch_norm else torch.onnx.TrainingMode.PRESERVE,
            )

    _atomic(dest, write)


def round_to_half(model) -> None:
    """Round every floating parameter and buffer of ``model`` to the nearest float16 value
    (kept in float32), in place."""
    import torch

    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())


def export(files: ModelFiles, out_dir: Path, name: str, formats: list[str], force: bool = False,
           live: dict[str, float] | None = None, channels: str | None = None, newest: int = 0,
           stateful: bool = False, peak_frames: int | None = None, checkpoint: bool = True,
           half: bool = False) -> Path:
    """Export ``formats`` (``onnx``, ``torchscript``) beside a copy of the checkpoint; with
    ``newest`` N and ``onnx``, also ``NAME.newest.onnx``, the live path's graph of the newest N
    mask columns (card file ``onnx_newest``); with ``stateful`` and ``onnx``, also
    ``NAME.stateful/``, the stateful streaming form (card file ``onnx_stateful``, card
    ``streaming: "stateful"``, normalised over ``peak_frames`` columns: the card's if None).
    When the whole-window and newest-columns graphs are both written, their weights are
    stored once, in ``NAME.weights`` beside them (card file ``weights``).  Without
    ``checkpoint`` no ``.pt`` is written and the card lists none (what a package ships: eager
    torch and training then read the weights from the ONNX graph)."""
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    targets = {"checkpoint": out_dir / f"{name}.pt", "card": out_dir / f"{name}.json"}
    if "onnx" in formats:
        targets["onnx"] = out_dir / f"{name}.onnx"
        if newest:
            targets["onnx_newest"] = out_dir / f"{name}.newest.onnx"
        if newest or half:
            targets["weights"] = out_dir / f"{name}.weights"
        if stateful:
            targets["onnx_stateful"] = out_dir / f"{name}.stateful"
    if "torchscript" in formats:
        targets["torchscript"] = out_dir / f"{name}.ts"
    src = files.path("checkpoint")
    if not checkpoint or src is None or half:  # nothing to copy: the weights travel in the ONNX graph
        del targets["checkpoint"]
    existing = [p for k, p in targets.items() if p.exists() and not (k == "checkpoint" and p == src)]
    if existing and not force:
        raise FileExistsError(f"{existing[0]} exists; use --force to overwrite")
    if newest >= files.card.context_frames:
        raise ModelError(f"--newest-columns {newest}: must be under the card's {files.card.context_frames} context frames")
    card = files.card
    if stateful:
        if not card.causal or card.members:
            raise ModelError(f"{files.card_path}: --stateful needs a single causal U-Net (vocex-train --causal)")
        if peak_frames is not None and peak_frames < 1:
            raise ModelError(f"--peak-frames {peak_frames}: must be at least 1")
        card = card.replace(streaming="stateful", peak_frames=peak_frames if peak_frames is not None else card.peak_frames)
    model = load_unet(files)
    if half:
        round_to_half(model)
    written = {}
    if "checkpoint" in targets:
        if src != targets["checkpoint"]:
            _atomic(targets["checkpoint"], lambda tmp: shutil.copyfile(src, tmp))
        written["checkpoint"] = targets["checkpoint"].name
    if "onnx" in formats:
        export_onnx(model, files.card, targets["onnx"], fold_batch_norm=not half)
        written["onnx"] = targets["onnx"].name
        if newest:
            export_onnx(model, files.card, targets["onnx_newest"], newest, fold_batch_norm=not half)
            written["onnx_newest"] = targets["onnx_newest"].name
        if "weights" in targets:
            share_weights([targets[k] for k in ("onnx", "onnx_newest") if k in written], targets["weights"], half)
            written["weights"] = targets["weights"].name
        if stateful:
            from vocex.model.stateful import StatefulUNet, export_stateful_onnx

            form = StatefulUNet(model, card.n_bins, card.stateful_peak_frames)
            with atomic_folder(targets["onnx_stateful"]) as tmp:
                export_stateful_onnx(form, tmp, ONNX_OPSET, half)
            written["onnx_stateful"] = targets["onnx_stateful"].name
    if "torchscript" in formats:
        scripted = script_unet(model)
        _atomic(targets["torchscript"], lambda tmp: torch.jit.save(scripted, str(tmp)))
        written["torchscript"] = targets["torchscript"].name
    if "onnx_stateful" not in written and card.streaming == "stateful" and "onnx" in formats:
        card = card.replace(streaming="window")  # the copy has no stateful graphs: it streams in windows
    card = card.replace(files=written, live={**card.live, **(live or {})}, channels=channels or card.channels)
    _atomic(targets["card"], lambda tmp: card.save(tmp))
    return targets["card"]


def _output_problem(exc: OSError, out_dir: Path) -> str:
    if isinstance(exc, FileExistsError):  # an existing output, or out_dir (a folder above it) is a file
        return f"{exc.filename}: exists and is not a folder" if exc.filename else str(exc)
    return f"{exc.filename or out_dir}: {exc.strerror or exc}"


@console(PROG)
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="card (.json) or checkpoint (.pt with its card beside it)")
    p.add_argument("-o", "--out-dir", type=Path, required=True)
    p.add_argument("--name", help="file stem of the exported model (default: the card's stem)")
    p.add_argument("--format", dest="formats", action="append", choices=["onnx", "torchscript"],
                   help="what to write (repeatable; default: both)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.add_argument("--channels", choices=CHANNEL_POLICIES,
                   help="record how multi-channel input is served: a mask per channel or one from the downmix")
    p.add_argument("--live-hop-batch", type=int, help="record the live default hop batch K in the card")
    p.add_argument("--live-lookahead", type=int, help="record the live default lookahead L in the card")
    p.add_argument("--live-mask-temperature", type=float, metavar="T",
                   help="record the live default mask temperature in the card (above 1 softens the mask)")
    p.add_argument("--newest-columns", type=int, default=0, metavar="N",
                   help="also write NAME.newest.onnx, which computes only the newest N mask columns: "
                        "the live path uses it when K + L <= N (the same output, less compute)")
    p.add_argument("--stateful", action="store_true",
                   help="also write the folder NAME.stateful/, the stateful streaming form of a causal "
                        "U-Net (one step per hop, per-layer state); the card then streams in that form")
    p.add_argument("--no-checkpoint", dest="checkpoint", action="store_false",
                   help="write no .pt copy of the weights (a package's models: eager torch and vocex-train "
                        "--init read them from the ONNX graph)")
    p.add_argument("--half", action="store_true",
                   help="round the network to float16 and store its ONNX weights in float16: half the "
                        "bytes, computed in float32 as before (score the result: the rounding changes it)")
    p.add_argument("--peak-frames", type=int, metavar="N",
                   help="with --stateful: normalise each column by the peak of the newest N columns "
                        "(default: the card's, else its context frames)")
    args = p.parse_args(argv)
    if args.newest_columns < 0:
        p.error("--newest-columns must be >= 0")
    files = resolve_model(args.model)
    name = args.name or files.card_path.stem
    if args.live_mask_temperature is not None and not args.live_mask_temperature > 0:
        p.error("--live-mask-temperature must be positive")
    live = {k: v for k, v in (("hop_batch", args.live_hop_batch), ("lookahead_frames", args.live_lookahead),
                              ("mask_temperature", args.live_mask_temperature)) if v is not None}
    with raise_as(OutputError, OSError, message=lambda exc: _output_problem(exc, args.out_dir)):
        card = export(files, args.out_dir, name, args.formats or ["onnx", "torchscript"], args.force, live,
                      args.channels, args.newest_columns, args.stateful, args.peak_frames, args.checkpoint,
                      args.half)
    print(f"wrote {card}", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
