"""``vocex-bench quality``: separation quality against latency.

For each streaming setting K:L (hop batch, lookahead) the streaming separator
(:func:`vocex.realtime.stream.separate_streaming`, what ``vocex-eval --streaming`` scores)
runs over every whole track, and the offline separator over the same tracks gives the
reference row; scoring is :func:`vocex.train.evaluate.evaluate` (museval BSSEval v4, median
over 1 s frames, median over tracks), sequentially in this process.  The latency of a
setting is the separator's own ``latency_samples`` at the tracks' sample rate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vocex.model.backends import ModelFiles, load_backend
from vocex.model.separate import DEFAULT_SHIFTS, Separator
from vocex.realtime.settings import streaming_settings
from vocex.realtime.stream import StreamingSeparator, separate_streaming
from vocex.train.data import DataError, iter_tracks
from vocex.train.evaluate import evaluate


def parse_settings(text: str) -> list[tuple[int, int]]:
    """``"K:L,K:L"`` -> ``[(K, L), ...]``; ValueError for anything else."""
    out = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) != 2:
            raise ValueError(f"expected K:L, got {item.strip()!r}")
        k, lookahead = int(parts[0]), int(parts[1])
        if k < 1 or lookahead < 0:
            raise ValueError(f"{item.strip()}: K must be >= 1 and L >= 0")
        out.append((k, lookahead))
    if not out:
        raise ValueError("no settings")
    return out


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    med = report["median"]
    return {"vocals_SDR": med["vocals"]["SDR"], "accompaniment_SDR": med["accompaniment"]["SDR"],
            "median": med, "tracks": [{"name": t["name"], "vocals_SDR": t["vocals"]["SDR"],
                                       "accompaniment_SDR": t["accompaniment"]["SDR"],
                                       "separation_seconds": t["separation_seconds"]} for t in report["tracks"]]}


def run(root: Path, subset: str, streaming_files: ModelFiles, offline_files: ModelFiles,
        settings: list[tuple[int, int]], max_tracks: int | None = None) -> dict[str, Any]:
    """Score every setting and the offline path; the JSON-ready report."""
    first = next(iter(iter_tracks(root, subset)), None)
    if first is None:
        raise DataError(f"{root}: no {subset} tracks")
    rate, n_channels = first.sample_rate, first.mixture.shape[1]
    del first
    backend = load_backend(streaming_files, "onnx", "cpu")
    card = streaming_files.card
    rows = []
    for k, lookahead in settings:
        s = streaming_settings(card, k, lookahead)  # the card's mask temperature too
        latency = StreamingSeparator(backend, n_channels, rate, s).latency_samples
        print(f"streaming K={k} L={lookahead}: {1000 * latency / rate:.1f} ms", flush=True)

        def estimate(track, s=s):
            vocals = separate_streaming(backend, track.mixture, track.sample_rate, s)
            return vocals, track.mixture - vocals

        scored = evaluate(root, subset, estimate, card, max_tracks, baselines=False)
        rows.append({"K": k, "L": lookahead, "latency_samples": latency,
                     "latency_ms": round(1000 * latency / rate, 2), **_summary(scored)})
    offline_backend = load_backend(offline_files, "onnx", "cpu")
    separator = Separator(offline_backend, shifts=DEFAULT_SHIFTS)
    print(f"offline (shifts {DEFAULT_SHIFTS})", flush=True)

    def estimate_offline(track):
        sep = separator.separate(track.mixture, track.sample_rate)
        return sep.vocals, sep.accompaniment

    offline = evaluate(root, subset, estimate_offline, offline_files.card, max_tracks, baselines=False)
    return {"musdb_root": str(root), "subset": subset, "sample_rate": rate, "n_tracks": len(offline["tracks"]),
            "metric": "museval BSSEval v4 SDR (dB), median over 1 s frames, median over tracks",
            "streaming_model": str(streaming_files.card_path), "streaming_model_name": card.name,
            "offline_model": str(offline_files.card_path), "offline_model_name": offline_files.card.name,
            "latency": "the streaming separator's latency_samples at the tracks' sample rate "
                       "(STFT window, K, L and both resamplers)",
            "settings": rows, "offline": _summary(offline), "offline_shifts": DEFAULT_SHIFTS}


def table(report: dict[str, Any]) -> str:
    lines = [f"{report['n_tracks']} {report['subset']} tracks, museval v4 median SDR (dB); "
             f"streaming: {report['streaming_model_name']}, offline: {report['offline_model_name']}",
             f"{'setting':<14} {'latency ms':>10} {'vocals SDR':>11} {'accomp SDR':>11}"]
    for r in report["settings"]:
        lines.append(f"{'K=%d L=%d' % (r['K'], r['L']):<14} {r['latency_ms']:10.1f} {r['vocals_SDR']:11.2f} "
                     f"{r['accompaniment_SDR']:11.2f}")
    off = report["offline"]
    lines.append(f"{'offline':<14} {'file':>10} {off['vocals_SDR']:11.2f} {off['accompaniment_SDR']:11.2f}")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """SDR against latency: one point per setting, the offline scores as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(report["settings"], key=lambda r: r["latency_ms"])
    x = np.array([r["latency_ms"] for r in rows])
    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    for key, color, label in (("vocals_SDR", "C0", "vocals"), ("accompaniment_SDR", "C1", "accompaniment")):
        y = np.array([r[key] for r in rows])
        ax.plot(x, y, "o-", color=color, label=f"{label}, streaming")
        ax.axhline(report["offline"][key], color=color, ls="--", lw=1, label=f"{label}, offline ({report['offline_model_name']})")
        for r, xi, yi in zip(rows, x, y):
            ax.annotate(f"K{r['K']} L{r['L']}", (xi, yi), textcoords="offset points", xytext=(3, 4), fontsize=7)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("SDR (dB, museval v4 median)")
    ax.set_title(f"quality vs latency: {report['streaming_model_name']}, {report['n_tracks']} {report['subset']} tracks",
                 fontsize=10)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100)
    plt.close(fig)
