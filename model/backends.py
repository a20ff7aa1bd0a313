"""Inference backends: ``mask = backend(magnitude)``.

``magnitude`` and ``mask`` are ``(batch, 1, n_bins, context_frames)`` float32, the mask in
[0, 1].  Three backends sit behind one registry:

* ``onnx``: ONNX Runtime, CPU or the CUDA execution provider; needs no torch.
* ``torchscript``: a TorchScript module (the card's ``torchscript`` file, or traced from the
  checkpoint at load), CPU or CUDA.
* ``eager``: the PyTorch module itself, CPU or CUDA.

torch is imported only inside the two torch backends.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from vocex.model.card import CardError, ModelCard
from vocex.model.errors import ModelError

ACCELS = ("auto", "cpu", "cuda")
STATEFUL_PERIOD = 64  # 2 ** the U-Net's six stride-2 layers: the stateful form's phase period
# At K = 1 the work that would otherwise fall on the two heaviest steps of a period (its first
# and middle) runs at odd steps, which get no new column: phase -> (what, level).  "pair": the
# decoder at input level L computes its odd output column (kept as state oddL until due) and
# the kept taps of its next even one; "epart": encoder level L sums the taps of its kept
# columns.  Each window is legal: a pair after its level's column arrives and before its odd
# column is due, a sum after the level below got its odd column (vocex.model.stateful).
STATEFUL_MOVED = {1: ("pair", 6), 3: ("pair", 5), 35: ("pair", 5), 17: ("epart", 5), 49: ("epart", 5),
                  33: ("epart", 6)}
# the levels whose odd up columns are computed ahead, kept as states oddL until due
STATEFUL_ODD_LEVELS = tuple(sorted({level for what, level in STATEFUL_MOVED.values() if what == "pair"}))


def stateful_graph(t: int) -> str:
    """The stem of the ONNX graph (``vocex-export --stateful``) of the one-column step at stream
    position ``t``: ``step{depth}``, or ``phase{t}`` where it runs moved work."""
    phase = t % STATEFUL_PERIOD
    return f"phase{phase}" if phase in STATEFUL_MOVED else f"step{step_depth(phase)}"


def stateful_graphs() -> dict[str, int]:
    """Every stem :func:`stateful_graph` gives, sorted, with the first position of the period
    whose step it is."""
    first: dict[str, int] = {}
    for t in range(STATEFUL_PERIOD):
        first.setdefault(stateful_graph(t), t)
    return dict(sorted(first.items()))


@dataclass(frozen=True)
class ModelFiles:
    """A card and the folder its files live in."""

    card: ModelCard
    folder: Path
    card_path: Path

    def path(self, kind: str) -> Path | None:
        """Path of the card's ``kind`` file (``onnx``, ``torchscript``, ``checkpoint``)."""
        name = self.card.files.get(kind)
        return self.folder / name if name else None


def default_model_path() -> Path:
    """The card of the model shipped inside the package."""
    return Path(str(resources.files("vocex.model") / "weights" / "default.json"))


def shipped_models() -> list[str]:
    """Names of the models shipped inside the package (their cards' file stems)."""
    return sorted(p.stem for p in default_model_path().parent.glob("*.json"))


def resolve_model(spec: str | Path | None = None) -> ModelFiles:
    """Find a model: ``None`` (the shipped default), a card ``.json``, a weights file with its
    card beside it (same stem), a folder holding exactly one card, or the name of a shipped
    model (``default``, ``live``, ``live-window``, ``live-ensemble``, ``live-low-delay``:
    :func:`shipped_models`)."""
    path = default_model_path() if spec is None else Path(spec)
    if spec is not None and not path.exists() and str(spec) in shipped_models():
        path = default_model_path().with_name(f"{spec}.json")
    if path.is_dir():
        cards = sorted(path.glob("*.json"))
        if len(cards) != 1:
            raise ModelError(f"{path}: expected one model card (.json) in the folder, found {len(cards)}")
        path = cards[0]
    elif path.suffix != ".json":
        if not path.exists():
            raise ModelError(f"{path}: no such model file")
        path = path.with_suffix(".json")
    if not path.exists():
        what = "the shipped default model is missing (reinstall vocex)" if spec is None else "no such model card"
        raise ModelError(f"{path}: {what}")
    try:
        card = ModelCard.load(path)
    except CardError as exc:
        raise ModelError(str(exc)) from None
    files = ModelFiles(card, path.parent, path)
    if not card.files:
        raise ModelError(f"{path}: the card lists no weights files")
    for kind in card.files:
        p = files.path(kind)
        if p is not None and not p.exists():
            raise ModelError(f"{path}: its {kind} file {p.name} is missing")
    return files


class Backend(Protocol):
    """``mask = backend(magnitude)``, both ``(batch, 1, n_bins, context_frames)`` float32."""

    name: str
    device: str
    card: ModelCard

    def __call__(self, magnitude: NDArray[np.float32]) -> NDArray[np.float32]: ...


def _check_input(card: ModelCard, magnitude: NDArray[np.float32]) -> None:
    expected = (1, card.n_bins, card.context_frames)
    if magnitude.ndim != 4 or magnitude.shape[1:] != expected:
        raise ValueError(f"magnitude must be (batch, {', '.join(map(str, expected))}), got {magnitude.shape}")


def _cuda_with_torch() -> bool:
    import torch

    return torch.cuda.is_available()


class OnnxBackend:
    """ONNX Runtime; ``threads`` sets intra-op threads (None: ONNX Runtime's default) of the
    window graphs; the stateful step graphs always run on one."""

    name = "onnx"

    def __init__(self, files: ModelFiles, accel: str = "auto", threads: int | None = None) -> None:
        import onnxruntime as ort

        path = files.path("onnx")
        if path is None:
            raise ModelError(f"{files.card_path}: the card lists no onnx file (run vocex-export)")
        self.card = files.card
        providers = ["CPUExecutionProvider"]
        if accel in ("auto", "cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        elif accel == "cuda":
            raise ModelError("--accel cuda: ONNX Runtime has no CUDA execution provider here")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        # a stateful step is a fraction of a millisecond: a second thread's wake-up costs more
        # than it saves (p99 24-32 ms against 0.8 ms on one thread, on a 2-core machine)
        step_options = ort.SessionOptions()
        step_options.intra_op_num_threads = step_options.inter_op_num_threads = 1

        def open_session(onnx: Path, options=options):
            try:
                return ort.InferenceSession(str(onnx), options, providers=providers)
            except Exception as exc:  # onnxruntime raises its own untyped errors
                raise ModelError(f"{onnx}: not a loadable ONNX model ({str(exc).splitlines()[0][:200]})") from None

        self.session = open_session(path)
        inp = self.session.get_inputs()[0]
        if list(inp.shape[1:]) != [1, self.card.n_bins, self.card.context_frames]:
            raise ModelError(f"{path}: input shape {inp.shape} does not match its card "
                             f"(1, {self.card.n_bins}, {self.card.context_frames})")
        self.input_name = inp.name
        self.device = "cuda" if self.session.get_providers()[0].startswith("CUDA") else "cpu"
        # the live path's graph of the newest mask columns (vocex-export --newest-columns), if any
        self.newest_session, self.newest_frames = None, 0
        newest = files.path("onnx_newest")
        if newest is not None:
            self.newest_session = open_session(newest)
            # its time axis is symbolic in the graph: one call on silence says how many columns it gives
            probe = np.zeros((1, 1, self.card.n_bins, self.card.context_frames), dtype=np.float32)
            shape = self.newest_session.run(None, {self.input_name: probe})[0].shape
            self.newest_frames = shape[-1]
            if shape[:-1] != probe.shape[:-1] or not 0 < self.newest_frames < self.card.context_frames:
                raise ModelError(f"{newest}: output shape {shape} is not the newest columns of its card's window")

        # the stateful form's step graphs (vocex-export --stateful), if any: {stem: session}
        self.stateful_sessions = {}
        stateful = files.path("onnx_stateful")
        if stateful is not None:
            if not stateful.is_dir():  # a single graph: what vocex-export --stateful wrote before its step folders
                raise ModelError(f"{stateful}: not a folder of stateful step graphs (export the model again with "
                                 "vocex-export --stateful)")
            for stem in stateful_graphs():
                session = open_session(stateful / f"{stem}.onnx", step_options)
                meta = session.get_modelmeta().custom_metadata_map
                names = [i.name for i in session.get_inputs()]
                if meta.get("step") != stem or meta.get("peak_frames") is None:
                    raise ModelError(f"{stateful}: {stem}.onnx is not a vocex stateful step (no step / "
                                     "peak_frames metadata)")
                if names[0] != "magnitude" or not set(names[1:]) <= set(stateful_state_names()) \
                        or meta["peak_frames"] != str(self.card.stateful_peak_frames):
                    raise ModelError(f"{stateful}: {stem}.onnx's inputs or peak_frames ({meta['peak_frames']}) "
                                     f"do not match its card ({self.card.stateful_peak_frames})")
                self.stateful_sessions[stem] = session
        elif self.card.streaming == "stateful":
            raise ModelError(f"{files.card_path}: the card streams statefully but lists no onnx_stateful graphs "
                             "(run vocex-export --stateful)")

    def __call__(self, magnitude: NDArray[np.float32]) -> NDArray[np.float32]:
        _check_input(self.card, magnitude)
        return self.session.run(None, {self.input_name: magnitude})[0]

    def open_stream(self, n_items: int, hop_batch: int) -> StatefulStream:
        """A stateful stream of ``n_items`` network items stepping ``hop_batch`` columns."""
        if not self.stateful_sessions:
            raise ModelError(f"{self.card.name}: no stateful graphs (vocex-export --stateful)")
        return _OnnxStatefulStream(self.stateful_sessions, self.card, n_items, hop_batch)

    def newest(self, magnitude: NDArray[np.float32], n: int) -> NDArray[np.float32]:
        """``self(magnitude)[..., -n:]``, from the newest-columns graph when it has enough."""
        if n > self.newest_frames:
            return self(magnitude)[..., magnitude.shape[-1] - n:]
        _check_input(self.card, magnitude)
        mask = self.newest_session.run(None, {self.input_name: magnitude})[0]
        return mask[..., self.newest_frames - n:]


def stateful_state_names() -> list[str]:
    """The stateful form's states, in order (vocex.model.stateful): the stream position ``t``,
    the normalisation's ``peaks``, then per layer ``enc1..6``, ``dec1..6``, ``epart1..6`` and
    ``dpart1..6``, and ``odd5``, ``odd6``."""
    return ["t", "peaks", *(f"{kind}{i}" for kind in ("enc", "dec", "epart", "dpart") for i in range(1, 7)),
            *(f"odd{i}" for i in STATEFUL_ODD_LEVELS)]


def step_depth(t: int) -> int:
    """How many U-Net levels get a new column in a stateful step that starts at stream position
    ``t``: the levels ``l`` with ``t % 2**l == 0`` (all six at ``t = 0``)."""
    depth = 0
    while depth < 6 and t % (2 << depth) == 0:
        depth += 1
    return depth


class StatefulStream:
    """A running stateful stream of one model: ``mask = stream.step(columns)``, ``reset()``.

    ``columns`` and the returned ``mask`` are ``(n_items, 1, n_bins, hop_batch)`` float32: the
    newest ``hop_batch`` magnitude columns and their masks.  The mask is a buffer of the
    stream's, overwritten by the next step.  A hop batch that the model cannot step at once
    runs as ``hop_batch / step`` steps of the largest ``step`` it can (the same masks).  All
    buffers are allocated here."""

    def __init__(self, card: ModelCard, n_items: int, hop_batch: int, step_sizes: tuple[int, ...]) -> None:
        fits = [k for k in step_sizes if hop_batch % k == 0]
        if hop_batch < 1 or not fits:
            raise ValueError(f"hop batch {hop_batch}: the stateful model steps in {step_sizes} columns")
        self.card, self.n_items, self.hop_batch, self.step_size = card, n_items, hop_batch, max(fits)
        self.mask = np.zeros((n_items, 1, card.n_bins, hop_batch), dtype=np.float32)
        self.columns = np.zeros((n_items, 1, card.n_bins, self.step_size), dtype=np.float32)

    def step(self, columns: NDArray[np.float32]) -> NDArray[np.float32]:
        if columns.shape != self.mask.shape:
            raise ValueError(f"columns must be {self.mask.shape}, got {columns.shape}")
        s = self.step_size
        for i in range(0, self.hop_batch, s):
            self.columns[...] = columns[..., i : i + s]
            self._step(self.mask[..., i : i + s])
        return self.mask

    def _step(self, out: NDArray[np.float32]) -> None:  # self.columns -> out
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError


class _OnnxStatefulStream(StatefulStream):
    """One column a step, by the step's graph (:func:`stateful_graph`).  Each state has two
    preallocated buffers: a graph reads the current one and writes the other, for the states
    it changes only (the rest stay where they are, uncopied).  Which buffer is current thus
    follows from the stream position, so each position of two periods (after which every
    state has changed an even number of times) has an IOBinding, bound once."""

    def __init__(self, sessions: dict, card: ModelCard, n_items: int, hop_batch: int) -> None:
        import onnxruntime as ort

        super().__init__(card, n_items, hop_batch, (1,))
        self.out = np.zeros_like(self.columns)
        names = stateful_state_names()
        shapes = _state_shapes(list(sessions.values()), n_items)
        self.buffers = {name: [np.zeros(*shapes[name]) for _ in range(2)] for name in names}
        value = ort.OrtValue.ortvalue_from_numpy
        columns, mask = value(self.columns), value(self.out)
        values = {name: [value(a) for a in pair] for name, pair in self.buffers.items()}
        self._values = (columns, mask, values)  # kept alive
        current = dict.fromkeys(names, 0)
        self.steps = []
        for t in range(2 * STATEFUL_PERIOD):
            session = sessions[stateful_graph(t)]
            io = session.io_binding()
            io.bind_ortvalue_input("magnitude", columns)
            io.bind_ortvalue_output("mask", mask)
            for spec in session.get_inputs()[1:]:
                io.bind_ortvalue_input(spec.name, values[spec.name][current[spec.name]])
            for spec in session.get_outputs()[1:]:
                name = spec.name.removesuffix("_out")
                current[name] ^= 1
                io.bind_ortvalue_output(spec.name, values[name][current[name]])
            self.steps.append((session, io))
        if any(current.values()):
            raise ModelError("the stateful step graphs change a state an odd number of times in a period")
        self.t = 0

    def _step(self, out: NDArray[np.float32]) -> None:
        session, io = self.steps[self.t]
        session.run_with_iobinding(io)
        self.t = (self.t + 1) % len(self.steps)
        out[...] = self.out

    def reset(self) -> None:
        for pair in self.buffers.values():
            for a in pair:
                a[...] = 0
        self.t = 0


def _state_shapes(sessions: list, n_items: int) -> dict[str, tuple[tuple[int, ...], type]]:
    """Each state's shape (batch ``n_items``) and dtype, from the inputs of the step graphs
    (each reads some of them; together they read all)."""
    shapes = {}
    for session in sessions:
        for spec in session.get_inputs()[1:]:
            shape = tuple(n_items if not isinstance(d, int) else d for d in spec.shape)
            shapes[spec.name] = (shape, np.int64 if "int64" in spec.type else np.float32)
    missing = set(stateful_state_names()) - set(shapes)
    if missing:
        raise ModelError(f"the stateful step graphs read no state {sorted(missing)[0]}")
    return shapes


class _TorchStatefulStream(StatefulStream):
    """:class:`vocex.model.stateful.StatefulUNet` in eager torch (for tests and torch users)."""

    def __init__(self, module, device: str, card: ModelCard, n_items: int, hop_batch: int) -> None:
        import torch

        sizes = tuple(2**i for i in range(7))
        super().__init__(card, n_items, hop_batch, sizes)
        self.module, self.device, self._torch = module, device, torch
        self.reset()

    def _step(self, out: NDArray[np.float32]) -> None:
        with self._torch.inference_mode():
            mask, *self.states = self.module.step(self._torch.from_numpy(self.columns).to(self.device), *self.states)
            out[...] = mask.cpu().numpy()

    def reset(self) -> None:
        self.states = [s.to(self.device) for s in self.module.initial_states(self.n_items)]


def newest_columns(backend: Backend, magnitude: NDArray[np.float32], n: int) -> NDArray[np.float32]:
    """The newest ``n`` mask columns of ``backend(magnitude)``, by the backend's cheaper
    ``newest`` where it has one (the same values to float rounding)."""
    newest = getattr(backend, "newest", None)
    if newest is not None:
        return newest(magnitude, n)
    return backend(magnitude)[..., magnitude.shape[-1] - n:]


def load_unet(files: ModelFiles):  # -> vocex.model.unet.UNet (torch)
    """The eager PyTorch module of a model, in eval mode, on the CPU: from its checkpoint, or
    without one (a shipped model) from its ONNX graph's weights (:mod:`vocex.model.weightsio`)."""
    import torch

    from vocex.model.unet import UNet

    path = files.path("checkpoint") or files.path("onnx")
    if path is None:
        raise ModelError(f"{files.card_path}: the card lists no checkpoint and no ONNX graph")
    card = files.card
    if card.members:
        from vocex.model.unet import UNetEnsemble

        model = UNetEnsemble([UNet(m["base_channels"], causal=m["causal"]) for m in card.members],
                             [m["mask_delay"] for m in card.members])
    else:
        model = UNet(card.base_channels, causal=card.causal)
    try:
        if path.suffix == ".onnx":
            from vocex.model.weightsio import state_dict_from_onnx

            state = state_dict_from_onnx(path, model.state_dict())
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # torch, onnx and protobuf raise their own untyped errors
        raise ModelError(f"{path}: not the weights of this card's U-Net ({str(exc).splitlines()[0][:200]})") from None
    return model.eval()


class _TorchBackend:
    def __init__(self, files: ModelFiles, accel: str = "auto", threads: int | None = None) -> None:
        import torch

        if accel == "cuda" and not torch.cuda.is_available():
            raise ModelError("--accel cuda: torch sees no CUDA device")
        self.device = "cuda" if accel in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
        if threads:
            torch.set_num_threads(threads)
        self.card, self.files = files.card, files
        self.module = self._load(files).to(self.device)
        self._torch = torch

    def open_stream(self, n_items: int, hop_batch: int) -> StatefulStream:
        """A stateful stream (eager torch, from the checkpoint) of ``n_items`` network items."""
        from vocex.model.stateful import StatefulUNet

        net = self.module if isinstance(self.module, self._torch.nn.Module) and not isinstance(
            self.module, self._torch.jit.ScriptModule) else load_unet(self.files)
        try:
            module = StatefulUNet(net, self.card.n_bins, self.card.stateful_peak_frames).to(self.device)
        except (ValueError, AttributeError) as exc:
            raise ModelError(f"{self.card.name}: no stateful form ({exc})") from None
        return _TorchStatefulStream(module, self.device, self.card, n_items, hop_batch)

    def _load(self, files: ModelFiles):
        raise NotImplementedError

    def __call__(self, magnitude: NDArray[np.float32]) -> NDArray[np.float32]:
        _check_input(self.card, magnitude)
        with self._torch.inference_mode():
            x = self._torch.from_numpy(np.ascontiguousarray(magnitude)).to(self.device)
            return self.module(x).cpu().numpy()


class EagerBackend(_TorchBackend):
    name = "eager"

    def _load(self, files: ModelFiles):
        return load_unet(files)

    def newest(self, magnitude: NDArray[np.float32], n: int) -> NDArray[np.float32]:
        _check_input(self.card, magnitude)
        with self._torch.inference_mode():
            x = self._torch.from_numpy(np.ascontiguousarray(magnitude)).to(self.device)
            return self.module.newest(x, n).cpu().numpy()


class TorchScriptBackend(_TorchBackend):
    name = "torchscript"

    def _load(self, files: ModelFiles):
        import torch

        path = files.path("torchscript")
        if path is not None:
            try:
                return torch.jit.load(str(path), map_location="cpu").eval()
            except (RuntimeError, OSError, ValueError) as exc:
                raise ModelError(f"{path}: not a loadable TorchScript model ({str(exc).splitlines()[0][:200]})") from None
        return script_unet(load_unet(files))


def script_unet(model):  # UNet -> torch.jit.ScriptModule
    """TorchScript of an eval-mode U-Net (scripted, so no shape is baked in)."""
    import torch

    return torch.jit.script(model.eval())


BACKENDS: dict[str, Callable[..., Backend]] = {
    "onnx": OnnxBackend,
    "torchscript": TorchScriptBackend,
    "eager": EagerBackend,
}


def installed_backends() -> list[str]:
    """Backends whose runtime is importable here."""
    names = []
    if importlib.util.find_spec("onnxruntime"):
        names.append("onnx")
    if importlib.util.find_spec("torch"):
        names += ["torchscript", "eager"]
    return names


def load_backend(
    files: ModelFiles, name: str = "auto", accel: str = "auto", threads: int | None = None
) -> Backend:
    """Open a model with a backend; ``auto`` prefers ONNX Runtime, then TorchScript."""
    if accel not in ACCELS:
        raise ValueError(f"accel must be one of {ACCELS}")
    if name == "auto":
        usable = [n for n in installed_backends() if n != "eager"]
        usable = [n for n in usable if files.path("onnx" if n == "onnx" else "checkpoint") or
                  (n == "torchscript" and files.path("torchscript"))]
        if not usable:
            raise ModelError("no usable backend: install onnxruntime (and an ONNX export of the "
                             "model) or torch (pip install 'vocex[torch]')")
        name = usable[0]
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    if name != "onnx" and not importlib.util.find_spec("torch"):
        raise ModelError(f"backend {name} needs torch: pip install 'vocex[torch]'")
    return BACKENDS[name](files, accel=accel, threads=threads)
