"""Timing inference: the seconds of each streaming inference as the live path runs it
(:func:`inference_times`, :func:`time_inference`, for the live warm-up and ``vocex-bench
compute``), the hop batch ``--hop-batch auto`` chooses from them (:func:`auto_hop_batch`),
and :class:`TimingRing`, the running record of a stream's."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vocex.model.backends import STATEFUL_PERIOD, Backend, newest_columns
from vocex.realtime.settings import AUTO_LOAD, StreamingSettings, choose_hop_batch


def inference_times(backend: Backend, n_items: int, runs: int, warm_up: int = 3, columns: int = 1) -> NDArray[np.float64]:
    """Seconds of each of ``runs`` calls on a random window of ``n_items`` network items, for
    its newest ``columns`` mask columns (the card's ``context_frames``: the whole window),
    after ``warm_up`` untimed calls.

    A card that streams statefully is timed the way it streams: ``warm_up`` untimed, then
    ``runs`` timed steps of ``columns`` random columns each (the hop batch K), and at least
    one whole period of the layers' phases (64 / K steps), so every step kind is timed."""
    card = backend.card
    rng = np.random.default_rng(0)
    if card.streaming == "stateful":
        stream = backend.open_stream(n_items, columns)
        step = rng.random((n_items, 1, card.n_bins, columns), dtype=np.float32)
        runs = max(runs, STATEFUL_PERIOD // int(np.gcd(columns, STATEFUL_PERIOD)))

        def call() -> None:
            stream.step(step)
    else:
        window = rng.random((n_items, 1, card.n_bins, card.context_frames), dtype=np.float32)

        def call() -> None:
            newest_columns(backend, window, columns)
    for _ in range(warm_up):
        call()
    times = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        call()
        times[i] = time.perf_counter() - t0
    return times


def time_inference(backend: Backend, n_channels: int, runs: int = 30, percentile: float = 90,
                   warm_up: int = 3, columns: int = 1) -> float:
    """A percentile, in seconds, of one streaming inference (the window of ``n_channels``
    channels, or of their downmix for a ``downmix`` card, and its newest ``columns`` mask
    columns), after ``warm_up`` untimed calls."""
    n_net = backend.card.network_channels(n_channels)
    return float(np.percentile(inference_times(backend, n_net, runs, warm_up, columns), percentile))


def slowest_step(backend: Backend, n_items: int, hop_batch: int, periods: int = 3, warm_up: int = 3) -> float:
    """Seconds of the slowest step of a stateful stream of ``n_items`` network items at hop
    batch K: a step's cost depends on its place in the period of the layers' phases (the
    deepest, once every 64 hops, computes a new column in every layer), so each of the 64 / K
    step kinds of a period is timed ``periods`` times, and the largest of their medians is
    returned (a median per kind: one preempted call does not count as the kind's cost)."""
    period = STATEFUL_PERIOD // int(np.gcd(hop_batch, STATEFUL_PERIOD))
    times = inference_times(backend, n_items, periods * period, warm_up, hop_batch)
    return float(np.median(times.reshape(periods, period), axis=0).max())


def auto_hop_batch(backend: Backend, n_channels: int, settings: StreamingSettings,
                   target_load: float = AUTO_LOAD) -> tuple[int, dict[str, Any]]:
    """The hop batch K of ``--hop-batch auto`` for ``settings`` (its lookahead; its K is 1),
    and what was measured to choose it (for the statistics).

    A window card's inference costs about the same at every K: the 90th percentile of one at
    K=1 (its newest mask columns) decides (:func:`choose_hop_batch`).  A stateful card's step
    costs more at a larger K, and most at the deepest step of a period, so each K is timed
    from the smallest up by its slowest step (:func:`slowest_step`) until one fits."""
    card = backend.card
    if card.streaming == "stateful":
        slowest: dict[str, float] = {}

        def seconds_at(k: int) -> float:
            slowest[str(k)] = slowest_step(backend, card.network_channels(n_channels), k)
            return slowest[str(k)]

        k = choose_hop_batch(card, seconds_at, settings.lookahead_frames, target_load)
        return k, {"slowest_step_ms": {kk: round(1000 * s, 3) for kk, s in slowest.items()},
                   "target_load": target_load}
    seconds = time_inference(backend, n_channels, columns=settings.columns_needed(card))
    k = choose_hop_batch(card, seconds, settings.lookahead_frames, target_load)
    return k, {"inference_ms_p90": round(1000 * seconds, 3), "target_load": target_load}


class TimingRing:
    """The most recent ``capacity`` durations (seconds), preallocated, plus the max since the
    last ``clear``."""

    def __init__(self, capacity: int = 1 << 16) -> None:
        self.values = np.zeros(capacity, dtype=np.float64)
        self.clear()

    def clear(self) -> None:
        self.count = 0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        self.values[self.count % len(self.values)] = seconds
        self.count += 1
        if seconds > self.max:
            self.max = seconds

    def recent(self) -> NDArray[np.float64]:
        return self.values[: min(self.count, len(self.values))]

    def summary_ms(self) -> dict[str, float]:
        """``{p50, p99, max}`` in milliseconds (zeros before the first inference)."""
        v = self.recent()
        if not v.size:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0}
        p50, p99 = np.percentile(v, [50, 99])
        return {"p50": round(1000 * p50, 3), "p99": round(1000 * p99, 3), "max": round(1000 * self.max, 3)}

