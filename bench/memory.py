"""Peak memory and speed of ``vocex-separate`` on long recordings.

For each length a synthetic stereo 44.1 kHz 16-bit WAV is written to a temporary folder
(:func:`write_long_wav`, in blocks), ``vocex-separate`` runs on it in a child process, and
the child's peak resident memory (``os.wait4``'s ``ru_maxrss``) and wall time are recorded.
The folder is removed after each length.  A flat peak across lengths means memory does not
grow with the file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

SAMPLE_RATE = 44100
N_CHANNELS = 2
BLOCK_SECONDS = 10.0


def write_long_wav(path: Path, minutes: float, sample_rate: int = SAMPLE_RATE, n_channels: int = N_CHANNELS,
                   seed: int = 0) -> int:
    """Write ``minutes`` of a song-like signal (a gliding harmonic "voice", a bass line, noise
    bursts as drums) as 16-bit WAV, block by block; returns the number of samples."""
    n_total = int(round(minutes * 60 * sample_rate))
    block = int(BLOCK_SECONDS * sample_rate)
    rng = np.random.default_rng(seed)
    with sf.SoundFile(str(path), "w", sample_rate, n_channels, subtype="PCM_16", format="WAV") as f:
        for start in range(0, n_total, block):
            t = (start + np.arange(min(block, n_total - start))) / sample_rate
            pitch = 220.0 * 2 ** (np.sin(2 * np.pi * 0.13 * t) / 2)
            phase = 2 * np.pi * np.cumsum(pitch) / sample_rate + start * 0.001
            voice = sum(0.12 / h * np.sin(h * phase) for h in range(1, 6)) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))
            bass = 0.2 * np.sin(2 * np.pi * 55.0 * t)
            drums = 0.1 * rng.standard_normal(t.shape[0]) * (np.sin(2 * np.pi * 2.0 * t) > 0.9)
            mix = voice + bass + drums
            f.write(np.stack([mix * (1.0 - 0.2 * c / max(n_channels - 1, 1)) for c in range(n_channels)], axis=1)
                    .astype(np.float32))
    return n_total


def run_child(argv: list[str]) -> tuple[float, float, int]:
    """Run ``argv``; returns ``(peak_rss_mib, wall_seconds, exit_status)`` of that child alone."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        sys.stderr.write(err)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return usage.ru_maxrss * scale / 2**20, wall, proc.returncode


def run(minutes: list[float], model: str | None, extra: list[str], tmp_root: Path | None,
        progress=lambda msg: None) -> dict[str, Any]:
    """Measure ``vocex-separate`` at each length; returns the JSON-ready report."""
    rows = []
    for m in minutes:
        folder = Path(tempfile.mkdtemp(prefix="vocex-memory-", dir=tmp_root))
        try:
            need = m * 60 * SAMPLE_RATE * N_CHANNELS * (2 + 4 + 4) + (64 << 20)  # input + two float outputs
            free = shutil.disk_usage(folder).free
            if free < need:
                raise OSError(f"{folder}: {free / 2**30:.1f} GiB free, {m:g} minutes need {need / 2**30:.1f} GiB")
            src = folder / "long.wav"
            progress(f"writing {m:g} minutes to {src}")
            n = write_long_wav(src, m)
            argv = [sys.executable, "-m", "vocex.realtime.separate_cli", str(src), "-o", str(folder / "out"),
                    "--no-progress", *(["--model", model] if model else []), *extra]
            progress(f"separating {m:g} minutes")
            peak, wall, code = run_child(argv)
            rows.append({"minutes": m, "input_mib": round(src.stat().st_size / 2**20, 1),
                         "decoded_mib": round(n * N_CHANNELS * 4 / 2**20, 1), "peak_rss_mib": round(peak, 1),
                         "seconds": round(wall, 1), "seconds_per_minute": round(wall / m, 2), "exit_status": code})
            progress(f"  {m:g} min: peak RSS {peak:.0f} MiB, {wall:.1f} s ({wall / m:.2f} s per minute)")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return {"command": "vocex-separate IN -o OUT --no-progress " + " ".join(extra), "sample_rate": SAMPLE_RATE,
            "n_channels": N_CHANNELS, "model": model or "default", "rows": rows}


def table(report: dict[str, Any]) -> str:
    lines = [f"{'minutes':>8} {'input MiB':>10} {'decoded MiB':>12} {'peak RSS MiB':>13} {'seconds':>8} {'s/min':>6} {'exit':>5}"]
    for r in report["rows"]:
        lines.append(f"{r['minutes']:8g} {r['input_mib']:10.1f} {r['decoded_mib']:12.1f} {r['peak_rss_mib']:13.1f} "
                     f"{r['seconds']:8.1f} {r['seconds_per_minute']:6.2f} {r['exit_status']:5d}")
    return "\n".join(lines)
