"""``vocex-bench latency``: algorithmic latency of live settings, and the end-to-end latency
measured through a JACK dummy loop.

For each setting (device rate, K, L) and JACK period (block size), a JACK dummy server is
started, ``vocex-live --mix 0`` runs on it (dry output, the whole chain still computed),
impulses are played into its inputs and found in its outputs.  Reported is what vocex-live
states (algorithmic + its buffering); measured is the impulse arrival.  The device's own
latency (PortAudio's figure) is not crossed in a JACK client-to-client loop and is listed
separately.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from vocex.model.backends import ModelFiles, load_backend
from vocex.realtime.jackloop import JackServer, PlayRecord, wait_for_ports
from vocex.realtime.settings import StreamingSettings
from vocex.realtime.stream import StreamingSeparator


def algorithmic(files: ModelFiles, settings: list[dict[str, int]]) -> list[dict[str, Any]]:
    """Latency each setting states, from the separator itself (no device needed)."""
    backend = load_backend(files, "onnx", "cpu", 1)
    card = files.card
    rows = []
    for s in settings:
        sep = StreamingSeparator(backend, 2, s["rate"], StreamingSettings(s["K"], s["L"]))
        rows.append({**s, "n_fft": card.n_fft, "hop": card.hop, "model_rate": card.sample_rate,
                     "resampling": s["rate"] != card.sample_rate,
                     "algorithmic_samples": sep.latency_samples,
                     "algorithmic_ms": round(1000 * sep.latency_samples / s["rate"], 2)})
    return rows


def measure(files: ModelFiles, setting: dict[str, int], block: int, impulses: int = 4) -> dict[str, Any]:
    """Impulse arrival through vocex-live on a JACK dummy server at ``setting['rate']``."""
    rate = setting["rate"]
    with tempfile.TemporaryDirectory() as tmp, JackServer(f"vocex-bench-{time.time_ns()}", rate, block) as server:
        stats_path = Path(tmp) / "stats.json"
        seconds = 2.5 + impulses * 0.5
        cmd = [sys.executable, "-m", "vocex.realtime.live", "-d", "JACK", "--blocksize", str(block),
               "--samplerate", str(rate), "--hop-batch", str(setting["K"]), "--lookahead", str(setting["L"]),
               "--mix", "0", "--model", str(files.card_path), "--duration", str(seconds + 3),
               "--stats-json", str(stats_path), "--no-status"]
        proc = subprocess.Popen(cmd, env=server.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            ins = wait_for_ports(server.name, "PortAudio:in", 2, proc=proc)
            outs = wait_for_ports(server.name, "PortAudio:out", 2, proc=proc)
            time.sleep(1.0)
            signal = np.zeros((int(seconds * rate), 2), np.float32)
            hits = [int((0.25 + 0.5 * k) * rate) + 17 * k for k in range(impulses)]
            signal[hits] = 0.9
            rec = PlayRecord(server.name, signal, ins, outs, tail=0.5).run()
        finally:
            _, err = proc.communicate(timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"vocex-live failed: {err.strip().splitlines()[-1:]}")
        stats = json.loads(stats_path.read_text())
    window = int(0.45 * rate)
    # an impulse that a late block or a restart dropped never arrives: only those that did
    # (a peak of at least a third of the 0.9 played) are timed
    segments = [np.abs(rec.audio[h : h + window, 0]) for h in hits]
    arrivals = [int(np.argmax(seg)) for seg in segments if seg.size and seg.max() >= 0.3]
    reported = stats["details"]["algorithmic_latency_samples"] + stats["details"]["buffer_latency_samples"]
    measured = int(np.median(arrivals)) if arrivals else None  # None: not one impulse arrived
    error = None if measured is None else measured - reported
    return {**setting, "block": block, "reported_samples": reported, "measured_samples": measured,
            "impulses": len(hits), "arrived": len(arrivals), "error_samples": error,
            "within_one_block": error is not None and abs(error) <= block,
            "reported_ms": round(1000 * reported / rate, 2),
            "measured_ms": None if measured is None else round(1000 * measured / rate, 2),
            "algorithmic_ms": stats["algorithmic_latency_ms"], "buffer_ms": stats["buffer_latency_ms"],
            "device_ms_portaudio": stats["device_latency_ms"], "xruns": stats["xruns"],
            "late_blocks": stats["late_blocks"], "restarts": stats.get("restarts", 0),
            "arrivals_samples": arrivals}


def table(report: dict[str, Any]) -> str:
    lines = [f"{'rate':>6} {'K':>2} {'L':>2} {'resamp':>6} {'algorithmic ms':>15}"]
    for r in report["algorithmic"]:
        lines.append(f"{r['rate']:>6} {r['K']:>2} {r['L']:>2} {str(r['resampling']):>6} {r['algorithmic_ms']:15.2f}")
    if report.get("measured"):
        lines.append("")
        lines.append(f"{'rate':>6} {'K':>2} {'L':>2} {'block':>5} {'reported ms':>12} {'measured ms':>12} "
                     f"{'error smp':>9} {'ok':>3} {'arrived':>7} {'xruns':>5} {'late':>4} {'restarts':>8}")
        for r in report["measured"]:
            found = r["error_samples"] is not None
            measured = f"{r['measured_ms']:12.2f}" if found else f"{'-':>12}"
            error = f"{r['error_samples']:9d}" if found else f"{'-':>9}"
            arrived = f"{r['arrived']}/{r['impulses']}" if "arrived" in r else "-"
            lines.append(f"{r['rate']:>6} {r['K']:>2} {r['L']:>2} {r['block']:>5} {r['reported_ms']:12.2f} "
                         f"{measured} {error} {'yes' if r['within_one_block'] else 'NO':>3} {arrived:>7} "
                         f"{r['xruns']:>5} {r['late_blocks']:>4} {r.get('restarts', 0):>8}")
    return "\n".join(lines)
