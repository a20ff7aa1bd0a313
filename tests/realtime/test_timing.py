"""``--hop-batch auto`` for a card that streams statefully: a step's cost depends on its place
in the period of the layers' phases, so K is chosen by the slowest step of a whole period,
not by a percentile of K=1 steps that can miss the deepest one."""

from __future__ import annotations

import time

import numpy as np

from vocex.model.backends import STATEFUL_PERIOD, step_depth
from vocex.model.card import ModelCard
from vocex.realtime.settings import AUTO_LOAD, HOP_BATCHES, StreamingSettings, choose_hop_batch
from vocex.realtime.timing import auto_hop_batch, inference_times, slowest_step, time_inference

from tests.conftest import TINY

# a hop of 40 ms (800 Hz, hop 32): budgets of 20, 40, 80, 160 ms at K = 1, 2, 4, 8
CARD = ModelCard(name="fake-stateful", window="sqrt_hann", causal=True, streaming="stateful",
                 **{**TINY, "sample_rate": 800})
HOP_S = CARD.hop / CARD.sample_rate
DEEPEST_S = 2.5 * HOP_S  # over the budget at K = 1, 2, 4 (at least 2 hops), within it at K = 8 (4 hops)


class _Stream:
    """Steps at no cost but the deepest one (every 64 hops, all six layers), which sleeps."""

    def __init__(self, n_items: int, hop_batch: int) -> None:
        self.mask = np.zeros((n_items, 1, CARD.n_bins, hop_batch), np.float32)
        self.t = 0
        self.deepest = 0

    def step(self, columns: np.ndarray) -> np.ndarray:
        if step_depth(self.t) == 6:
            self.deepest += 1
            time.sleep(DEEPEST_S)
        self.t = (self.t + columns.shape[-1]) % STATEFUL_PERIOD
        return self.mask

    def reset(self) -> None:
        self.t = 0


class _Backend:
    name, device, card = "fake", "cpu", CARD

    def __init__(self) -> None:
        self.streams: list[_Stream] = []

    def open_stream(self, n_items: int, hop_batch: int) -> _Stream:
        self.streams.append(_Stream(n_items, hop_batch))
        return self.streams[-1]


def test_the_slowest_step_is_the_deepest_one_of_the_period():
    backend = _Backend()
    for k in (1, 4):
        worst = slowest_step(backend, 2, k, periods=3)
        assert worst >= DEEPEST_S  # a sleep never ends early
        assert backend.streams[-1].deepest >= 3  # once a period, every period timed
    # a p90 of single steps hardly ever sees it: one step in 64
    assert np.percentile(inference_times(backend, 2, runs=64, warm_up=0, columns=1), 90) < DEEPEST_S


def test_auto_takes_the_smallest_k_whose_slowest_step_fits():
    backend = _Backend()
    k, measured = auto_hop_batch(backend, 2, StreamingSettings(1, 0))
    assert k == 8
    # every K from the smallest was timed until one fitted, each over whole periods
    assert list(measured["slowest_step_ms"]) == ["1", "2", "4", "8"] and measured["target_load"] == AUTO_LOAD
    assert all(ms >= 1000 * DEEPEST_S for ms in measured["slowest_step_ms"].values())
    # the old rule, a p90 of K=1 steps, would have taken K=1 and been late every 64 hops
    assert choose_hop_batch(CARD, time_inference(backend, 2, columns=1)) == 1


def test_a_stateful_card_has_no_context_window_to_fit():
    assert choose_hop_batch(CARD, 100.0, lookahead=CARD.context_frames - 1) == HOP_BATCHES[-1]
    assert choose_hop_batch(CARD.replace(streaming="window", causal=False), 100.0,
                            lookahead=CARD.context_frames - 4) == 4
