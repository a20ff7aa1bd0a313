"""Model cards: the JSON contract beside every weights file.

A card says everything needed to use a set of weights without importing the code that
trained them: the front end (sample rate, STFT), the network's patch shape and width, how
channels are handled, what it was trained on and what it scored.  Loading never unpickles.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vocex.model.dsp import check_temperature, check_window, default_window
from vocex.model.errors import ModelError

CARD_VERSION = 1
# How a mono network serves multi-channel audio:
#   "independent": every channel gets its own mask from its own magnitude;
#   "downmix": one mask from the magnitude of the channels' mean, applied to every channel
#              (consistent across channels, and one inference whatever the channel count).
CHANNEL_POLICIES = ("independent", "downmix")
# Offline calibrations a card may set (see vocex.model.separate): the divisor of the mask's
# logits, and whether the vocals get a high band above the model's band.
OFFLINE_SETTINGS = ("mask_temperature", "high_band")
# How the live path runs a model (vocex.realtime.maskstream.MaskStream):
#   "window":   every K hops, the network on the sliding window of the newest context_frames
#               columns (any U-Net; the patch is normalised by its peak);
#   "stateful": a causal U-Net stepped one column batch at a time with per-layer state
#               (vocex.model.stateful, vocex-export --stateful); each column is normalised by
#               the peak of the newest peak_frames columns (vocex.model.unet.sliding_peak_normalise).
STREAMING_FORMS = ("window", "stateful")


def ensemble_fields(members: list[dict[str, Any]]) -> dict[str, Any]:
    """What an ensemble card's own ``base_channels``, ``causal`` and ``mask_delay`` are, from
    its members': the widest member, all causal, the largest delay."""
    try:
        return {"base_channels": max(int(m["base_channels"]) for m in members),
                "causal": all(bool(m["causal"]) for m in members),
                "mask_delay": max(int(m["mask_delay"]) for m in members)}
    except (KeyError, TypeError, ValueError):
        raise CardError("every ensemble member needs base_channels, causal and mask_delay") from None


class CardError(ModelError):
    """A model card is missing, unreadable or inconsistent (a model problem, exit 3; a
    ``ValueError`` as before)."""


@dataclass(frozen=True)
class FrontEnd:
    """Sample rate and STFT of a model."""

    sample_rate: int
    n_fft: int
    hop: int
    window: str

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.n_fft <= 0 or not 0 < self.hop <= self.n_fft:
            raise CardError(f"invalid front end {self}")
        try:
            check_window(self.n_fft, self.hop, self.window)
        except ValueError as exc:
            raise CardError(str(exc)) from None


def paper_front_end() -> FrontEnd:
    """Jansson et al. 2017: 8192 Hz, n_fft 1024, hop 768 (128 frames = 12 s)."""
    return FrontEnd(8192, 1024, 768, default_window(1024, 768))


def live_front_end() -> FrontEnd:
    """The live preset: 48 kHz (no resampling on most devices), n_fft 1024 (21.3 ms window),
    hop 256 (5.3 ms)."""
    return FrontEnd(48000, 1024, 256, default_window(1024, 256))


PRESETS = {"paper": paper_front_end, "live": live_front_end}


def _is_temperature(value: Any) -> bool:
    """Whether a card's ``mask_temperature`` is a number that :func:`check_temperature` takes."""
    try:
        return not isinstance(value, bool) and check_temperature(value) > 0
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class ModelCard:
    """Everything about a set of weights except the weights."""

    name: str
    sample_rate: int
    n_fft: int
    hop: int
    window: str
    n_bins: int = 512
    context_frames: int = 128
    base_channels: int = 16
    causal: bool = False  # time-causal U-Net (vocex.model.unet): mask column t reads columns <= t
    # mask column t belongs to STFT frame t - mask_delay (a causal model given that many
    # frames of future context); streams need lookahead >= mask_delay
    mask_delay: int = 0
    # an ensemble (vocex-average --ensemble): the mean mask of these networks, each
    # {"base_channels", "causal", "mask_delay"}; the fields above then describe the whole
    # (widest member, all causal, largest delay)
    members: list[dict[str, Any]] = field(default_factory=list)
    channels: str = "independent"
    training: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    live: dict[str, Any] = field(default_factory=dict)
    offline: dict[str, Any] = field(default_factory=dict)
    # how the live path streams the model (STREAMING_FORMS); "stateful" needs one causal
    # U-Net and the files' onnx_stateful graphs (or torch) to run it
    streaming: str = "window"
    # the stateful form's causal normalisation: each column divided by the peak of the newest
    # peak_frames columns (None: context_frames, the divisor of the window form's newest column)
    peak_frames: int | None = None
    version: int = CARD_VERSION

    def __post_init__(self) -> None:
        self.front_end  # validates
        if self.channels not in CHANNEL_POLICIES:
            raise CardError(f"channels must be one of {', '.join(CHANNEL_POLICIES)}, got {self.channels!r}")
        if self.n_bins % 64 or self.context_frames % 64:
            raise CardError(
                f"n_bins ({self.n_bins}) and context_frames ({self.context_frames}) must be "
                "multiples of 64 (six stride-2 layers)"
            )
        if not 0 <= self.mask_delay < self.context_frames:
            raise CardError(f"mask_delay must be in 0..{self.context_frames - 1}, got {self.mask_delay}")
        if self.members:
            whole = ensemble_fields(self.members)
            if {k: getattr(self, k) for k in whole} != whole:
                raise CardError(f"an ensemble card's base_channels, causal and mask_delay must be "
                                f"{tuple(whole.values())} (widest member, all causal, largest delay)")
        if self.streaming not in STREAMING_FORMS:
            raise CardError(f"streaming must be one of {', '.join(STREAMING_FORMS)}, got {self.streaming!r}")
        if self.streaming == "stateful" and (not self.causal or self.members):
            raise CardError("stateful streaming needs a single causal U-Net (causal true, no ensemble members)")
        if self.peak_frames is not None and not (isinstance(self.peak_frames, int) and self.peak_frames >= 1):
            raise CardError(f"peak_frames must be a whole number >= 1 or null, got {self.peak_frames!r}")
        unknown = set(self.offline) - set(OFFLINE_SETTINGS)
        if unknown:
            raise CardError(f"unknown offline settings: {', '.join(sorted(unknown))}")
        for path, settings in (("offline", self.offline), ("live", self.live)):
            if not _is_temperature(settings.get("mask_temperature", 1.0)):
                raise CardError(f"{path} mask_temperature must be positive, got {settings['mask_temperature']!r}")
        if self.n_bins > self.n_fft // 2 + 1:
            raise CardError(f"n_bins {self.n_bins} exceeds the {self.n_fft // 2 + 1} STFT bins")

    @property
    def stateful_peak_frames(self) -> int:
        """The columns whose peak normalises a column in the stateful form."""
        return self.context_frames if self.peak_frames is None else self.peak_frames

    @property
    def front_end(self) -> FrontEnd:
        return FrontEnd(self.sample_rate, self.n_fft, self.hop, self.window)

    def network_channels(self, n_channels: int) -> int:
        """How many inputs the network sees per patch of ``n_channels`` audio: one for a
        ``downmix`` card, else one per channel."""
        return 1 if self.channels == "downmix" else n_channels

    @classmethod
    def from_front_end(cls, name: str, front_end: FrontEnd, **kwargs: Any) -> ModelCard:
        return cls(name=name, **dataclasses.asdict(front_end), **kwargs)

    def replace(self, **changes: Any) -> ModelCard:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False) + "\n"

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: Path) -> ModelCard:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise CardError(f"model card not found: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CardError(f"model card {path} is unreadable: {exc}") from None
        if not isinstance(data, dict):
            raise CardError(f"model card {path} is not a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise CardError(f"model card {path} has unknown fields: {', '.join(sorted(unknown))}")
        if data.get("version", CARD_VERSION) > CARD_VERSION:
            raise CardError(f"model card {path} is version {data['version']}; update vocex")
        try:
            return cls(**data)
        except TypeError as exc:
            raise CardError(f"model card {path} is incomplete: {exc}") from None


def card_path_for(weights: Path) -> Path:
    """The card that belongs to a weights file: same folder and stem, ``.json``."""
    return Path(weights).with_suffix(".json")
