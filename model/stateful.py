"""The stateful streaming form of the causal U-Net: one step per hop batch, computing only
the new columns of every layer.

Column ``i`` of encoder level ``l`` (``l = 1..6``; level 0 is the input) reads the input up
to column ``2**l * i``, and a transposed convolution's output columns ``2 m`` and ``2 m + 1``
read only columns ``<= m`` of its input (:mod:`vocex.model.unet`).  So a stream that starts
at frame 0 can compute level ``l``'s column ``i`` as soon as frame ``2**l * i`` arrives: every
layer advances one column every ``2**l`` hops, in the phase where level ``l`` gets a column
at the frames ``t`` with ``t % 2**l == 0``.  Each layer keeps what its 5-wide time kernel
still needs of the past:

* encoder layer ``l``: the newest 4 columns of its input (level ``l - 1``);
* decoder layer at input level ``L`` (its input: the decoder's up columns concatenated with
  the skip of level ``L``): the newest 2 columns of that input;
* the up columns ``2 m + 1`` that a decoder layer computes together with ``2 m`` but that
  belong to a later step (one pending column per level, the mask's included: at K = 1 every
  odd frame's mask was computed at the frame before, from columns that frame already had);
* the normalisation's peaks of the newest ``peak_frames`` columns (below), and the position
  ``t`` of the next frame within the 64-frame period.

A step takes K new magnitude columns (K a power of two up to 64) and returns their K mask
columns.  Its depth ``d`` (the levels ``1..d`` that get new columns) follows from ``t``
alone: ``d = min(6, v)`` with ``2**v`` the largest power of two dividing ``t`` (``t = 0``:
6); every step of the same K and depth runs the same layers on the same column counts.

Reference.  The stream started at frame 0 from :meth:`StatefulUNet.initial_states`
reproduces :meth:`StatefulUNet.offline`: the causal U-Net run over the whole signal from
frame 0 (padded with silent frames to a multiple of 64, which a causal network ignores),
on the input normalised by :func:`~vocex.model.unet.sliding_peak_normalise`.  That
normalisation replaces the paper's "patch divided by its peak", which reads the future and
has no stream form: each column is divided by the peak of the newest ``peak_frames``
columns up to it (the card's ``peak_frames``, by default ``context_frames``: what the window
form divides its newest column by).  Batch norm (eval) and the activations act per column.

:func:`export_stateful_onnx` writes one ONNX graph holding a step for every K of
:data:`~vocex.model.backends.STATEFUL_STEP_SIZES` and every depth, chosen by ``If`` nodes on
K (the input's width) and ``t`` (a state), with the states as explicit inputs and outputs.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from vocex.model.backends import STATEFUL_PERIOD, STATEFUL_STEP_SIZES, stateful_state_names, step_depth
from vocex.model.unet import N_LAYERS, UNet, sliding_peak_normalise

assert STATEFUL_PERIOD == 2**N_LAYERS


class StatefulUNet(nn.Module):
    """A causal :class:`UNet` as a stateful stream (see the module doc).

    Args:
        unet: a causal U-Net (``causal=True``), used in eval mode; its weights are shared.
        n_bins: the card's ``n_bins`` (a multiple of 64).
        peak_frames: the normalisation's span in columns (the card's ``stateful_peak_frames``).

    ``step(columns, *states)``: ``columns`` is ``(batch, 1, n_bins, K)`` float32 linear
    magnitude, K a power of two up to 64 that divides the stream position; ``states`` as
    from :meth:`initial_states` or the previous step.  Returns ``(mask, *new_states)``,
    ``mask`` ``(batch, 1, n_bins, K)`` in [0, 1], the masks of those K columns.
    """

    def __init__(self, unet: UNet, n_bins: int, peak_frames: int) -> None:
        super().__init__()
        if not unet.causal:
            raise ValueError("the stateful form needs a causal U-Net")
        if n_bins % STATEFUL_PERIOD or peak_frames < 1:
            raise ValueError("n_bins must be a multiple of 64 and peak_frames at least 1")
        self.unet = unet.eval()
        self.n_bins, self.peak_frames = n_bins, peak_frames
        self.widths = [layer[0].out_channels for layer in unet.encoder]  # level l has widths[l - 1]
        # each transposed convolution by time tap: output 2m reads taps 4, 2, 0 of inputs m-2,
        # m-1, m and output 2m+1 taps 3, 1 of inputs m-1, m.  With the three inputs stacked on
        # the channel axis, one transposed convolution of time width 1 gives both outputs (even
        # then odd on the channel axis) and computes nothing it drops (the 5-wide one would
        # compute every tap of every input column, most of them for columns it crops)
        for i, layer in enumerate(unet.decoder):
            w = layer[0].weight.detach()  # (in, out, 5, 5)
            zero = torch.zeros_like(w[..., 0])
            taps = [(w[..., 4], zero), (w[..., 2], w[..., 3]), (w[..., 0], w[..., 1])]  # inputs m-2, m-1, m
            stacked = torch.cat([torch.cat([even, odd], dim=1) for even, odd in taps], dim=0)[..., None]
            self.register_buffer(f"taps_{i}", stacked.contiguous(), persistent=False)
            self.register_buffer(f"bias_{i}", torch.cat([layer[0].bias.detach()] * 2), persistent=False)

    # -- states -------------------------------------------------------------------------------

    def state_shapes(self, batch: int) -> list[tuple[int, ...]]:
        """Shapes of the states in :func:`~vocex.model.backends.stateful_state_names` order:
        ``t`` (1,), ``peaks`` (batch, peak_frames), ``enc1..6`` (batch, channels, bins, 4) of
        levels 0..5, ``dec1..6`` (batch, channels, bins, 2) of the decoder inputs of levels
        1..6, ``pend0..5`` (batch, channels, bins, 1) of up-column levels 0..5."""
        w, nb = self.widths, self.n_bins
        enc = [(batch, 1 if l == 1 else w[l - 2], nb >> (l - 1), 4) for l in range(1, N_LAYERS + 1)]
        dec = [(batch, w[L - 1] * (1 if L == N_LAYERS else 2), nb >> L, 2) for L in range(1, N_LAYERS + 1)]
        pend = [(batch, 1 if j == 0 else w[j - 1], nb >> j, 1) for j in range(N_LAYERS)]
        return [(1,), (batch, self.peak_frames), *enc, *dec, *pend]

    def initial_states(self, batch: int) -> tuple[torch.Tensor, ...]:
        """The states of a stream before its frame 0: silence before the signal, ``t = 0``."""
        shapes = self.state_shapes(batch)
        return (torch.zeros(shapes[0], dtype=torch.int64),
                *(torch.zeros(s, dtype=torch.float32) for s in shapes[1:]))

    # -- stepping ---------------------------------------------------------------------------

    def step(self, columns: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One step of K = ``columns.shape[-1]`` columns (see the class doc)."""
        k, t = columns.shape[-1], int(states[0])
        if k < 1 or k > STATEFUL_PERIOD or k & (k - 1) or t % k:
            raise ValueError(f"a step takes a power of two of columns up to {STATEFUL_PERIOD} that divides "
                             f"the stream position {t}, got {k}")
        return self.step_at_depth(columns, states, step_depth(t))

    def step_at_depth(self, x: torch.Tensor, states: tuple[torch.Tensor, ...] | list[torch.Tensor],
                      depth: int) -> tuple[torch.Tensor, ...]:
        """:meth:`step` with the depth given (levels ``1..depth`` get new columns): a fixed
        graph for each K and depth, which :func:`export_stateful_onnx` traces."""
        k = x.shape[-1]
        n = [max(k >> level, 1) for level in range(N_LAYERS + 1)]  # new columns per active level
        t, peaks = states[0], states[1]
        enc = list(states[2 : 2 + N_LAYERS])
        dec = list(states[2 + N_LAYERS : 2 + 2 * N_LAYERS])
        pend = list(states[2 + 2 * N_LAYERS :])
        # normalisation: column i by the peak of the newest peak_frames columns up to it
        seq = torch.cat([peaks, torch.amax(x, dim=(1, 2))], dim=1)  # (batch, peak_frames + K)
        col_peak = F.max_pool1d(seq[:, None, 1:], self.peak_frames, 1)[:, 0]
        level = [x / (col_peak[:, None, None, :] + 1e-8)]
        new_enc = list(enc)
        for lv in range(1, N_LAYERS + 1):  # encoder layer lv reads level lv - 1
            if lv - 1 > depth:
                break
            s = torch.cat([enc[lv - 1], level[lv - 1]], dim=-1)
            new_enc[lv - 1] = s[..., -4:]
            if lv <= depth:
                level.append(self.unet.encoder[lv - 1](s))
        new_dec, new_pend = list(dec), list(pend)
        up = None
        for i, layer in enumerate(self.unet.decoder):
            lv = N_LAYERS - i  # input level; output level lv - 1
            out = None
            if lv <= depth:
                inp = level[lv] if lv == N_LAYERS else torch.cat([up, level[lv]], dim=1)
                s = torch.cat([dec[lv - 1], inp], dim=-1)
                new_dec[lv - 1] = s[..., -2:]
                out = self._deconv(i, s)  # 2 n[lv] columns of level lv - 1
            if lv - 1 <= depth:  # the up columns of level lv - 1 in this step
                if out is None:  # computed with the previous column, one step ago
                    up = pend[lv - 1]
                elif 2 * n[lv] == n[lv - 1]:
                    up = out
                else:  # one column now, the next one in a later step
                    up, new_pend[lv - 1] = out[..., :1], out[..., 1:]
        new_t = torch.remainder(t + k, STATEFUL_PERIOD)
        new_peaks = seq[:, k:]
        return (up, new_t, new_peaks, *new_enc, *new_dec, *new_pend)

    def _deconv(self, i: int, s: torch.Tensor) -> torch.Tensor:
        """Decoder layer ``i`` on its input columns ``s`` (2 of the past, then n new): its 2 n
        output columns, activations included."""
        layer = self.unet.decoder[i]
        n = s.shape[-1] - 2
        stacked = torch.cat([s[..., :n], s[..., 1 : n + 1], s[..., 2:]], dim=1)  # inputs m-2, m-1, m
        y = F.conv_transpose2d(stacked, getattr(self, f"taps_{i}"), getattr(self, f"bias_{i}"), stride=(2, 1),
                               padding=(2, 0), output_padding=(1, 0))
        out = y.shape[1] // 2
        x = torch.stack([y[:, :out], y[:, out:]], dim=-1).flatten(-2)  # columns 2m, 2m+1, ...
        for sub in list(layer)[1:]:
            x = sub(x)
        return x

    # -- the reference ------------------------------------------------------------------------

    def offline(self, magnitude: torch.Tensor) -> torch.Tensor:
        """The masks the stream gives, computed over the whole signal at once: the causal
        U-Net over ``magnitude`` ``(batch, 1, n_bins, n_frames)`` (any ``n_frames``) from frame
        0, normalised by :func:`sliding_peak_normalise`.  Same shape out."""
        n = magnitude.shape[-1]
        padded = F.pad(magnitude, (0, -n % STATEFUL_PERIOD))
        return self.unet.forward_scaled(sliding_peak_normalise(padded, self.peak_frames))[..., :n]


class _Step(nn.Module):
    """One (K, depth) step as a module, for tracing."""

    def __init__(self, stateful: StatefulUNet, depth: int) -> None:
        super().__init__()
        self.stateful, self.depth = stateful, depth

    def forward(self, columns: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.stateful.step_at_depth(columns, states, self.depth)


def _trace(stateful: StatefulUNet, k: int, depth: int, opset: int):  # -> onnx.ModelProto
    import onnx

    names = stateful_state_names()
    example = (torch.rand(1, 1, stateful.n_bins, k), *stateful.initial_states(1))
    batch = {0: "batch"}
    dynamic = {"magnitude": batch, "mask": batch,
               **{s: batch for s in names[1:]}, **{f"{s}_out": batch for s in names[1:]}}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding")
        torch.onnx.export(_Step(stateful, depth).eval(), example, buf, dynamo=False, opset_version=opset,
                          input_names=["magnitude", *names], output_names=["mask", *(f"{s}_out" for s in names)],
                          dynamic_axes=dynamic)
    return onnx.load_from_string(buf.getvalue())


def export_stateful_onnx(stateful: StatefulUNet, dest: Path, opset: int,
                         step_sizes: tuple[int, ...] = STATEFUL_STEP_SIZES) -> None:
    """Write ``dest``: the stateful step for every K of ``step_sizes`` and every depth, in one
    ONNX graph.  Inputs ``magnitude`` ``(batch, 1, n_bins, K)`` and the states (names from
    :func:`~vocex.model.backends.stateful_state_names`); outputs ``mask`` and each state as
    ``NAME_out``.  A K or a position outside the graph gives a NaN mask and unchanged states.
    The metadata ``step_sizes`` and ``peak_frames`` say what the graph holds."""
    with torch.no_grad():
        steps = {(k, d): _trace(stateful, k, d, opset) for k in step_sizes
                 for d in range(k.bit_length() - 1, N_LAYERS + 1)}
    model = combine_steps(steps, {"step_sizes": ",".join(map(str, step_sizes)),
                                  "peak_frames": str(stateful.peak_frames)})
    dest.write_bytes(model.SerializeToString())


def combine_steps(steps: dict, metadata: dict[str, str]):  # {(K, depth): onnx.ModelProto} -> ModelProto
    """One ONNX model that runs ``steps[(K, depth)]`` for the input's K and the depth of its
    state ``t``: ``If`` nodes in a binary tree over the key ``8 K + depth``, each step's graph a
    branch reading the outer inputs."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    first = next(iter(steps.values()))
    # the exporter drops an input that a step does not read: take each input from a step that has it
    input_info = {i.name: i for m in steps.values() for i in m.graph.input}
    inputs = ["magnitude", *stateful_state_names()]
    outputs = [o.name for o in first.graph.output]

    def branch(model, tag: str):
        """A step's graph as an If branch: its weights stay in it (ONNX Runtime pre-packs the
        weights of convolutions only for initializers of the graph that runs them; read from
        an outer graph they cost about half the deepest step again)."""
        g = model.graph
        names = {i: i for i in inputs}
        inits = []
        for init in g.initializer:
            names[init.name] = f"{tag}/{init.name}"
            init.name = names[init.name]
            inits.append(init)
        nodes = []
        for node in g.node:
            for j, name in enumerate(node.output):
                names[name] = f"{tag}/{name}"
                node.output[j] = names[name]
            for j, name in enumerate(node.input):
                if name:
                    node.input[j] = names[name]
            node.name = f"{tag}/{node.name}"
            nodes.append(node)
        outs = []
        for o in g.output:  # a branch's outputs must be its own values: copy passed-through inputs
            name = names[o.name]
            if name in inputs:
                nodes.append(helper.make_node("Identity", [name], [f"{tag}/{o.name}"]))
                name = f"{tag}/{o.name}"
            outs.append(helper.make_tensor_value_info(name, o.type.tensor_type.elem_type, None))
        return helper.make_graph(nodes, tag, [], outs, initializer=inits)

    elem = {o.name: o.type.tensor_type.elem_type for o in first.graph.output}

    def failed(tag: str):  # a K or position the graph does not hold: NaN mask, states unchanged
        nodes = [helper.make_node("Constant", [], [f"{tag}/nan"], value=numpy_helper.from_array(np.array(np.nan, np.float32))),
                 helper.make_node("Mul", [inputs[0], f"{tag}/nan"], [f"{tag}/{outputs[0]}"])]
        nodes += [helper.make_node("Identity", [i], [f"{tag}/{o}"]) for i, o in zip(inputs[1:], outputs[1:])]
        return helper.make_graph(nodes, tag, [], [helper.make_tensor_value_info(f"{tag}/{o}", elem[o], None)
                                                  for o in outputs])

    def tree(keys: list[int], tag: str, out_names: list[str]) -> list:
        """Nodes that compute ``out_names`` from the step of key ``keys`` that matches."""
        if len(keys) == 1:
            cond = f"{tag}/is"
            return [helper.make_node("Constant", [], [f"{tag}/k"], value=numpy_helper.from_array(np.array([keys[0]]))),
                    helper.make_node("Equal", ["key", f"{tag}/k"], [cond]),
                    helper.make_node("If", [cond], out_names, name=tag,
                                     then_branch=branch(by_key[keys[0]], f"{tag}/step"),
                                     else_branch=failed(f"{tag}/none"))]
        mid = len(keys) // 2
        sides = []
        for side, part in (("lo", keys[:mid]), ("hi", keys[mid:])):
            sub = f"{tag}{side[0]}"
            names = [f"{sub}/{o}" for o in outputs]
            sides.append(helper.make_graph(tree(part, sub, names), sub, [],
                                           [helper.make_tensor_value_info(n, elem[o], None) for n, o in zip(names, outputs)]))
        return [helper.make_node("Constant", [], [f"{tag}/mid"], value=numpy_helper.from_array(np.array([keys[mid]]))),
                helper.make_node("Less", ["key", f"{tag}/mid"], [f"{tag}/lo"]),
                helper.make_node("If", [f"{tag}/lo"], out_names, name=tag, then_branch=sides[0], else_branch=sides[1])]

    by_key = {8 * k + d: m for (k, d), m in steps.items()}
    # key = 8 K + depth, depth = how many of t % 2, t % 4, ..., t % 64 are 0
    nodes = [helper.make_node("Shape", [inputs[0]], ["k"], start=3, end=4),
             helper.make_node("Constant", [], ["eight"], value=numpy_helper.from_array(np.array([8]))),
             helper.make_node("Mul", ["k", "eight"], ["k8"])]
    total = "k8"
    for level in range(1, N_LAYERS + 1):
        p = f"p{level}"
        nodes += [helper.make_node("Constant", [], [p], value=numpy_helper.from_array(np.array([2**level]))),
                  helper.make_node("Mod", [inputs[1], p], [f"{p}/mod"]),
                  helper.make_node("Constant", [], [f"{p}/zero"], value=numpy_helper.from_array(np.array([0]))),
                  helper.make_node("Equal", [f"{p}/mod", f"{p}/zero"], [f"{p}/eq"]),
                  helper.make_node("Cast", [f"{p}/eq"], [f"{p}/n"], to=TensorProto.INT64),
                  helper.make_node("Add", [total, f"{p}/n"], [f"{p}/sum"])]
        total = f"{p}/sum"
    nodes.append(helper.make_node("Identity", [total], ["key"]))
    nodes += tree(sorted(by_key), "s", outputs)
    graph = helper.make_graph(nodes, "vocex_stateful_unet", [input_info[i] for i in inputs], list(first.graph.output))
    for value in (graph.input[0], graph.output[0]):  # magnitude and mask: K columns, any K
        value.type.tensor_type.shape.dim[3].dim_param = "K"
    model = helper.make_model(graph, opset_imports=list(first.opset_import), producer_name="vocex")
    model.ir_version = first.ir_version
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    return model
