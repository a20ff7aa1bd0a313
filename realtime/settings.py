"""How the live path runs a model: which model it plays by default, the streaming settings
(hop batch K, lookahead L, mask temperature, resampler quality), the card's live defaults,
and the K that ``--hop-batch auto`` chooses for a measured inference time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vocex.model.backends import default_model_path
from vocex.model.card import ModelCard
from vocex.model.dsp import check_temperature, synthesis_support

RESAMPLER_QUALITY = "LQ"  # soxr: 0.5 ms (44.1 -> 48 kHz) / 10 ms (48 -> 44.1 kHz) of delay


def live_model_path() -> Path:
    """The shipped live model, what every streaming command plays without ``--model`` (falls
    back to the shipped default model)."""
    live = default_model_path().with_name("live.json")
    return live if live.exists() else default_model_path()


def model_for(spec: str | Path | None, streaming: bool) -> str | Path:
    """The model a command or API call uses: ``spec`` when given, else the shipped live model
    when it streams (what ``vocex-live`` plays) and the shipped default model when it does not."""
    if spec is not None:
        return spec
    return live_model_path() if streaming else default_model_path()


@dataclass(frozen=True)
class StreamingSettings:
    """How the live path uses a model: an inference every ``hop_batch`` (K) hops, whose newest
    K mask columns are used after ``lookahead_frames`` (L) further frames of future context,
    softened by ``mask_temperature`` (:func:`vocex.model.dsp.soften`).  A card with
    ``mask_delay`` D puts frame f's mask in column f + D, so its K columns are then the
    window's ``[-L-K+D, -L+D)`` and L must be at least D.

    A card that streams in the stateful form (``card.streaming``) has no window: each
    inference is one step of the stateful network over the K new columns, which gives their
    K masks (frames ``[-K-D, -D)``); the masks are kept L - D further frames.  The latency is
    the same formula for both forms."""

    hop_batch: int = 1
    lookahead_frames: int = 0
    mask_temperature: float = 1.0
    resampler_quality: str = RESAMPLER_QUALITY

    def validate(self, card: ModelCard) -> None:
        if self.hop_batch < 1 or self.lookahead_frames < 0:
            raise ValueError("hop batch K must be >= 1 and lookahead L >= 0")
        if card.streaming == "window" and self.hop_batch + self.lookahead_frames > card.context_frames:
            raise ValueError(f"K + L must be at most context_frames ({card.context_frames})")
        if self.lookahead_frames < card.mask_delay:
            raise ValueError(f"this model gives each frame's mask {card.mask_delay} frame(s) late: "
                             f"lookahead L must be at least {card.mask_delay}")
        check_temperature(self.mask_temperature)

    def mask_columns(self, card: ModelCard) -> slice:
        """The K columns of the network's window that hold the masks of the frames an
        inference outputs (the oldest first)."""
        lo = card.context_frames - self.lookahead_frames - self.hop_batch + card.mask_delay
        return slice(lo, lo + self.hop_batch)

    def columns_needed(self, card: ModelCard) -> int:
        """How many of the window's newest mask columns an inference needs (K + L - mask
        delay): its K columns are the oldest of them.  The stateful form computes exactly the
        K new columns of a step (the L - D after them were kept from earlier steps): K."""
        if card.streaming == "stateful":
            return self.hop_batch
        return card.context_frames - self.mask_columns(card).start

    def model_latency(self, card: ModelCard) -> int:
        """Algorithmic latency at the model's rate, in samples, without resampling: the
        synthesis window's support (``n_fft``, or ``2 * hop`` for a low-delay window) less one, and
        a hop for each further frame of the batch and of the lookahead."""
        support = synthesis_support(card.n_fft, card.hop, card.window)
        return support - 1 + (self.hop_batch - 1 + self.lookahead_frames) * card.hop

    def describe(self, card: ModelCard) -> dict[str, Any]:
        return {"hop_batch": self.hop_batch, "lookahead_frames": self.lookahead_frames,
                "mask_temperature": self.mask_temperature,
                "model_latency_ms": round(1000 * self.model_latency(card) / card.sample_rate, 2)}


HOP_BATCHES = (1, 2, 4, 8)  # the K that --hop-batch auto chooses from
AUTO_LOAD = 0.5  # the share of the time between inferences that auto K leaves to inference


def choose_hop_batch(card: ModelCard, inference_seconds: float | Callable[[int], float], lookahead: int = 0,
                     target_load: float = AUTO_LOAD) -> int:
    """The smallest K of :data:`HOP_BATCHES` (least latency) at which one inference takes at
    most ``target_load`` of the K hops it has to keep up with; the largest K that fits when
    none does.  ``inference_seconds``: one inference's time at any K, or a function giving it
    at a K (called for each K tried, the smallest first).  A window card's K + ``lookahead``
    must fit its context; a stateful card has no window to fit."""
    hop_seconds = card.hop / card.sample_rate
    fits = [k for k in HOP_BATCHES if card.streaming == "stateful" or k + lookahead <= card.context_frames] or [1]
    seconds_at = inference_seconds if callable(inference_seconds) else lambda k: inference_seconds
    return next((k for k in fits if seconds_at(k) <= target_load * k * hop_seconds), fits[-1])


def streaming_settings(card: ModelCard, hop_batch: int | None = None, lookahead: int | None = None,
                       mask_temperature: float | None = None) -> StreamingSettings:
    """Settings with the card's live defaults (``card.live``) filled in."""
    live = card.live
    s = StreamingSettings(hop_batch if hop_batch is not None else int(live.get("hop_batch", 1)),
                          lookahead if lookahead is not None else int(live.get("lookahead_frames", card.mask_delay)),
                          mask_temperature if mask_temperature is not None
                          else float(live.get("mask_temperature", 1.0)))
    s.validate(card)
    return s

