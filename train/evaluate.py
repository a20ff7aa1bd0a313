"""``vocex-eval``: BSSEval v4 (museval) scores of a model on a MUSDB18 / MUSDB18-HQ / DSD100 folder.

For each track the ``vocals`` and ``accompaniment`` estimates are scored at the track's own
rate over 1 s frames and summarised by the median over frames; the summary is the median
over tracks.  In the same run and the same JSON (under ``baselines``) come two references:
``mixture`` (the mixture used as both estimates: the floor) and ``oracle_irm`` (the ideal
ratio mask from the true stems, applied with the model's own STFT and sample rate: the
ceiling of any mask this front end can apply).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vocex.model.audio import resample
from vocex.model.backends import load_backend, resolve_model
from vocex.model.card import ModelCard
from vocex.model.cli import (add_model_arguments, add_separation_arguments, check_separation_options, console,
                             stream_if_stateful)
from vocex.model.errors import EXIT_OK, InputError, OutputError, raise_as
from vocex.model.dsp import istft, stft
from vocex.model.separate import Separator
from vocex.train.data import DataError, Track, detect_layout, iter_tracks
from vocex.train.valset import song_parts

PROG = "vocex-eval"
TARGETS = ("vocals", "accompaniment")
METRICS = ("SDR", "SIR", "SAR", "ISR")

Estimator = Callable[[Track], tuple[NDArray[np.float32], NDArray[np.float32]]]


@functools.cache
def _bsseval() -> ModuleType:
    """museval's BSSEval module (``museval/metrics.py``), loaded without the ``museval`` package.

    ``import museval`` imports musdb and stempeg, and stempeg raises at import time when
    ffmpeg is not on PATH; scoring needs none of that, only ``metrics.bss_eval``.
    """
    spec = importlib.util.find_spec("museval")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("museval is not installed (pip install -c constraints.txt '.[train]')")
    path = Path(next(iter(spec.submodule_search_locations))) / "metrics.py"
    metrics_spec = importlib.util.spec_from_file_location("vocex_museval_metrics", path)
    if metrics_spec is None or metrics_spec.loader is None or not path.is_file():
        raise DataError(f"museval is installed without its metrics module ({path})")
    module = importlib.util.module_from_spec(metrics_spec)
    metrics_spec.loader.exec_module(module)
    return module


def bss_scores(track: Track, vocals: NDArray[np.float32], accompaniment: NDArray[np.float32]) -> dict[str, dict[str, float]]:
    """Median over 1 s frames of museval's BSSEval v4 metrics for both targets.

    The same call as ``museval.evaluate(..., mode="v4")``: ``bss_eval`` with time-invariant
    filters, no permutation, 1 s windows and hops.  All arrays are ``(n_samples, n_channels)``
    float32 at ``track.sample_rate``, the estimates as long as the references.
    """
    if vocals.shape != track.vocals.shape or accompaniment.shape != track.accompaniment.shape:
        raise ValueError(f"estimates {vocals.shape}/{accompaniment.shape} do not match the references {track.vocals.shape}")
    refs = np.stack([track.vocals, track.accompaniment]).astype(np.float64)
    ests = np.stack([vocals, accompaniment]).astype(np.float64)
    sdr, isr, sir, sar, _ = _bsseval().bss_eval(
        refs, ests, compute_permutation=False, window=track.sample_rate, hop=track.sample_rate,
        framewise_filters=False, bsseval_sources_version=False)
    values = {"SDR": sdr, "ISR": isr, "SIR": sir, "SAR": sar}
    return {
        target: {m: _nanmedian(values[m][i]) for m in METRICS}
        for i, target in enumerate(TARGETS)
    }


def _nanmedian(x: NDArray[np.float64]) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return round(float(np.median(x)), 3) if x.size else float("nan")


def oracle_irm(card: ModelCard) -> Estimator:
    """Ideal ratio mask ``|V| / (|V| + |A|)`` from the true stems, with the model's STFT and rate."""

    def estimate(track: Track) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        n = track.mixture.shape[0]
        to_model = [resample(a, track.sample_rate, card.sample_rate) for a in
                    (track.mixture, track.vocals, track.accompaniment)]
        mix, voc, acc = (stft(a, card.n_fft, card.hop, card.window) for a in to_model)
        mask = np.abs(voc) / (np.abs(voc) + np.abs(acc) + 1e-8)
        vocals = istft(mix * mask, to_model[0].shape[0], card.n_fft, card.hop, card.window)
        vocals = resample(vocals, card.sample_rate, track.sample_rate, n_out=n)
        return vocals, track.mixture - vocals

    return estimate


def mixture_floor(track: Track) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    return track.mixture, track.mixture


def median_over_tracks(per_track: list[dict[str, Any]], key: str | None = None) -> dict[str, dict[str, float]]:
    rows = [t if key is None else t["baselines"][key] for t in per_track]
    return {target: {m: _nanmedian(np.array([r[target][m] for r in rows])) for m in METRICS}
            for target in TARGETS}


def evaluate(
    root: Path, subset: str, model_estimate: Estimator, card: ModelCard,
    max_tracks: int | None = None, baselines: bool = True,
) -> dict[str, Any]:
    """Score every track; returns the JSON-ready report (without model metadata)."""
    from tqdm import tqdm

    systems: dict[str, Estimator] = {"model": model_estimate}
    if baselines:
        systems.update({"mixture": mixture_floor, "oracle_irm": oracle_irm(card)})
    per_track: list[dict[str, Any]] = []
    detect_layout(root)  # a bad folder fails before the progress bar is drawn
    tracks = iter_tracks(root, subset)
    for i, track in enumerate(tqdm(tracks, desc="tracks", unit="track", leave=False)):
        if max_tracks is not None and i >= max_tracks:
            break
        entry: dict[str, Any] = {"name": track.name, "seconds": round(track.mixture.shape[0] / track.sample_rate, 2)}
        for system, estimate in systems.items():
            started = time.monotonic()
            vocals, accompaniment = estimate(track)
            scores = bss_scores(track, vocals, accompaniment)
            if system == "model":
                entry.update(scores)
                entry["separation_seconds"] = round(time.monotonic() - started, 2)
            else:
                entry.setdefault("baselines", {})[system] = scores
        per_track.append(entry)
        tqdm.write(f"{track.name}: vocals SDR {entry['vocals']['SDR']:.2f}  accompaniment SDR {entry['accompaniment']['SDR']:.2f}")
    if not per_track:
        raise DataError(f"{root}: no {subset} tracks")
    report: dict[str, Any] = {"tracks": per_track, "median": median_over_tracks(per_track)}
    parts = song_parts(root)
    if parts is not None:  # a validation set: each part apart, and the mean the candidates are ranked by
        report["mean_vocals_SDR"] = _mean_sdr(per_track)
        report["parts"] = {}
        for part in sorted(set(parts.values())):
            rows = [t for t in per_track if parts.get(t["name"]) == part]
            if rows:
                report["parts"][part] = {"tracks": len(rows), "median": median_over_tracks(rows),
                                         "mean_vocals_SDR": _mean_sdr(rows)}
    if baselines:
        report["baselines"] = {k: {"median": median_over_tracks(per_track, k)} for k in ("mixture", "oracle_irm")}
    return report


def _mean_sdr(rows: list[dict[str, Any]]) -> float:
    values = np.array([r["vocals"]["SDR"] for r in rows], dtype=np.float64)
    values = values[np.isfinite(values)]
    return round(float(values.mean()), 3) if values.size else float("nan")


def print_table(report: dict[str, Any]) -> None:
    rows = [("model", report["median"])]
    rows += [(k, v["median"]) for k, v in report.get("baselines", {}).items()]
    print(f"{'system':<12} {'voc SDR':>8} {'voc SIR':>8} {'voc SAR':>8} {'acc SDR':>8} {'acc SIR':>8} {'acc SAR':>8}")
    for name, med in rows:
        v, a = med["vocals"], med["accompaniment"]
        print(f"{name:<12} {v['SDR']:8.2f} {v['SIR']:8.2f} {v['SAR']:8.2f} {a['SDR']:8.2f} {a['SIR']:8.2f} {a['SAR']:8.2f}")
    for part, row in report.get("parts", {}).items():
        v, a = row["median"]["vocals"], row["median"]["accompaniment"]
        print(f"part {part:<7} ({row['tracks']} songs): median vocals SDR {v['SDR']:.2f}, accompaniment SDR "
              f"{a['SDR']:.2f}; mean vocals SDR {row['mean_vocals_SDR']:.2f}")
    if "mean_vocals_SDR" in report:
        print(f"whole set: mean vocals SDR {report['mean_vocals_SDR']:.2f} (the ranking figure)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--musdb-root", type=Path, required=True, help="MUSDB18 / MUSDB18-HQ / DSD100 folder")
    p.add_argument("--subset", choices=("train", "test"), default="test")
    p.add_argument("--json", type=Path, required=True, help="where to write the report")
    add_model_arguments(p)
    add_separation_arguments(p, "score the live (streaming) separator")
    p.add_argument("--tracks", type=int, help="score only the first N tracks")
    p.add_argument("--no-baselines", action="store_true", help="skip the mixture and oracle references")
    p.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    return p


@console(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_separation_options(args)
    if args.json.exists() and not args.force:
        raise OutputError(f"{args.json} exists; use --force to overwrite")
    if not args.json.parent.is_dir():
        raise OutputError(f"{args.json.parent}: output folder does not exist")
    from vocex.realtime.settings import model_for

    files = resolve_model(model_for(args.model, args.streaming))
    stream_if_stateful(args, files, PROG)
    backend = load_backend(files, args.backend, args.accel, args.threads)
    card = files.card
    streaming_info: dict[str, Any] | None = None
    offline_info: dict[str, Any] | None = None
    if args.streaming:
        from vocex.realtime.settings import streaming_settings
        from vocex.realtime.stream import separate_streaming

        with raise_as(InputError, ValueError):
            settings = streaming_settings(card, args.hop_batch, args.lookahead, args.mask_temperature)
        streaming_info = settings.describe(card)

        def estimate(track: Track) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
            vocals = separate_streaming(backend, track.mixture, track.sample_rate, settings)
            return vocals, track.mixture - vocals
    else:
        with raise_as(InputError, ValueError):
            separator = Separator(backend, shifts=args.shifts, temperature=args.mask_temperature,
                                  high_band=args.high_band)
        offline_info = {"shifts": separator.shifts, "mask_temperature": separator.temperature,
                        "high_band": separator.high_band}

        def estimate(track: Track) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
            sep = separator.separate(track.mixture, track.sample_rate)
            return sep.vocals, sep.accompaniment

    with raise_as(InputError, OSError):  # DataError, AudioError: exit 2 as they are
        report = evaluate(args.musdb_root, args.subset, estimate, card, args.tracks, not args.no_baselines)
    report = {"model": str(files.card_path), "model_name": card.name, "backend": backend.name,
              "musdb_root": str(args.musdb_root), "subset": args.subset, "streaming": streaming_info,
              "offline": offline_info, **report}
    from vocex.model.files import atomic_path

    print_table(report)
    with raise_as(OutputError, OSError, message=lambda exc: f"cannot write {args.json}: {exc.strerror or exc}"):
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
