"""``vocex-bench compute``: inference time and load of every available backend.

For each backend (ONNX Runtime with 1 and 2 threads, TorchScript, eager torch, and their
CUDA variants when a GPU is present) and each hop batch K, the live window (one per
channel) is run ``--iterations`` times for its newest K mask columns (by the card's
newest-columns graph when it has one, as the live path does); the table gives p50 / p99 / max and the load,
p99 over the time between two inferences (K hops).  Load above 1 cannot keep up.

A model that streams in the stateful form (its card's ``streaming``, or ``--form stateful``
for a causal card exported with ``vocex-export --stateful``) is timed per step: a stream of
K-column steps (at least one whole 64-frame period of its layers' phases, so the rare step
that runs every layer is in the p99), ONNX Runtime (one thread) and eager torch.
"""

from __future__ import annotations

import importlib.util
import dataclasses
from typing import Any

import numpy as np

from vocex.model.backends import ModelFiles, load_backend
from vocex.realtime.timing import inference_times


def backend_variants(files: ModelFiles) -> list[tuple[str, str, int]]:
    """``(backend, accel, threads)`` triples available here (for the stateful form no
    TorchScript, since it steps the eager module, and ONNX Runtime on one thread only, which
    its step graphs always run on)."""
    stateful = files.card.streaming == "stateful"
    variants = [("onnx", "cpu", 1)] if stateful else [("onnx", "cpu", 1), ("onnx", "cpu", 2)]
    torch_names = ("eager",) if stateful else ("torchscript", "eager")
    if importlib.util.find_spec("torch"):
        variants += [(name, "cpu", 1) for name in torch_names]
        import torch

        if torch.cuda.is_available():
            variants += [(name, "cuda", 1) for name in torch_names]
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        variants.append(("onnx", "cuda", 1))
    return variants


def run(files: ModelFiles, hop_batches: list[int], channels: list[int], iterations: int,
        whole: bool = False, form: str | None = None) -> dict[str, Any]:
    """``whole``: time the network on the whole window, as the live path did before the
    newest-columns graph (for comparison).  ``form``: ``window`` or ``stateful`` (None: the
    card's ``streaming``)."""
    if form is not None and form != files.card.streaming:
        files = dataclasses.replace(files, card=files.card.replace(streaming=form))
    card = files.card
    stateful = card.streaming == "stateful"
    hop_ms = 1000 * card.hop / card.sample_rate
    rows = []
    for name, accel, threads in backend_variants(files):
        backend = load_backend(files, name, accel, threads)
        if name != "onnx":  # torch's thread count is process-wide: set it for each variant
            import torch

            torch.set_num_threads(threads)
        for n_ch in channels:
            timed: dict[int, np.ndarray] = {}  # by the columns asked for: --whole times the window once
            for k in hop_batches:
                columns = card.context_frames if whole and not stateful else k
                if columns not in timed:
                    timed[columns] = 1000 * inference_times(backend, n_ch, iterations, warm_up=5, columns=columns)
                t = timed[columns]
                p50, p99 = np.percentile(t, [50, 99])
                interval = k * hop_ms
                rows.append({"backend": name, "accel": accel, "threads": threads, "channels": n_ch,
                             "hop_batch": k, "interval_ms": round(interval, 3),
                             "p50_ms": round(p50, 3), "p99_ms": round(p99, 3), "max_ms": round(t.max(), 3),
                             "load": round(p99 / interval, 3)})
    return {"model": str(files.card_path), "n_bins": card.n_bins, "context_frames": card.context_frames,
            "base_channels": card.base_channels, "hop_ms": round(hop_ms, 3), "iterations": iterations,
            "form": card.streaming,
            "graph": ("stateful step of K columns" if stateful else
                      "whole window" if whole else "newest K columns (the live path's)"),
            "results": rows}


def table(report: dict[str, Any]) -> str:
    lines = [f"{'backend':<12} {'accel':<5} {'thr':>3} {'ch':>2} {'K':>2} {'p50 ms':>8} {'p99 ms':>8} "
             f"{'max ms':>8} {'every ms':>9} {'load':>6}"]
    for r in report["results"]:
        lines.append(f"{r['backend']:<12} {r['accel']:<5} {r['threads']:>3} {r['channels']:>2} {r['hop_batch']:>2} "
                     f"{r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['max_ms']:8.2f} {r['interval_ms']:9.2f} {r['load']:6.2f}")
    return "\n".join(lines)


def plot(report: dict[str, Any], path) -> None:
    """Heatmap of load (backend variant x hop batch) for the largest channel count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_ch = max(r["channels"] for r in report["results"])
    rows = [r for r in report["results"] if r["channels"] == n_ch]
    variants = list(dict.fromkeys(f"{r['backend']}/{r['accel']}/{r['threads']}t" for r in rows))
    ks = sorted({r["hop_batch"] for r in rows})
    grid = np.zeros((len(variants), len(ks)))
    for r in rows:
        grid[variants.index(f"{r['backend']}/{r['accel']}/{r['threads']}t"), ks.index(r["hop_batch"])] = r["load"]
    fig, ax = plt.subplots(figsize=(1.5 + 1.1 * len(ks), 1 + 0.5 * len(variants)), constrained_layout=True)
    im = ax.imshow(grid, cmap="RdYlGn_r", vmin=0, vmax=1.2, aspect="auto")
    for i in range(len(variants)):
        for j in range(len(ks)):
            ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(ks)), [f"K={k}" for k in ks])
    ax.set_yticks(range(len(variants)), variants)
    ax.set_title(f"load (p99 inference / time between inferences), {n_ch} ch")
    fig.colorbar(im, ax=ax)
    fig.savefig(path, dpi=100)
    plt.close(fig)
