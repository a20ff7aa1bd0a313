"""The Python API: vocex inside another program, as a function or as a streaming processor.

    import vocex

    vocals, accompaniment = vocex.separate(audio, 44100)          # a whole signal, offline
    s = vocex.stream(sample_rate=48000, channels=2)               # a plugin-style processor
    out = s.process(block)                                        # in the host's audio loop
    s.mode, s.mix, s.bypass = "vocals", 0.8, False                # crossfaded, no click

Audio is float32, ``(n_samples, n_channels)`` or, for one channel, ``(n_samples,)``, in
[-1, 1] full scale; sample rates are in Hz.  These functions are thin layers over the code
the command-line tools run: :class:`vocex.model.separate.Separator` (``vocex-separate``),
:class:`vocex.realtime.stream.StreamingSeparator` (``vocex-live``, ``vocex-separate
--streaming``) and :func:`vocex.model.backends.load_backend`, so the results are theirs.

Bad input raises at once, naming the argument: :class:`TypeError` for something that is
not a float32 (or, offline, float64) numpy array, :class:`ValueError` for a wrong shape,
rate, channel count, NaN or infinite samples, or a setting out of range, and
:class:`vocex.model.backends.ModelError` (a ``ValueError``) for a model that cannot be
found or loaded.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from vocex.model.backends import Backend, ModelError, ModelFiles, load_backend, resolve_model, shipped_models
from vocex.model.card import ModelCard

MIN_RATE, MAX_RATE = 1000, 768000  # sample rates accepted, Hz
MAX_CHANNELS = 64  # more is a (n_channels, n_samples) array the wrong way round, not audio


@dataclass(frozen=True)
class Model:
    """A loaded model: its card (front end, channel policy, training data, scores), the
    files it came from and the inference backend (``mask = backend(magnitude)``, both
    ``(batch, 1, n_bins, context_frames)`` float32)."""

    card: ModelCard
    files: ModelFiles
    backend: Backend

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def sample_rate(self) -> int:
        """The rate the network works at, in Hz (any input rate is resampled to it)."""
        return self.card.sample_rate


def load(model: str | Path | Model = "default", backend: str = "auto", accel: str = "auto",
         threads: int | None = None) -> Model:
    """Load a model with its card.

    Args:
        model: a shipped model's name (``default``, ``live``, ``live-window``,
            ``live-ensemble``, ``live-low-delay``), a card ``.json``, a weights file with its card beside it, or
            a folder holding one card; a :class:`Model` is returned as it is.
        backend: ``auto`` (ONNX Runtime, else TorchScript), ``onnx``, ``torchscript`` or
            ``eager`` (the last two need torch).
        accel: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        threads: inference threads (None: the runtime's choice).
    Raises:
        ModelError: no such model, or its files cannot be loaded.
    """
    if isinstance(model, Model):
        return model
    if not isinstance(model, (str, Path)):
        raise TypeError(f"model must be a name, a path or a vocex.Model, got {type(model).__name__}")
    try:
        files = resolve_model(model)
        return Model(files.card, files, load_backend(files, backend, accel, threads))
    except ModelError as exc:
        raise ModelError(f"model {str(model)!r} cannot be loaded: {exc} (shipped models: "
                         f"{', '.join(shipped_models())})") from None
    except ValueError as exc:  # an unknown backend or accel
        raise ValueError(f"backend {backend!r} / accel {accel!r}: {exc}") from None


def _check_rate(sample_rate: object) -> int:
    """``sample_rate`` as an int, or a ValueError naming it."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Real) \
            or not float(sample_rate).is_integer():
        raise ValueError(f"sample_rate must be a whole number of Hz, got {sample_rate!r}")
    if not MIN_RATE <= sample_rate <= MAX_RATE:
        raise ValueError(f"sample_rate must be in {MIN_RATE}..{MAX_RATE} Hz, got {sample_rate}")
    return int(sample_rate)


def _check_finite(name: str, audio: NDArray[np.floating]) -> None:
    """Raise naming ``name`` if ``audio`` holds NaN or +-Inf (two reductions, no array made)."""
    if audio.size and not (np.isfinite(audio.min()) and np.isfinite(audio.max())):
        raise ValueError(f"{name} holds NaN or infinite samples")


def _settings(card: ModelCard, hop_batch: int | None, lookahead: int | None, mask_temperature: float | None):
    """The card's live settings with the given ones put in; a ValueError naming them."""
    from vocex.realtime.settings import streaming_settings

    try:
        return streaming_settings(card, hop_batch, lookahead, mask_temperature)
    except ValueError as exc:
        raise ValueError(f"hop_batch={hop_batch}, lookahead={lookahead}, mask_temperature={mask_temperature}: "
                         f"{exc}") from None


def separate(
    audio: NDArray[np.float32],
    sample_rate: int,
    model: str | Path | Model | None = None,
    *,
    streaming: bool = False,
    shifts: int | None = None,
    mask_temperature: float | None = None,
    high_band: bool | None = None,
    hop_batch: int | None = None,
    lookahead: int | None = None,
    block_size: int = 256,
    batch_size: int = 8,
    backend: str = "auto",
    accel: str = "auto",
    threads: int | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Split a whole signal into vocals and accompaniment (what ``vocex-separate`` writes).

    Args:
        audio: ``(n_samples, n_channels)`` or, mono, ``(n_samples,)``; float32 or float64,
            full scale [-1, 1], finite.
        sample_rate: of ``audio``, in Hz; resampled to the model's rate and back.
        model: see :func:`load`; None: the shipped ``default`` model, or ``live`` with
            ``streaming`` (as ``vocex-separate`` chooses).
        streaming: run the live streaming separator block by block instead (what
            ``vocex-live`` plays, shifted back by its latency; ``vocex-separate --streaming``).
            A model that streams statefully (``live``) always separates this way.
        shifts: offline passes (default 2; see :class:`vocex.model.separate.Separator`).
        mask_temperature: divides the mask's logits (default: the card's, offline or live).
        high_band: offline: vocals above the model's band too (default: the card's; on for the
            shipped default model).
        hop_batch, lookahead: streaming: K and L (default: the card's live settings).
        block_size: streaming: samples per block.
        batch_size: offline: patches per inference call.
        backend, accel, threads: see :func:`load` (a :class:`Model` brings its own).
    Returns:
        ``(vocals, accompaniment)``: float32, each shaped like ``audio``, at ``sample_rate``;
        ``vocals + accompaniment == audio`` to float32 rounding.
    """
    if not isinstance(audio, np.ndarray):
        raise TypeError(f"audio must be a numpy array, got {type(audio).__name__}")
    if audio.dtype not in (np.float32, np.float64):
        raise TypeError(f"audio must be float32 or float64, got {audio.dtype}")
    if audio.ndim not in (1, 2) or audio.shape[0] == 0 or (audio.ndim == 2 and audio.shape[1] == 0):
        raise ValueError(f"audio must be (n_samples, n_channels) or (n_samples,) with at least one sample, "
                         f"got shape {audio.shape}")
    if audio.ndim == 2 and audio.shape[1] > MAX_CHANNELS:
        raise ValueError(f"audio has {audio.shape[1]} channels (shape {audio.shape}): it must be "
                         f"(n_samples, n_channels), at most {MAX_CHANNELS} channels (audio.T?)")
    rate = _check_rate(sample_rate)
    _check_finite("audio", audio)
    if streaming and (shifts is not None or high_band):
        raise ValueError("shifts and high_band are for the offline path, not streaming=True")
    if not streaming and (hop_batch is not None or lookahead is not None):
        raise ValueError("hop_batch and lookahead are for streaming=True")
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    from vocex.realtime.settings import model_for

    m = load(model_for(model, streaming), backend, accel, threads)
    if m.card.streaming == "stateful" and not streaming:  # its causal network over the whole signal
        if shifts is not None or high_band:
            raise ValueError(f"shifts and high_band are for the offline path; {m.card.name} streams statefully, "
                             "so it separates as a stream")
        streaming = True
    x = np.ascontiguousarray(audio.reshape(len(audio), -1), dtype=np.float32)  # (n, C)
    if streaming:
        from vocex.realtime.stream import separate_streaming

        settings = _settings(m.card, hop_batch, lookahead, mask_temperature)
        vocals = separate_streaming(m.backend, x, rate, settings, block_size)
        accompaniment = x - vocals
    else:
        from vocex.model.separate import DEFAULT_SHIFTS, Separator

        sep = Separator(m.backend, batch_size, DEFAULT_SHIFTS if shifts is None else shifts, mask_temperature,
                        high_band).separate(x, rate)
        vocals, accompaniment = sep.vocals, sep.accompaniment
    return vocals.reshape(audio.shape), accompaniment.reshape(audio.shape)


def _forwarded(name: str, doc: str) -> property:
    """A property read from and set on the stream's separator (which checks the value)."""
    return property(lambda self: getattr(self.separator, name),
                    lambda self, value: setattr(self.separator, name, value), doc=doc)


class Stream:
    """A plugin-style streaming processor: made by :func:`stream`.

    ``process(block)`` takes ``(n_samples, n_channels)`` float32 (or ``(n_samples,)`` for one
    channel), any ``n_samples`` from one block to the next, and returns the same shape:
    output sample ``t`` is the result for input sample ``t - latency_samples``.  ``mode``,
    ``mix`` and ``bypass`` may be set between blocks (or from another thread); the output
    crossfades to them over ``fade_ms`` (a few milliseconds), so a change never clicks.
    Every buffer of the stream is made before the first block (one more only for a block
    longer than any before); the model's inference, once every K hops, makes its small
    temporaries in ONNX Runtime and NumPy.  ``process`` is called from one thread (the audio
    thread).

    Attributes:
        model: the :class:`Model`.
        separator: the :class:`vocex.realtime.stream.StreamingSeparator` doing the work.
        sample_rate: Hz; ``n_channels``: channels in and out.
    """

    def __init__(self, model: Model, separator) -> None:  # separator: StreamingSeparator
        self.model = model
        self.separator = separator
        self.sample_rate, self.n_channels = separator.sample_rate, separator.n_channels
        self._out = np.zeros((separator.max_block, self.n_channels), dtype=np.float32)
        self._one_d = False  # the layout of the latest block, for flush()

    @property
    def latency_samples(self) -> int:
        """Delay of the output behind the input, in samples at ``sample_rate`` (what
        ``vocex-live`` reports as its algorithmic latency for the same settings)."""
        return self.separator.latency_samples

    mode = _forwarded("mode", """``karaoke`` (the input without its vocals) or ``vocals`` (the vocals
        alone); settable, crossfaded.""")
    mix = _forwarded("mix", """Wet amount in [0, 1]; 0 gives the dry input (delayed by the latency);
        settable, crossfaded.""")
    bypass = _forwarded("bypass", """True: the dry input, delayed by the latency (the model keeps running,
        so turning bypass off is as immediate as any other change); settable, crossfaded.""")

    def _check_block(self, name: str, block: object, writable: bool = False) -> NDArray[np.float32]:
        """``block`` as ``(n_samples, n_channels)`` (a view, never a copy); raises naming ``name``."""
        if not isinstance(block, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(block).__name__}")
        if block.dtype != np.float32:
            raise TypeError(f"{name} must be float32, got {block.dtype}")
        if block.ndim == 1 and self.n_channels == 1:
            block = block[:, None]
        elif block.ndim != 2 or block.shape[1] != self.n_channels:
            mono = " or (n_samples,)" if self.n_channels == 1 else ""
            raise ValueError(f"{name} must be (n_samples, {self.n_channels}){mono}, got shape {block.shape}")
        if writable and not block.flags.writeable:
            raise ValueError(f"{name} is read-only")
        return block

    def process(self, block: NDArray[np.float32], out: NDArray[np.float32] | None = None) -> NDArray[np.float32]:
        """Process one block.

        Args:
            block: ``(n_samples, n_channels)`` float32 (``(n_samples,)`` too for one channel),
                any ``n_samples``, finite.
            out: where to write the result (same shape as ``block``, float32); it may be the
                host's output buffer.  None: the stream's own buffer, returned as a view that
                the next call overwrites (copy it to keep it).
        Returns:
            ``out``, or the view: shaped like ``block``.
        """
        x = self._check_block("block", block)
        _check_finite("block", x)
        n = x.shape[0]
        if out is None:
            if n > self._out.shape[0]:  # the one allocation: a block larger than any before
                self._out = np.zeros((n, self.n_channels), dtype=np.float32)
            result = self._out[:n]
            y = result
            if block.ndim == 1:
                result = result[:, 0]
        else:
            y = self._check_block("out", out, writable=True)
            if out.shape != block.shape:
                raise ValueError(f"out must have the block's shape {block.shape}, got {out.shape}")
            result = out
        self._one_d = block.ndim == 1
        self.separator.process_block(x, y)
        return result

    def flush(self) -> NDArray[np.float32]:
        """End of the stream: push ``latency_samples`` of silence and return the last output,
        ``(latency_samples, n_channels)`` (``(latency_samples,)`` if the latest block was
        1-D), completing the response to everything processed so far.  A new array."""
        y = self.separator.flush()
        return y[:, 0].copy() if self._one_d else y

    def reset(self) -> None:
        """Forget all signal history: the next block starts a new stream (mode, mix and
        bypass stay as set, without a fade)."""
        self.separator.reset()

    def __repr__(self) -> str:
        return (f"<vocex.Stream {self.model.name} {self.sample_rate} Hz x{self.n_channels} {self.mode} "
                f"mix {self.mix:g}{' bypass' if self.bypass else ''}, latency {self.latency_samples} samples>")


def stream(
    model: str | Path | Model = "live",
    sample_rate: int = 48000,
    channels: int = 2,
    *,
    mode: str = "karaoke",
    mix: float = 1.0,
    bypass: bool = False,
    hop_batch: int | None = None,
    lookahead: int | None = None,
    mask_temperature: float | None = None,
    max_block: int = 4096,
    fade_ms: float | None = None,
    backend: str = "auto",
    accel: str = "auto",
    threads: int | None = 1,
) -> Stream:
    """A streaming processor: what ``vocex-live`` runs, for a host's own audio loop.

    Args:
        model: see :func:`load` (default: the shipped ``live`` model).
        sample_rate: the host's rate in Hz (soxr converts to and from the model's).
        channels: channels in and out, each separated as the model card says.
        mode: ``karaoke`` (the input without its vocals) or ``vocals`` (the vocals alone).
        mix: wet amount in [0, 1] (0: the dry input).
        bypass: start with the dry input.
        hop_batch, lookahead: K and L (default: the card's live settings, as ``vocex-live``).
        mask_temperature: divides the mask's logits (default: the card's live setting).
        max_block: blocks up to this many samples need no new buffer; longer ones are
            processed too (one buffer is made for them).
        fade_ms: crossfade of a change of mode, mix or bypass, in milliseconds (default
            :data:`vocex.realtime.stream.FADE_MS`).
        backend, accel: see :func:`load`; threads: inference threads (default 1, as
            ``vocex-live``: one audio stream needs no more).
    Returns:
        a :class:`Stream`.
    """
    from vocex.realtime.stream import FADE_MS, StreamingSeparator

    rate = _check_rate(sample_rate)
    if isinstance(channels, bool) or not isinstance(channels, numbers.Integral) or not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(f"channels must be a whole number in 1..{MAX_CHANNELS}, got {channels!r}")
    if isinstance(max_block, bool) or not isinstance(max_block, numbers.Integral) or max_block < 1:
        raise ValueError(f"max_block must be a whole number >= 1, got {max_block!r}")
    m = load(model, backend, accel, threads)
    settings = _settings(m.card, hop_batch, lookahead, mask_temperature)
    sep = StreamingSeparator(m.backend, int(channels), rate, settings, mode, mix, max_block=int(max_block),
                             fade_ms=FADE_MS if fade_ms is None else fade_ms)
    sep.bypass = bypass
    sep.warm_up()  # compiled and allocated before the host's first block; starts at the asked gains
    return Stream(m, sep)
