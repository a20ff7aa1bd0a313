"""What a ``vocex-live`` run reports: :class:`LiveStats` (the ``--stats-json`` document) and
:class:`Levels` (the status line's levels)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class LiveStats:
    """What a live run reports; ``to_json`` is the ``--stats-json`` document."""

    sample_rate: int
    model: str
    algorithmic_latency_ms: float
    device_latency_ms: float
    buffer_latency_ms: float
    hop_ms: float
    inference_interval_ms: float
    xruns: int = 0
    late_blocks: int = 0
    blocks: int = 0
    worker_chunks: int = 0
    restarts: int = 0
    clipped_samples: int = 0
    inference_ms: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    started_unix: float = 0.0
    xrun_times_s: list[float] = field(default_factory=list)
    ended_by: str = "duration"
    # what the inference worker thread got (vocex.realtime.sched.Scheduling.to_json)
    scheduling: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def total_latency_ms(self) -> float:
        """Input to output: algorithmic + vocex's buffering + what PortAudio reports for the device."""
        return round(self.algorithmic_latency_ms + self.buffer_latency_ms + self.device_latency_ms, 2)

    @property
    def load(self) -> float:
        return round(self.inference_ms.get("p99", 0.0) / self.inference_interval_ms, 4) if self.inference_interval_ms else 0.0

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items()}
        d["load"] = self.load
        d["total_latency_ms"] = self.total_latency_ms
        return d


class Levels:
    """Running input / output / vocal-reduction levels for the status line."""

    def __init__(self) -> None:
        self.in_energy = self.out_energy = 0.0
        self.n = 0

    def add(self, block_in: np.ndarray, block_out: np.ndarray) -> None:
        self.in_energy += float(np.dot(block_in.ravel(), block_in.ravel()))
        self.out_energy += float(np.dot(block_out.ravel(), block_out.ravel()))
        self.n += block_in.size

    def take(self) -> tuple[float, float, float]:
        """(input dBFS, output dBFS, output/input dB) since the last call."""
        if not self.n:
            return -math.inf, -math.inf, 0.0
        db = lambda e: 10 * math.log10(e / self.n + 1e-12)  # noqa: E731
        result = (db(self.in_energy), db(self.out_energy), db(self.out_energy) - db(self.in_energy))
        self.in_energy = self.out_energy = 0.0
        self.n = 0
        return result
