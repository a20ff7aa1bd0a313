"""vocex: real-time vocal extraction and removal.

    import vocex

    vocals, accompaniment = vocex.separate(audio, sample_rate)   # a whole signal
    s = vocex.stream(sample_rate=48000, channels=2)              # a streaming processor
    out = s.process(block)                                       # block by block
    model = vocex.load("live")                                   # a model with its card

See :mod:`vocex.api`.  The names are imported on first use, so ``import vocex`` (and
``import vocex.model``) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["separate", "stream", "load", "Stream", "Model", "ModelError", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from vocex.api import Model, Stream, load, separate, stream
    from vocex.model.backends import ModelError


def __getattr__(name: str) -> Any:
    if name == "ModelError":
        from vocex.model.backends import ModelError

        return ModelError
    if name in __all__:
        from vocex import api

        return getattr(api, name)
    raise AttributeError(f"module 'vocex' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
