"""``vocex-train``: train the U-Net on random-mix patches (Adam, the paper's L1 loss).

Resumable: the run folder holds ``checkpoint.pt`` (model, optimiser, step, sampler state),
written every ``--checkpoint-every`` steps and on exit (including Ctrl-C), and picked up by
the same command.  The final weights are ``model.pt`` (a plain state dict) with its card
``model.json``; ``vocex-export`` turns them into ONNX / TorchScript.

Runs unchanged under ``torchrun --nproc-per-node N`` (DistributedDataParallel, gloo on CPU,
NCCL on CUDA): each rank draws its own patches, rank 0 validates and writes.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vocex.model.card import PRESETS, CardError, FrontEnd, ModelCard
from vocex.model.dsp import WINDOWS, default_window
from vocex.model.cli import console
from vocex.model.errors import EXIT_OK, InputError, ModelError, raise_as
from vocex.train.data import Corpus, DataError, PatchSampler, add_musdb_like, add_shared
from vocex.train.gamemusic import APT_INSTALL, add_game_music

PROG = "vocex-train"


@dataclass(frozen=True)
class TrainConfig:
    out: Path
    preset: str = "paper"
    sample_rate: int | None = None
    n_fft: int | None = None
    hop: int | None = None
    window: str | None = None
    n_bins: int = 512
    context_frames: int = 128
    base_channels: int = 16
    causal: bool = False
    mask_delay: int = 0
    stateful: bool = False
    peak_frames: int | None = None
    steps: int = 2000
    minutes: float | None = None
    batch_size: int = 8
    lr: float = 1e-3
    min_lr: float = 1e-4
    seed: int = 0
    val_fraction: float = 0.1
    val_batches: int = 4
    val_every: int = 200
    checkpoint_every: int = 100
    threads: int | None = None
    random_mix: bool = True
    newest_weight: float = 0.0
    newest_columns: int = 0
    newest_lookahead: int = 0
    random_context: float = 0.0
    init: Path | None = None
    source_weights: tuple[tuple[str, float], ...] = ()

    def front_end(self) -> FrontEnd:
        base = PRESETS[self.preset]()
        n_fft = self.n_fft or base.n_fft
        hop = self.hop or base.hop
        window = self.window or (base.window if (n_fft, hop) == (base.n_fft, base.hop) else default_window(n_fft, hop))
        return FrontEnd(self.sample_rate or base.sample_rate, n_fft, hop, window)


def _sliding_peak_model(unet, frames: int):  # UNet -> nn.Module
    """The U-Net on input normalised as the stateful stream normalises it
    (:func:`vocex.model.unet.sliding_peak_normalise`)."""
    from torch import nn

    from vocex.model.unet import sliding_peak_normalise

    class SlidingPeak(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.unet = unet

        def forward(self, magnitude):
            return self.unet.forward_scaled(sliding_peak_normalise(magnitude, frames))

    return SlidingPeak()


def shorten_context(mix: np.ndarray, voc: np.ndarray, share: float, keep: int,
                    rng: np.random.Generator) -> None:
    """Zero the oldest columns of a random ``share`` of the patches ``(batch, 1, bins, frames)``
    in place, keeping at least the newest ``keep``: what the live window holds while a stream
    fills up from silence."""
    frames = mix.shape[-1]
    for i in np.flatnonzero(rng.random(mix.shape[0]) < share):
        cut = int(rng.integers(1, frames - keep + 1))
        mix[i, ..., :cut] = 0.0
        voc[i, ..., :cut] = 0.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, final model)")
    p.add_argument("--musdb-root", type=Path, action="append", default=[],
                   help="MUSDB18 / MUSDB18-HQ / DSD100 folder; its training songs are used (repeatable)")
    p.add_argument("--shared-root", type=Path, action="append", default=[],
                   help="folder laid out like ../shared/data (training material only is read)")
    p.add_argument("--game-music", action="store_true",
                   help="add the installed Debian game-music packages as accompaniment (source games), "
                        "tracks with voices screened out: " + APT_INSTALL)
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    p.add_argument("--sample-rate", type=int, help="override the preset's sample rate (Hz)")
    p.add_argument("--n-fft", type=int, help="override the preset's FFT size")
    p.add_argument("--hop", type=int, help="override the preset's hop")
    p.add_argument("--window", choices=WINDOWS,
                   help="STFT window (default: sqrt_hann at up to 50%% hop, sine_taper above); low_delay "
                        "(asymmetric) and sqrt_hann_low_delay synthesise only a frame's newest 2 hops, so a "
                        "stream waits 2 hops for the window instead of n_fft (live models)")
    p.add_argument("--n-bins", type=int, default=TrainConfig.n_bins)
    p.add_argument("--context-frames", type=int, default=TrainConfig.context_frames)
    p.add_argument("--base-channels", type=int, default=TrainConfig.base_channels,
                   help="width of the first layer (16 = the paper)")
    p.add_argument("--causal", action="store_true",
                   help="time-causal U-Net: every mask column is predicted from its past alone, as a "
                        "stream's newest columns are (live models)")
    p.add_argument("--mask-delay", type=int, default=0,
                   help="with --causal: mask column t is trained as frame t - D's, so every frame's "
                        "mask reads D frames of its future (streams then use lookahead >= D)")
    p.add_argument("--stateful", action="store_true",
                   help="with --causal: a model the live path steps column by column (vocex-export --stateful); "
                        "each column is normalised by the peak of the newest --peak-frames columns, in training "
                        "as in the stream, instead of the patch by its peak")
    p.add_argument("--peak-frames", type=int,
                   help="with --stateful: columns whose peak normalises a column (default: --context-frames)")
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--minutes", type=float, help="stop (and save) after this much training time")
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--min-lr", type=float, default=TrainConfig.min_lr, help="cosine decay floor")
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    p.add_argument("--val-every", type=int, default=TrainConfig.val_every)
    p.add_argument("--checkpoint-every", type=int, default=TrainConfig.checkpoint_every)
    p.add_argument("--threads", type=int, help="torch intra-op threads per process")
    p.add_argument("--no-random-mix", dest="random_mix", action="store_false",
                   help="aligned pairs only (no voice-over-other-accompaniment mixes)")
    p.add_argument("--newest-weight", type=float, default=0.0,
                   help="extra loss weight on the newest --newest-columns frames (live models)")
    p.add_argument("--newest-columns", type=int, default=0)
    p.add_argument("--newest-lookahead", type=int, default=0,
                   help="the weighted columns end this many frames before the newest: the columns a "
                        "stream with lookahead L outputs (vocex-live --lookahead L)")
    p.add_argument("--random-context", type=float, default=TrainConfig.random_context,
                   help="share of patches whose oldest columns are zeroed at random (live models: the "
                        "window a stream has while it fills, so the right edge is learnt with any context)")
    p.add_argument("--init", type=Path,
                   help="start from these weights: a model.pt of the same or a narrower width (widened "
                        "to --base-channels, same function), or a model's .onnx graph of the same shape "
                        "(e.g. a shipped model's)")
    p.add_argument("--source-weight", dest="source_weights", type=_source_weight, action="append", default=[],
                   metavar="SOURCE=W",
                   help="draw this source's items W times as often as others' (1 by default, 0 leaves it "
                        "out); sources: mir1k, ssvd, gtsinger, voice, instrumental, bach10, excerpt8k, games "
                        "(repeatable)")
    return p


def _source_weight(value: str) -> tuple[str, float]:
    name, sep, weight = value.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, float(weight)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SOURCE=WEIGHT, got {value!r}") from None


def column_weights(frames: int, columns: int, weight: float, lookahead: int = 0) -> np.ndarray:
    """Loss weights over a patch's ``frames`` columns: 1, plus ``weight`` on the ``columns``
    that a stream with ``lookahead`` frames of future context outputs, i.e. columns
    ``[frames - lookahead - columns, frames - lookahead)``."""
    out = np.ones(frames, dtype=np.float32)
    out[frames - lookahead - columns : frames - lookahead] += weight
    return out


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


def _cosine_lr(cfg: TrainConfig, step: int) -> float:
    frac = min(step / max(cfg.steps, 1), 1.0)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * frac))


def train(cfg: TrainConfig, corpus: Corpus, sources: dict[str, object]) -> Path:
    """Train; returns the path of the final ``model.pt``."""
    import torch
    import torch.distributed as dist
    from tqdm import tqdm

    from vocex.model.unet import UNet, delayed_l1

    rank, world = _distributed()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = torch.device(f"cuda:{rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)

    fe = cfg.front_end()
    train_set, val_set = corpus.split(cfg.val_fraction)
    if not val_set.pairs and not (val_set.vocals and val_set.accompaniments):
        val_set = train_set  # tiny corpora: validate on fresh random mixes of the same pool
    sampler = PatchSampler(train_set, fe, cfg.n_bins, cfg.context_frames, seed=cfg.seed * 1000 + rank,
                           random_mix=cfg.random_mix, source_weights=dict(cfg.source_weights))
    model = UNet(cfg.base_channels, causal=cfg.causal).to(device)
    peak_frames = cfg.peak_frames or cfg.context_frames
    run = _sliding_peak_model(model, peak_frames) if cfg.stateful else model  # what the loss sees
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    out = cfg.out
    ckpt_path = out / "checkpoint.pt"
    step = 0
    best_val = math.inf
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        best_val = float(state["best_val"])
        sampler.rng.bit_generator.state = state["sampler_rng"][rank] if rank < len(state["sampler_rng"]) else sampler.rng.bit_generator.state
        if rank == 0:
            print(f"resuming {ckpt_path} at step {step}", file=sys.stderr)
    elif cfg.init is not None:
        model.load_state_dict(_init_state(cfg.init, model, cfg.seed))
        if rank == 0:
            print(f"starting from {cfg.init}", file=sys.stderr)
    net = torch.nn.parallel.DistributedDataParallel(run) if world > 1 else run

    weights = None
    if cfg.newest_weight > 0 and cfg.newest_columns > 0:
        weights = torch.from_numpy(column_weights(cfg.context_frames, cfg.newest_columns, cfg.newest_weight,
                                                  cfg.newest_lookahead)).to(device)

    val_rng_seed = 12345
    val_sampler = PatchSampler(val_set, fe, cfg.n_bins, cfg.context_frames, seed=val_rng_seed)
    val_batches = [val_sampler.batch(cfg.batch_size) for _ in range(cfg.val_batches)] if rank == 0 else []

    def validate() -> float:
        model.eval()
        total = 0.0
        with torch.no_grad():
            for mix, voc in val_batches:
                m, v = torch.from_numpy(mix).to(device), torch.from_numpy(voc).to(device)
                total += float(delayed_l1(run(m), m, v, cfg.mask_delay))
        model.train()
        return total / max(len(val_batches), 1)

    def save_checkpoint() -> None:
        if rank != 0:
            return
        rng_states = [sampler.rng.bit_generator.state]
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                    "best_val": best_val, "sampler_rng": rng_states}, tmp)
        os.replace(tmp, ckpt_path)

    started = time.monotonic()
    bar = tqdm(total=cfg.steps, initial=step, desc="train", disable=rank != 0, dynamic_ncols=True)
    model.train()
    loss_avg = None
    try:
        while step < cfg.steps:
            if cfg.minutes is not None and time.monotonic() - started > cfg.minutes * 60:
                if rank == 0:
                    print(f"\n--minutes {cfg.minutes} reached at step {step}", file=sys.stderr)
                break
            for group in opt.param_groups:
                group["lr"] = _cosine_lr(cfg, step)
            mix, voc = sampler.batch(cfg.batch_size)
            if cfg.random_context > 0:
                shorten_context(mix, voc, cfg.random_context, max(cfg.newest_columns + cfg.newest_lookahead, 1),
                                np.random.default_rng([cfg.seed, rank, step]))
            m, v = torch.from_numpy(mix).to(device), torch.from_numpy(voc).to(device)
            loss = delayed_l1(net(m), m, v, cfg.mask_delay, weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            value = float(loss.detach())
            loss_avg = value if loss_avg is None else 0.98 * loss_avg + 0.02 * value
            bar.update(1)
            bar.set_postfix(loss=f"{loss_avg:.4f}", lr=f"{_cosine_lr(cfg, step):.1e}")
            if rank == 0 and step % cfg.val_every == 0:
                val = validate()
                best_val = min(best_val, val)
                bar.write(f"step {step}: train {loss_avg:.4f}  val {val:.4f}")
            if step % cfg.checkpoint_every == 0:
                save_checkpoint()
    finally:
        bar.close()
        save_checkpoint()
    final = out / "model.pt"
    if rank == 0:
        val = validate() if val_batches else float("nan")
        torch.save(model.state_dict(), final)
        card = ModelCard.from_front_end(
            "vocex-unet", fe, n_bins=cfg.n_bins, context_frames=cfg.context_frames,
            base_channels=cfg.base_channels, causal=cfg.causal, mask_delay=cfg.mask_delay,
            **({"streaming": "stateful", "peak_frames": peak_frames} if cfg.stateful else {}),
            training={
                "data": sources,
                "corpus_seconds": {k: round(v, 1) for k, v in corpus.seconds().items()},
                "steps": step, "batch_size": cfg.batch_size, "processes": world,
                "optimizer": f"Adam lr {cfg.lr} cosine to {cfg.min_lr}",
                "loss": "L1(mask * mixture, vocals)"
                + (f", newest {cfg.newest_columns} columns weighted +{cfg.newest_weight}" if weights is not None else "")
                + (f" (lookahead {cfg.newest_lookahead})" if weights is not None and cfg.newest_lookahead else "")
                + (f", oldest columns zeroed in {cfg.random_context:.0%} of patches" if cfg.random_context > 0 else "")
                + (f", mask column t for frame t - {cfg.mask_delay}" if cfg.mask_delay else ""),
                "random_mix": cfg.random_mix, "seed": cfg.seed,
                **({"source_weights": dict(cfg.source_weights)} if cfg.source_weights else {}),
                "init": str(cfg.init) if cfg.init else None,
                "validation_l1": round(val, 5),
                "train_seconds": round(time.monotonic() - started, 1),
            },
            files={"checkpoint": "model.pt"},
        )
        card.save(out / "model.json")
        print(f"wrote {final} and {out / 'model.json'} (step {step}, val L1 {val:.4f})", file=sys.stderr)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return final


def _init_state(path: Path, model, seed: int = 0) -> dict:
    """The state dict ``--init`` names: a ``model.pt`` state dict, or an ONNX graph's weights
    (a shipped model's ``.onnx``; an encoder batch norm the exporter folded into its
    convolution starts as an identity, :mod:`vocex.model.weightsio`).  A ``model.pt`` of a
    narrower U-Net is widened to ``model``'s width, computing the same function
    (:mod:`vocex.train.widen`)."""
    import torch

    from vocex.train.widen import base_width, widen_state

    if path.suffix == ".onnx":
        from vocex.model.weightsio import state_dict_from_onnx

        return state_dict_from_onnx(path, model.state_dict())
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("not a state dict of tensors (a model.pt written by vocex-train)")
    if "encoder.0.0.weight" in state and base_width(state) < model.encoder[0][0].out_channels:
        state = widen_state(state, model.encoder[0][0].out_channels, seed)
    return state


def _check_init(path: Path, cfg: TrainConfig) -> str | None:
    """Why ``--init`` cannot start this run, or ``None``."""
    from vocex.model.unet import UNet

    if not path.is_file():
        return f"{path}: --init needs an existing weights file (a model.pt or a model's .onnx)"
    model = UNet(cfg.base_channels, causal=cfg.causal)
    try:
        model.load_state_dict(_init_state(path, model))
    except Exception as exc:  # truncated, not a torch or ONNX file, pickled classes, another shape
        return f"{path}: not weights of this U-Net ({str(exc).splitlines()[0][:160] or type(exc).__name__})"
    return None


@console(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k not in ("musdb_root", "shared_root", "game_music")}
    cfg = TrainConfig(**{**options, "source_weights": tuple(options["source_weights"])})
    for name in ("steps", "batch_size", "checkpoint_every", "val_every"):
        if getattr(cfg, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")
    if not cfg.lr > 0 or cfg.min_lr < 0 or (cfg.minutes is not None and not cfg.minutes > 0):
        raise InputError("--lr and --minutes must be positive, --min-lr not negative")
    if cfg.newest_columns < 0 or cfg.newest_lookahead < 0 or cfg.newest_columns + cfg.newest_lookahead > cfg.context_frames:
        raise InputError(f"--newest-columns {cfg.newest_columns} and --newest-lookahead {cfg.newest_lookahead} "
                         f"must be non-negative and fit in --context-frames {cfg.context_frames}")
    if cfg.mask_delay and (not cfg.causal or not 0 < cfg.mask_delay < cfg.context_frames):
        raise InputError(f"--mask-delay {cfg.mask_delay} needs --causal and must be less than "
                         f"--context-frames {cfg.context_frames}")
    if cfg.stateful and not cfg.causal:
        raise InputError("--stateful needs --causal (the stream steps a causal U-Net)")
    if cfg.peak_frames is not None and (not cfg.stateful or cfg.peak_frames < 1):
        raise InputError("--peak-frames needs --stateful and must be at least 1")
    if not 0.0 <= cfg.random_context <= 1.0:
        raise InputError(f"--random-context is a share of patches, 0 to 1; got {cfg.random_context}")
    if cfg.init is not None:
        problem = _check_init(cfg.init, cfg)
        if problem:
            raise ModelError(problem)
    with raise_as(InputError, ValueError, OSError):  # DataError: exit 2 as it is
        try:
            fe = cfg.front_end()
            ModelCard.from_front_end("check", fe, n_bins=cfg.n_bins, context_frames=cfg.context_frames)
        except CardError as exc:  # the options make no valid card: bad input, not a model file's problem
            raise InputError(str(exc)) from exc
        shared = args.shared_root
        if not args.musdb_root and not shared:
            raise DataError("no training data: give --musdb-root and/or --shared-root")
        corpus = Corpus(fe.sample_rate)
        sources: dict[str, object] = {}
        for root in args.musdb_root:
            sources[f"musdb:{root.name}"] = add_musdb_like(corpus, root)
        for root in shared:
            sources.update({f"shared:{k}": v for k, v in add_shared(corpus, root).items()})
        if args.game_music:
            sources.update(add_game_music(corpus))
        if cfg.source_weights:
            corpus.weighted(dict(cfg.source_weights))  # unknown sources fail here, before training
        cfg.out.mkdir(parents=True, exist_ok=True)
        if (cfg.out / "model.pt").exists() and not (cfg.out / "checkpoint.pt").exists():
            raise DataError(f"{cfg.out} already holds a finished model.pt; choose another --out")
    rank, _ = _distributed()
    if rank == 0:
        secs = corpus.seconds()
        print("corpus: " + ", ".join(f"{k} {v:.0f} s" for k, v in secs.items()), file=sys.stderr)
    try:
        train(cfg, corpus, sources)
    except KeyboardInterrupt:
        raise KeyboardInterrupt("checkpoint saved, run the same command to resume") from None
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
