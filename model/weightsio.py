"""Network weights kept once, in ONNX: one external-data file shared by a model's graphs, and
the torch state dict read back from a graph.

A shipped model's graphs (the whole window, the newest columns, the stateful step) all run
the same parameters; :func:`share_weights` stores them once, in ``NAME.weights``, which every
graph of the model reads (ONNX external data, resolved beside the graph file).  With
``half``, a tensor whose values are all exact in float16 (a network exported with
``vocex-export --half``, whose parameters were rounded to float16) is stored in float16, half
the bytes, and cast back to float32 by a ``Cast`` node at the top of the graph, which ONNX
Runtime folds into a constant when it loads the graph: the graph computes in float32 on
exactly the stored values, as fast as before.

:func:`state_dict_from_onnx` gives eager torch (and training's ``--init``) the parameters of
a graph without a ``.pt`` checkpoint.  Named initializers map to the state dict by name.  The
ONNX exporter folds an encoder's batch norm into its convolution in eval mode; such a layer
comes back as the folded convolution with an identity batch norm (``running_var = 1 - eps``),
which computes the same function in eval mode.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

_FOLDED_CONV = re.compile(r"^/(?P<path>(?:[\w.]+/)*?)(?P<layer>encoder\.\d+)/[\w.]+/Conv_output_0$")


def _initializers(graph_path: Path) -> tuple[object, dict[str, NDArray[np.float32]]]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(graph_path), load_external_data=True)
    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    # a parameter read through a node: a Cast from float16 storage (share_weights(half=True)),
    # an Identity where the exporter stored equal tensors once
    for node in model.graph.node:
        if node.op_type in ("Cast", "Identity") and node.input[0] in arrays:
            value = arrays[node.input[0]]
            arrays[node.output[0]] = value.astype(np.float32) if node.op_type == "Cast" else value
    return model, arrays


def state_dict_from_onnx(graph_path: Path, template: dict[str, object], eps: float = 1e-5) -> dict[str, object]:
    """The state dict of the network a graph runs, shaped like ``template`` (the state dict of
    a network built from the model's card).

    Raises:
        ValueError: the graph does not hold every parameter of ``template``.
    """
    import torch

    model, arrays = _initializers(Path(graph_path))
    found: dict[str, NDArray[np.float32]] = {name: a for name, a in arrays.items() if name in template}
    for node in model.graph.node:
        m = _FOLDED_CONV.match(node.output[0]) if node.op_type == "Conv" else None
        if m is None or len(node.input) < 3:
            continue
        # "/members.0/encoder.3/encoder.3.0/Conv_output_0" -> "members.0.encoder.3"
        prefix = ".".join([*m["path"].split("/")[:-1], m["layer"]])
        if f"{prefix}.1.running_mean" in found:  # the batch norm is a node of its own: not folded
            continue
        found[f"{prefix}.0.weight"], found[f"{prefix}.0.bias"] = arrays[node.input[1]], arrays[node.input[2]]
        channels = arrays[node.input[1]].shape[0]
        found[f"{prefix}.1.weight"] = np.ones(channels, np.float32)
        found[f"{prefix}.1.bias"] = np.zeros(channels, np.float32)
        found[f"{prefix}.1.running_mean"] = np.zeros(channels, np.float32)
        found[f"{prefix}.1.running_var"] = np.full(channels, 1.0 - eps, np.float32)
    state: dict[str, object] = {}
    missing = []
    for name, value in template.items():
        if name.endswith("num_batches_tracked"):
            state[name] = value
        elif name in found and tuple(found[name].shape) == tuple(value.shape):
            state[name] = torch.from_numpy(np.array(found[name], dtype=np.float32))
        else:
            missing.append(name)
    if missing:
        raise ValueError(f"{graph_path}: the graph does not hold {len(missing)} parameter(s) of this card's "
                         f"U-Net (first: {missing[0]})")
    return state


def _half_exact(model) -> None:  # onnx.ModelProto, changed in place
    """Store every float32 initializer of 64 or more values that float16 holds exactly as
    float16, read through a ``Cast`` to float32 under its old name."""
    import onnx
    from onnx import helper, numpy_helper

    inputs = {i.name for i in model.graph.input}
    casts = []
    for tensor in model.graph.initializer:
        if tensor.data_type != onnx.TensorProto.FLOAT or tensor.name in inputs:
            continue
        values = numpy_helper.to_array(tensor)
        half = values.astype(np.float16)
        if values.size < 64 or not np.array_equal(half.astype(np.float32), values):
            continue
        name = tensor.name
        tensor.CopyFrom(numpy_helper.from_array(half, f"{name}.f16"))
        casts.append(helper.make_node("Cast", [tensor.name], [name], to=onnx.TensorProto.FLOAT,
                                      name=f"{name}.cast"))
    nodes = [*casts, *model.graph.node]
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def share_weights(graphs: list[Path], weights: Path, half: bool = False) -> None:
    """Rewrite ``graphs`` (ONNX files in one folder, e.g. a model's whole-window and newest-columns
    graphs) so their initializers live once, in ``weights`` beside them; tensors of the same type,
    shape and bytes are stored once.  With ``half``, the tensors that float16 holds exactly are
    stored in float16 (:func:`_half_exact`).  Every file is written atomically."""
    import onnx

    from vocex.model.files import atomic_path

    if any(Path(g).parent != Path(weights).parent for g in graphs):
        raise ValueError("the graphs and their weights file must share one folder")
    models = [onnx.load(str(g), load_external_data=True) for g in graphs]
    if half:
        for model in models:
            _half_exact(model)
    offsets: dict[tuple[int, tuple[int, ...], bytes], tuple[int, int]] = {}
    blob = bytearray()
    for model in models:
        for tensor in model.graph.initializer:
            raw = onnx.numpy_helper.to_array(tensor).tobytes()
            key = (tensor.data_type, tuple(tensor.dims), raw)  # names differ where the exporter made them
            if key not in offsets:
                pad = (-len(blob)) % 64  # aligned, as onnx's own writer does for memory mapping
                blob.extend(b"\0" * pad)
                offsets[key] = (len(blob), len(raw))
                blob.extend(raw)
            offset, length = offsets[key]
            tensor.ClearField("raw_data")
            for field in ("float_data", "int32_data", "int64_data", "double_data"):
                tensor.ClearField(field)
            del tensor.external_data[:]
            for field, value in (("location", Path(weights).name), ("offset", str(offset)), ("length", str(length))):
                entry = tensor.external_data.add()
                entry.key, entry.value = field, value
            tensor.data_location = onnx.TensorProto.EXTERNAL
    with atomic_path(Path(weights)) as tmp:
        tmp.write_bytes(bytes(blob))
    for graph, model in zip(graphs, models):
        with atomic_path(Path(graph)) as tmp:
            tmp.write_bytes(model.SerializeToString())
