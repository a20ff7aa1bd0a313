"""``vocex-separate``: split songs into vocals and accompaniment.

    vocex-separate song.mp3 other.flac -o separated/
    vocex-separate music/ -r -o separated/ --skip-existing

writes ``separated/<input stem>/vocals.wav`` and ``accompaniment.wav`` (32-bit float WAV, the
input's sample rate, channel count and length); a folder as input takes the audio files in it
(and in its subfolders with ``-r``), each written under its path relative to that folder.
Files are read, separated and written in blocks, so memory does not grow with their length.
Each output is written under a temporary name in its folder and renamed when complete, so an
interrupted run leaves no partial output under the final names.

Each input is separated on its own: an unreadable or failing input is reported in one line
and the batch goes on; exit status 2 when any input failed.  Existing outputs are refused
(before any work) unless ``--force`` (redo them) or ``--skip-existing`` (keep inputs whose
outputs are complete and match the input, so an interrupted batch resumes).
``--streaming`` runs the live separator block by block over the file instead (what
``vocex-live`` would produce, aligned by its latency).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from vocex.model.audio import AudioError, AudioReader, AudioWriter, open_audio
from vocex.model.backends import load_backend, resolve_model
from vocex.model.cli import (add_model_arguments, add_separation_arguments, check_separation_options, console, fail,
                             stream_if_stateful)
from vocex.model.errors import EXIT_INPUT, EXIT_INTERNAL, EXIT_OK, InputError, OutputError, raise_as
from vocex.model.files import atomic_path
from vocex.model.separate import Separator
from vocex.realtime.settings import StreamingSettings, model_for, streaming_settings
from vocex.realtime.stream import AlignedStream

PROG = "vocex-separate"
STEMS = ("vocals", "accompaniment")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".caf",
                  ".w64", ".rf64")  # what a folder input takes
PICTURE_FRAMES = 4000  # --plot keeps about this many frames of the first pass, whatever the length
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", type=Path, metavar="IN",
                   help="audio files (wav, flac, ogg, mp3, ...) or folders of them")
    p.add_argument("-o", "--out-dir", type=Path, required=True, help="output folder")
    p.add_argument("-r", "--recursive", action="store_true", help="folder inputs: take subfolders' files too")
    add_model_arguments(p)
    p.add_argument("--batch-size", type=int, default=8, help="patches per inference call")
    add_separation_arguments(p, "run the live streaming separator block by block (what vocex-live plays)")
    p.add_argument("--block-size", type=int, default=256, help="streaming: host block size in samples")
    p.add_argument("--plot", action="store_true", help="also write spectrogram.png (input, mask, vocals)")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--force", action="store_true", help="overwrite existing outputs")
    existing.add_argument("--skip-existing", action="store_true",
                          help="leave inputs whose outputs are complete (resume an interrupted batch)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def plot_separation(magnitude: NDArray[np.float32], mask: NDArray[np.float32], seconds: float, sample_rate: int,
                    path: Path, title: str) -> None:
    """PNG of the input magnitude, the mask and the vocal estimate (first channel, model rate).

    ``magnitude`` and ``mask``: ``(n_channels, n_bins, n_frames)``, the frames spread over
    ``seconds`` (a decimated picture of a long file has fewer frames than the file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mag = magnitude[0]
    ref = max(float(mag.max()), 1e-9) if mag.size else 1.0
    extent = (0.0, seconds, 0.0, sample_rate / 2 * mag.shape[0] / (mag.shape[0] + 1) / 1000)
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True, constrained_layout=True)
    panels = [
        ("input magnitude (dB)", 20 * np.log10(mag / ref + 1e-5), "magma", (-80, 0)),
        ("vocal mask", mask[0], "viridis", (0, 1)),
        ("vocal estimate (dB)", 20 * np.log10(mag * mask[0] / ref + 1e-5), "magma", (-80, 0)),
    ]
    for ax, (name, data, cmap, lim) in zip(axes, panels):
        im = ax.imshow(data, origin="lower", aspect="auto", cmap=cmap, extent=extent, vmin=lim[0], vmax=lim[1])
        ax.set_title(name)
        ax.set_ylabel("kHz")
        fig.colorbar(im, ax=ax)
    axes[-1].set_xlabel("seconds")
    fig.suptitle(title)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


@dataclass(frozen=True)
class Job:
    """One input and the folder its outputs go to."""

    src: Path
    folder: Path

    def targets(self, plot: bool) -> list[Path]:
        names = [f"{stem}.wav" for stem in STEMS] + (["spectrogram.png"] if plot else [])
        return [self.folder / name for name in names]


def _expand(path: Path, recursive: bool, out_dir: Path) -> Iterator[tuple[Path, Path]]:
    """``(audio file, its output path relative to the output folder, without suffix)`` for an
    input; a folder gives its audio files (not those under ``out_dir``)."""
    if not path.is_dir():
        yield path, Path(path.stem)
        return
    out = out_dir.resolve()
    found = path.rglob("*") if recursive else path.iterdir()
    files = sorted(f for f in found if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES
                   and out not in f.resolve().parents)
    for f in files:
        yield f, f.relative_to(path).with_suffix("")


def _jobs(args: argparse.Namespace) -> tuple[list[Job], list[str]]:
    """The inputs' jobs, and an error per folder input with no audio files; refuses clashes
    and (without ``--force`` or ``--skip-existing``) existing outputs before any work."""
    jobs: list[Job] = []
    errors: list[str] = []
    seen: dict[Path, Path] = {}
    for path in args.inputs:
        expanded = list(_expand(path, args.recursive, args.out_dir))
        if path.is_dir() and not expanded:
            errors.append(f"{path}: is a directory with no audio files"
                          + ("" if args.recursive else " (-r takes its subfolders)"))
        for src, rel in expanded:
            folder = args.out_dir / rel
            if folder in seen and seen[folder] != src:
                raise FileExistsError(f"{src} and {seen[folder]} would both write to {folder}")
            if folder not in seen:
                seen[folder] = src
                jobs.append(Job(src, folder))
    if not (args.force or args.skip_existing):
        for job in jobs:
            for target in job.targets(args.plot):
                if target.exists():
                    raise FileExistsError(f"{target} exists; use --force to overwrite or --skip-existing to keep it")
    return jobs, errors


def _writable(folder: Path) -> None:
    """Check that ``folder`` can be made and written to, before hours of work (without making it)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    with tempfile.TemporaryFile(dir=existing):
        pass


def _complete(job: Job, reader: AudioReader, plot: bool) -> bool | None:
    """``True`` if all of the job's outputs exist and match the input (rate, channels, length,
    not cut off), ``False`` if none or only matching ones exist, ``None`` if one exists that is
    not a matching output (the user's own file, say)."""
    found = []
    for target in job.targets(plot):
        if not target.exists():
            found.append(False)
            continue
        if target.suffix == ".png":
            with open(target, "rb") as f:
                valid = f.read(len(PNG_MAGIC)) == PNG_MAGIC
        else:
            try:
                with open_audio(target) as out:
                    valid = ((out.sample_rate, out.n_channels, out.n_samples)
                             == (reader.sample_rate, reader.n_channels, reader.n_samples))
            except AudioError:
                valid = False
        if not valid:
            return None
        found.append(True)
    return all(found)


def _remove_stale_temporaries(job: Job, plot: bool) -> None:
    """Temporary outputs a killed run left in the job's folder (``atomic_path``'s names)."""
    for target in job.targets(plot):
        for stale in job.folder.glob(f".{target.name}.*{target.suffix}"):
            stale.unlink(missing_ok=True)


def _progress_bar(name: str, enabled: bool):
    from tqdm import tqdm

    bar = tqdm(total=0, desc=name, disable=not enabled, leave=False,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")

    def update(done: float, total: float) -> None:
        bar.total, bar.n = total, min(done, total)
        bar.set_postfix_str(f"{_clock(done)} / {_clock(total)}", refresh=False)
        bar.refresh()

    return bar, update


def _clock(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{s:02d}" if minutes >= 60 else f"{minutes}:{s:02d}"


def separate_file(job: Job, args: argparse.Namespace, separator: Separator, backend,
                  settings: StreamingSettings | None) -> bool:
    """Separate one input into its folder, in blocks; ``False`` when ``--skip-existing`` found
    its outputs complete.  Raises AudioError for a bad input, FileExistsError for an existing
    file that is not a matching output, OSError for an output that cannot be written."""
    with open_audio(job.src) as reader:
        if args.skip_existing:
            state = _complete(job, reader, args.plot)
            if state is None:
                raise FileExistsError(f"{job.folder}: holds a file that is not a complete output of {job.src}; "
                                      "use --force to overwrite it")
            if state:
                return False
        rate, n_channels = reader.sample_rate, reader.n_channels
        made = [p for p in (job.folder, *job.folder.parents) if not p.exists()]
        job.folder.mkdir(parents=True, exist_ok=True)
        try:
            _remove_stale_temporaries(job, args.plot)
            bar, update = _progress_bar(job.src.name, not args.no_progress)
            stream = (AlignedStream(backend, n_channels, rate, settings, args.block_size) if settings is not None
                      else separator.stream(rate, n_channels, reader.n_samples, update,
                                            picture=PICTURE_FRAMES if args.plot else 0))
            block = separator.block_size(rate, n_channels)
            vocals_path, accompaniment_path = (job.folder / f"{stem}.wav" for stem in STEMS)
            try:
                with atomic_path(vocals_path, ".wav") as vocals_tmp, \
                        atomic_path(accompaniment_path, ".wav") as accompaniment_tmp, \
                        AudioWriter(vocals_tmp, rate, n_channels, name=vocals_path) as vocals_out, \
                        AudioWriter(accompaniment_tmp, rate, n_channels, name=accompaniment_path) as accompaniment_out:
                    n_read = 0
                    for samples in reader.blocks(block):
                        vocals, accompaniment = stream.push(samples)
                        vocals_out.write(vocals)
                        accompaniment_out.write(accompaniment)
                        n_read += samples.shape[0]
                        if settings is not None:
                            update(n_read / rate, max(reader.n_samples, n_read) / rate)
                    vocals, accompaniment = stream.finish()
                    vocals_out.write(vocals)
                    accompaniment_out.write(accompaniment)
            finally:
                bar.close()
            if args.plot:
                card = separator.card
                plot_separation(*stream.picture(), n_read / rate, card.sample_rate, job.folder / "spectrogram.png",
                                job.src.name)
        except BaseException:
            for folder in made:  # folders this input made, if nothing is left in them
                try:
                    folder.rmdir()
                except OSError:
                    break
            raise
    return True


def _cannot_write(exc: OSError, out_dir: Path) -> str:
    if isinstance(exc, FileExistsError):
        return str(exc)
    return f"cannot write to {exc.filename or out_dir}: {exc.strerror or exc}"


@console(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_separation_options(args)
    if args.streaming and args.plot:
        raise InputError("--plot needs the offline separator (drop --streaming)")
    # a bad model: ModelError, exit 3
    with (raise_as(InputError, ValueError),
          raise_as(OutputError, OSError, message=lambda exc: _cannot_write(exc, args.out_dir))):
        jobs, errors = _jobs(args)
        _writable(args.out_dir)
        files = resolve_model(model_for(args.model, args.streaming))
        stream_if_stateful(args, files, PROG)
        backend = load_backend(files, args.backend, args.accel, args.threads)
        separator = Separator(backend, args.batch_size, args.shifts, args.mask_temperature,
                              high_band=args.high_band)
        settings = (streaming_settings(files.card, args.hop_batch, args.lookahead, args.mask_temperature)
                    if args.streaming else None)

    for message in errors:  # inputs that cannot be separated are reported, the others go on
        fail(PROG, message, EXIT_INPUT)
    done, skipped, failed = 0, 0, len(errors)
    for job in jobs:
        try:
            if separate_file(job, args, separator, backend, settings):
                done += 1
                print(f"{job.src} -> {job.folder}/", file=sys.stderr)
            else:
                skipped += 1
                print(f"{job.src}: skipped, {job.folder}/ is complete", file=sys.stderr)
        except (AudioError, FileExistsError) as exc:
            fail(PROG, exc, EXIT_INPUT)
            failed += 1
        except OSError as exc:  # the output location: no use going on
            raise OutputError(f"cannot write output: {exc.filename or ''} {exc.strerror or exc}") from exc
        except Exception as exc:  # a failing input must not stop the batch
            fail(PROG, f"{job.src}: separation failed ({exc!r})", EXIT_INTERNAL)
            failed += 1
    if len(jobs) + len(errors) > 1 or skipped:
        print(f"{PROG}: {done} done, {skipped} skipped, {failed} failed", file=sys.stderr)
    return EXIT_INPUT if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
