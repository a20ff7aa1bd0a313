"""``vocex-separate``: split songs into vocals and accompaniment.

    vocex-separate song.mp3 other.flac -o separated/

writes ``separated/<input stem>/vocals.wav`` and ``accompaniment.wav`` (32-bit float WAV, the
input's sample rate, channel count and length).  Existing outputs are kept unless ``--force``.
``--streaming`` runs the live separator block by block over the file instead (what
``vocex-live`` would produce, aligned by its latency).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from vocex.model.audio import AudioError, read_audio, write_audio
from vocex.model.backends import ModelError, load_backend, resolve_model
from vocex.model.cli import (EXIT_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_MODEL, EXIT_OK,
                             EXIT_OUTPUT, add_model_arguments, add_separation_arguments, fail,
                             separation_conflict)
from vocex.model.separate import Separation, Separator
from vocex.realtime.live import live_model_path
from vocex.realtime.stream import separate_streaming, streaming_settings

PROG = "vocex-separate"
STEMS = ("vocals", "accompaniment")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", type=Path, metavar="IN", help="audio files (wav, flac, ogg, mp3, ...)")
    p.add_argument("-o", "--out-dir", type=Path, required=True, help="output folder")
    add_model_arguments(p)
    p.add_argument("--batch-size", type=int, default=8, help="patches per inference call")
    add_separation_arguments(p, "run the live streaming separator block by block (what vocex-live plays)")
    p.add_argument("--block-size", type=int, default=256, help="streaming: host block size in samples")
    p.add_argument("--plot", action="store_true", help="also write spectrogram.png (input, mask, vocals)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def plot_separation(sep: Separation, sample_rate: int, hop: int, path: Path, title: str) -> None:
    """PNG of the input magnitude, the mask and the vocal estimate (first channel, model rate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mag = sep.magnitude[0]
    ref = max(float(mag.max()), 1e-9)
    seconds = mag.shape[1] * hop / sample_rate
    extent = (0.0, seconds, 0.0, sample_rate / 2 * mag.shape[0] / (mag.shape[0] + 1) / 1000)
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True, constrained_layout=True)
    panels = [
        ("input magnitude (dB)", 20 * np.log10(mag / ref + 1e-5), "magma", (-80, 0)),
        ("vocal mask", sep.mask[0], "viridis", (0, 1)),
        ("vocal estimate (dB)", 20 * np.log10(mag * sep.mask[0] / ref + 1e-5), "magma", (-80, 0)),
    ]
    for ax, (name, data, cmap, lim) in zip(axes, panels):
        im = ax.imshow(data, origin="lower", aspect="auto", cmap=cmap, extent=extent, vmin=lim[0], vmax=lim[1])
        ax.set_title(name)
        ax.set_ylabel("kHz")
        fig.colorbar(im, ax=ax)
    axes[-1].set_xlabel("seconds")
    fig.suptitle(title)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def _outputs(args: argparse.Namespace) -> dict[Path, Path]:
    """Input -> output folder; refuse clashes and existing outputs before any work."""
    folders: dict[Path, Path] = {}
    seen: dict[str, Path] = {}
    for path in args.inputs:
        stem = path.stem
        if stem in seen and seen[stem] != path:
            raise FileExistsError(f"{path} and {seen[stem]} would both write to {args.out_dir / stem}")
        seen[stem] = path
        folders[path] = args.out_dir / stem
    if not args.force:
        for folder in folders.values():
            for name in (*STEMS, "spectrogram") if args.plot else STEMS:
                target = folder / (f"{name}.png" if name == "spectrogram" else f"{name}.wav")
                if target.exists():
                    raise FileExistsError(f"{target} exists; use --force to overwrite")
    return folders


def _writable(folder: Path) -> None:
    """Make ``folder`` and check that a file can be created in it, before hours of work."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder):
        pass


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    conflict = separation_conflict(args)
    if conflict:
        return fail(PROG, conflict, EXIT_INPUT)
    try:
        folders = _outputs(args)
        audio_in = {}
        for path in args.inputs:  # read everything first: a bad input fails before any output
            audio_in[path] = read_audio(path)
        # streaming without --model: what vocex-live plays, the shipped live model
        files = resolve_model(args.model or (live_model_path() if args.streaming else None))
        backend = load_backend(files, args.backend, args.accel, args.threads)
        try:
            separator = Separator(backend, args.batch_size, args.shifts, args.mask_temperature,
                                  high_band=True if args.high_band else None)
        except ValueError as exc:
            return fail(PROG, exc, EXIT_INPUT)
        for folder in folders.values():
            _writable(folder)
    except AudioError as exc:
        return fail(PROG, exc, EXIT_INPUT)
    except ModelError as exc:
        return fail(PROG, exc, EXIT_MODEL)
    except FileExistsError as exc:
        return fail(PROG, exc, EXIT_OUTPUT)
    except OSError as exc:
        return fail(PROG, f"cannot write to {exc.filename or args.out_dir}: {exc.strerror or exc}", EXIT_OUTPUT)

    if args.streaming and args.plot:
        return fail(PROG, "--plot needs the offline separator (drop --streaming)", EXIT_INPUT)
    try:
        settings = (streaming_settings(files.card, args.hop_batch, args.lookahead, args.mask_temperature)
                    if args.streaming else None)
    except ValueError as exc:
        return fail(PROG, exc, EXIT_INPUT)
    try:
        for path, (audio, rate) in audio_in.items():
            if settings is not None:
                vocals = separate_streaming(backend, audio, rate, settings, args.block_size)
                sep = Separation(vocals, audio - vocals, np.zeros((0, 0, 0), np.float32), np.zeros((0, 0, 0), np.float32))
            else:
                sep = _run_one(separator, path, audio, rate, not args.no_progress)
            folder = folders[path]
            for name in STEMS:
                write_audio(folder / f"{name}.wav", getattr(sep, name), rate)
            if args.plot:
                card = separator.card
                plot_separation(sep, card.sample_rate, card.hop, folder / "spectrogram.png", path.name)
            print(f"{path} -> {folder}/", file=sys.stderr)
    except KeyboardInterrupt:
        return fail(PROG, "interrupted", EXIT_INTERRUPTED)
    except OSError as exc:
        return fail(PROG, f"cannot write output: {exc.filename or ''} {exc.strerror or exc}", EXIT_OUTPUT)
    return EXIT_OK


def _run_one(separator: Separator, path: Path, audio: np.ndarray, rate: int, progress: bool) -> Separation:
    from tqdm import tqdm

    bar = tqdm(total=0, desc=path.name, unit="patch", disable=not progress, leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        return separator.separate(audio, rate, update)
    finally:
        bar.close()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # pragma: no cover - last resort, keeps the exit code documented
        sys.exit(fail(PROG, f"internal error: {exc!r}", EXIT_INTERNAL))
