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
* partial sums, one column per layer: of a layer's next column, the taps that read its kept
  input columns are summed at the step where the last of them arrives (the step where the
  level below gets its odd column), so the step the column is due at adds only the taps of
  its new input column.  The odd output column of a transposed convolution (taps 3 and 1 of
  its kept inputs) is computed at that earlier step too, the step it is due at.  The step
  where every level is due (every 64th) so computes about a fifth of each layer's column;
* at K = 1, the top two levels' kept taps and odd columns (``odd5``, ``odd6``, kept until
  due) at odd steps, where no level gets a column
  (:data:`~vocex.model.backends.STATEFUL_MOVED`), instead of the steps of depth 4 and 5
  that the rule above gives: no step of a period then does more than the step of depth 6;
* the normalisation's peaks of the newest ``peak_frames`` columns (below), and the position
  ``t`` of the next frame within the 64-frame period.

Levels that get a column every step (``l <= log2 K``) run their layers whole on their new
columns, as the window form does, and keep no partial sums: a stream steps with one K from
its start.

A step takes K new magnitude columns (K a power of two up to 64) and returns their K mask
columns.  Its depth ``d`` (the levels ``1..d`` that get new columns) follows from ``t``
alone: ``d = min(6, v)`` with ``2**v`` the largest power of two dividing ``t`` (``t = 0``:
6); every step of the same K and depth runs the same layers on the same column counts,
but for the K = 1 phases of moved work.

Reference.  The stream started at frame 0 from :meth:`StatefulUNet.initial_states`
reproduces :meth:`StatefulUNet.offline`: the causal U-Net run over the whole signal from
frame 0 (padded with silent frames to a multiple of 64, which a causal network ignores),
on the input normalised by :func:`~vocex.model.unet.sliding_peak_normalise`.  That
normalisation replaces the paper's "patch divided by its peak", which reads the future and
has no stream form: each column is divided by the peak of the newest ``peak_frames``
columns up to it (the card's ``peak_frames``, by default ``context_frames``: what the window
form divides its newest column by).  Batch norm (eval) and the activations act per column.

:func:`export_stateful_onnx` writes the one-column step of each depth, and of each phase that
runs moved work, as an ONNX graph, the states as explicit inputs and outputs; the ONNX
backend runs the graph of each step's position (:func:`~vocex.model.backends.stateful_graph`).
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from vocex.model.backends import (STATEFUL_MOVED, STATEFUL_ODD_LEVELS, STATEFUL_PERIOD, stateful_graphs,
                                  stateful_state_names, step_depth)
from vocex.model.unet import N_LAYERS, UNet, sliding_peak_normalise

assert STATEFUL_PERIOD == 2**N_LAYERS


class StatefulUNet(nn.Module):
    """A causal :class:`UNet` as a stateful stream (see the module doc).

    Args:
        unet: a causal U-Net (``causal=True``), used in eval mode; its weights are shared.
        n_bins: the card's ``n_bins`` (a multiple of 64).
        peak_frames: the normalisation's span in columns (the card's ``stateful_peak_frames``).

    ``step(columns, *states)``: ``columns`` is ``(batch, 1, n_bins, K)`` float32 linear
    magnitude, K a power of two up to 64, the same at every step of a stream; ``states`` as
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
        self.dec_out = [layer[0].out_channels for layer in unet.decoder]
        for l, layer in enumerate(unet.encoder, start=1):
            # encoder layer l by time tap: taps 0-3 read the 4 kept columns, tap 4 the new one
            w = layer[0].weight.detach()  # (out, in, 5, 5)
            self.register_buffer(f"enc_old_{l}", w[..., :4].contiguous(), persistent=False)
            self.register_buffer(f"enc_new_{l}", w[..., 4:].contiguous(), persistent=False)
        for i, layer in enumerate(unet.decoder):
            w, bias = layer[0].weight.detach(), layer[0].bias.detach()  # (in, out, 5, 5), (out,)
            zero = torch.zeros_like(w[..., 0])
            # each transposed convolution by time tap: output 2m reads taps 4, 2, 0 of inputs m-2,
            # m-1, m and output 2m+1 taps 3, 1 of inputs m-1, m.  With the inputs stacked on the
            # channel axis, one transposed convolution of time width 1 gives both outputs (even
            # then odd on the channel axis) and computes nothing it drops.  Batched: the three
            # inputs of every output pair; split (one column a step): the even output of m-1 and
            # m (taps 4, 2: the part that waits for m + 1) beside the odd one (taps 3, 1), and
            # tap 0 of the new column alone
            taps = [(w[..., 4], zero), (w[..., 2], w[..., 3]), (w[..., 0], w[..., 1])]  # inputs m-2, m-1, m
            stacked = torch.cat([torch.cat([even, odd], dim=1) for even, odd in taps], dim=0)[..., None]
            pair = torch.cat([torch.cat([w[..., 4], w[..., 3]], dim=1), torch.cat([w[..., 2], w[..., 1]], dim=1)])
            for name, weight, b in (("taps", stacked, torch.cat([bias] * 2)), ("pair", pair[..., None],
                                    torch.cat([torch.zeros_like(bias), bias])), ("new", w[..., 0:1], bias)):
                weight, b = _as_polyphase_conv(weight, b)
                self.register_buffer(f"{name}_{i}", weight, persistent=False)
                self.register_buffer(f"{name}_bias_{i}", b, persistent=False)

    # -- states -------------------------------------------------------------------------------

    def state_shapes(self, batch: int) -> list[tuple[int, ...]]:
        """Shapes of the states in :func:`~vocex.model.backends.stateful_state_names` order:
        ``t`` (1,), ``peaks`` (batch, peak_frames), ``enc1..6`` (batch, channels, bins, 4) of
        levels 0..5, ``dec1..6`` (batch, channels, bins, 2) of the decoder inputs of levels
        1..6, ``epart1..6`` (batch, channels, bins, 1) of encoder levels 1..6 and ``dpart1..6``
        (batch, channels, bins, 1) of the up columns of levels 0..5: the partial sums; ``odd5``,
        ``odd6`` (as ``dpart5``, ``dpart6``): the odd up columns of levels 4 and 5 computed
        before they are due."""
        w, nb = self.widths, self.n_bins
        enc = [(batch, 1 if l == 1 else w[l - 2], nb >> (l - 1), 4) for l in range(1, N_LAYERS + 1)]
        dec = [(batch, w[L - 1] * (1 if L == N_LAYERS else 2), nb >> L, 2) for L in range(1, N_LAYERS + 1)]
        epart = [(batch, w[l - 1], nb >> l, 1) for l in range(1, N_LAYERS + 1)]
        dpart = [(batch, 1 if L == 1 else w[L - 2], nb >> (L - 1), 1) for L in range(1, N_LAYERS + 1)]
        odd = [dpart[lv - 1] for lv in STATEFUL_ODD_LEVELS]
        return [(1,), (batch, self.peak_frames), *enc, *dec, *epart, *dpart, *odd]

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
        return self.step_at_depth(columns, states, step_depth(t), t if k == 1 else None)

    def step_at_depth(self, x: torch.Tensor, states: tuple[torch.Tensor, ...] | list[torch.Tensor],
                      depth: int, phase: int | None = None) -> tuple[torch.Tensor, ...]:
        """:meth:`step` with the depth given (levels ``1..depth`` get new columns) and, at K = 1,
        the position ``phase`` in the period where it runs work of
        :data:`~vocex.model.backends.STATEFUL_MOVED`: a fixed graph for each K and depth (and
        moved phase), which :func:`export_stateful_onnx` traces."""
        k = int(x.shape[-1])
        batched = k.bit_length() - 1  # levels 1..batched get K / 2**l >= 1 columns every step
        # the levels whose kept-tap sums and odd columns run at the phases of STATEFUL_MOVED
        moved_sums = {level for what, level in STATEFUL_MOVED.values() if what == "epart"} if k == 1 else set()
        moved_pairs = set(STATEFUL_ODD_LEVELS) if k == 1 else set()
        here = STATEFUL_MOVED.get(phase) if k == 1 else None
        t, peaks = states[0], states[1]
        enc = list(states[2 : 2 + N_LAYERS])
        dec = list(states[2 + N_LAYERS : 2 + 2 * N_LAYERS])
        epart = list(states[2 + 2 * N_LAYERS : 2 + 3 * N_LAYERS])
        dpart = list(states[2 + 3 * N_LAYERS : 2 + 4 * N_LAYERS])
        odd = dict(zip(STATEFUL_ODD_LEVELS, states[2 + 4 * N_LAYERS :]))
        # normalisation: column i by the peak of the newest peak_frames columns up to it
        seq = torch.cat([peaks, torch.amax(x, dim=(1, 2))], dim=1)  # (batch, peak_frames + K)
        col_peak = F.max_pool1d(seq[:, None, 1:], self.peak_frames, 1)[:, 0]
        level = [x / (col_peak[:, None, None, :] + 1e-8)]
        new_enc, new_epart = list(enc), list(epart)
        for lv in range(1, N_LAYERS + 1):  # encoder layer lv reads level lv - 1
            if lv - 1 > depth:
                break
            s = torch.cat([enc[lv - 1], level[lv - 1]], dim=-1)
            new_enc[lv - 1] = s[..., -4:]
            layer = self.unet.encoder[lv - 1]
            if lv <= batched:
                level.append(layer(s))
            elif lv <= depth:  # the kept taps were summed at an earlier step: add the new column's
                y = F.conv2d(level[lv - 1], getattr(self, f"enc_new_{lv}"), layer[0].bias, stride=2, padding=(2, 0))
                level.append(layer[2](layer[1](epart[lv - 1] + y)))
            elif lv not in moved_sums:  # level lv's next column is due at a later step: sum the taps of what is kept
                new_epart[lv - 1] = self._kept_taps(lv, new_enc[lv - 1])
        if here is not None and here[0] == "epart":  # its input has not changed since it last got a column
            new_epart[here[1] - 1] = self._kept_taps(here[1], enc[here[1] - 1])
        new_dec, new_dpart, new_odd = list(dec), list(dpart), dict(odd)
        if here is not None and here[0] == "pair":  # its input has not changed since it last got a column
            new_dpart[here[1] - 1], new_odd[here[1]] = self._pair(N_LAYERS - here[1], dec[here[1] - 1])
        up = None
        for i, layer in enumerate(self.unet.decoder):
            lv = N_LAYERS - i  # input level; output level lv - 1
            if lv <= depth:
                inp = level[lv] if lv == N_LAYERS else torch.cat([up, level[lv]], dim=1)
                s = torch.cat([dec[lv - 1], inp], dim=-1)
                new_dec[lv - 1] = s[..., -2:]
                if lv <= batched:
                    up = self._deconv(i, s)  # 2 n[lv] = n[lv - 1] columns of level lv - 1
                else:  # the even column: its kept taps were summed at an earlier step
                    up = self._activate(i, dpart[lv - 1] + self._up(inp, "new", i, 1))
            elif lv == depth + 1:  # the odd column is due
                if lv in moved_pairs:  # computed at an earlier step
                    up = self._activate(i, odd[lv])
                else:  # now, with the kept taps of the next even one
                    new_dpart[lv - 1], y = self._pair(i, dec[lv - 1])
                    up = self._activate(i, y)
        assert up is not None
        new_t = torch.remainder(t + k, STATEFUL_PERIOD)
        new_peaks = seq[:, k:]
        return (up, new_t, new_peaks, *new_enc, *new_dec, *new_epart, *new_dpart,
                *(new_odd[lv] for lv in STATEFUL_ODD_LEVELS))

    def _kept_taps(self, lv: int, kept: torch.Tensor) -> torch.Tensor:
        """Encoder layer ``lv``'s taps 0-3 on its 4 kept input columns (before the bias)."""
        return F.conv2d(kept, getattr(self, f"enc_old_{lv}"), None, stride=2, padding=(2, 0))

    def _pair(self, i: int, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder layer ``i`` on its 2 kept input columns ``m - 1, m``: the taps of the even
        output ``2 m + 2`` that read them, and the odd output ``2 m + 1`` (before batch norm)."""
        y = self._up(torch.cat([kept[..., :1], kept[..., 1:]], dim=1), "pair", i, 1)
        out = self.dec_out[i]
        return y[:, :out], y[:, out:]

    def _activate(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """What follows decoder layer ``i``'s transposed convolution (batch norm, activation)."""
        for sub in list(self.unet.decoder[i])[1:]:
            x = sub(x)
        return x

    def _up(self, x: torch.Tensor, name: str, i: int, columns: int) -> torch.Tensor:
        """The transposed convolution (stride 2 in frequency, 1 in time) of buffers ``name_i``
        and ``name_bias_i`` (:func:`_as_polyphase_conv`) on ``x`` (``columns`` wide): twice the
        bins.  The shapes are Python numbers, so a traced graph holds no shape arithmetic."""
        y = F.conv2d(x, getattr(self, f"{name}_{i}"), getattr(self, f"{name}_bias_{i}"), padding=(1, 0))
        out, bins = self.dec_out[i] * (1 if name == "new" else 2), self.n_bins >> (N_LAYERS - i)
        return y.reshape(-1, 2, out, bins, columns).permute(0, 2, 3, 1, 4).reshape(-1, out, 2 * bins, columns)

    def _deconv(self, i: int, s: torch.Tensor) -> torch.Tensor:
        """Decoder layer ``i`` on its input columns ``s`` (2 of the past, then n new): its 2 n
        output columns, activations included."""
        n = int(s.shape[-1]) - 2
        stacked = torch.cat([s[..., :n], s[..., 1 : n + 1], s[..., 2:]], dim=1)  # inputs m-2, m-1, m
        y = self._up(stacked, "taps", i, n)
        out = self.dec_out[i]
        return self._activate(i, torch.stack([y[:, :out], y[:, out:]], dim=-1).flatten(-2))  # columns 2m, 2m+1, ...

    # -- the reference ------------------------------------------------------------------------

    def offline(self, magnitude: torch.Tensor) -> torch.Tensor:
        """The masks the stream gives, computed over the whole signal at once: the causal
        U-Net over ``magnitude`` ``(batch, 1, n_bins, n_frames)`` (any ``n_frames``) from frame
        0, normalised by :func:`sliding_peak_normalise`.  Same shape out."""
        n = magnitude.shape[-1]
        padded = F.pad(magnitude, (0, -n % STATEFUL_PERIOD))
        return self.unet.forward_scaled(sliding_peak_normalise(padded, self.peak_frames))[..., :n]


def _as_polyphase_conv(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A transposed convolution of time width 1 (``weight`` ``(in, out, 5, 1)``; stride 2,
    padding 2 and output padding 1 in frequency, as the U-Net's) as a convolution with kernel
    3 and padding 1 in frequency giving both output phases: output bin ``2 p`` reads input
    bins ``p + 1, p, p - 1`` by taps 0, 2, 4, bin ``2 p + 1`` bins ``p + 1, p`` by taps 1, 3.
    Returns the convolution's weight ``(2 out, in, 3, 1)`` (even bins' channels, then odd
    bins') and bias.  ONNX Runtime runs it faster than the transposed convolution (the deepest
    step of a width-8 network in its own session: 1.23 against 1.56 ms)."""
    w = weight[..., 0].transpose(0, 1)  # (out, in, 5)
    zero = torch.zeros_like(w[..., 0])
    even = torch.stack([w[..., 4], w[..., 2], w[..., 0]], dim=-1)  # kernel over input bins p - 1, p, p + 1
    odd = torch.stack([zero, w[..., 3], w[..., 1]], dim=-1)
    return torch.cat([even, odd])[..., None].contiguous(), torch.cat([bias, bias]).contiguous()


class _Step(nn.Module):
    """One step (K, depth, moved phase) as a module, for tracing: the mask and the states the
    step changes (``changed``, indices into the states; set by the first call)."""

    def __init__(self, stateful: StatefulUNet, depth: int, phase: int | None) -> None:
        super().__init__()
        self.stateful, self.depth, self.phase = stateful, depth, phase
        self.changed: list[int] | None = None

    def forward(self, columns: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mask, *new = self.stateful.step_at_depth(columns, states, self.depth, self.phase)
        if self.changed is None:  # a state the step passes through is the same tensor
            self.changed = [i for i, (a, b) in enumerate(zip(states, new)) if a is not b]
        return (mask, *(new[i] for i in self.changed))


def _trace(stateful: StatefulUNet, k: int, depth: int, opset: int, phase: int | None = None):  # -> onnx.ModelProto
    import onnx

    names = stateful_state_names()
    example = (torch.rand(1, 1, stateful.n_bins, k), *stateful.initial_states(1))
    step = _Step(stateful, depth, phase).eval()
    step(*example)  # which states it changes: only those are outputs (a copy of the rest would cost)
    batch = {0: "batch"}
    dynamic = {"magnitude": batch, "mask": batch, **{s: batch for s in names[1:]},
               **{f"{names[i]}_out": batch for i in step.changed if i > 0}}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding")
        torch.onnx.export(step, example, buf, dynamo=False, opset_version=opset, input_names=["magnitude", *names],
                          output_names=["mask", *(f"{names[i]}_out" for i in step.changed)], dynamic_axes=dynamic)
    return onnx.load_from_string(buf.getvalue())


def _weights_as_initializers(model) -> None:  # onnx.ModelProto, changed in place
    """Move the exporter's ``Constant`` nodes of 64 or more values (the step's weights, which
    it folds from the module's buffers) to initializers, which can live in a shared file."""
    keep = []
    for node in model.graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value" \
                and node.attribute[0].t.dims and math.prod(node.attribute[0].t.dims) >= 64:
            tensor = node.attribute[0].t
            tensor.name = node.output[0]
            model.graph.initializer.append(tensor)
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)


def export_stateful_onnx(stateful: StatefulUNet, dest: Path, opset: int, half: bool = False) -> None:
    """Write the folder ``dest`` (which must not exist): a graph ``STEM.onnx`` of the one-column
    step for every stem of :func:`~vocex.model.backends.stateful_graphs` (``step{d}``: the
    step of depth ``d``; ``phase{t}``: the step at position ``t`` of the period, which also
    runs moved work), their weights stored once in ``weights`` beside them (with ``half``, those
    that float16 holds exactly in float16: :func:`~vocex.model.weightsio.share_weights`).  Each graph takes
    ``magnitude`` ``(batch, 1, n_bins, 1)`` and the states it reads (names from
    :func:`~vocex.model.backends.stateful_state_names`) and returns ``mask`` and the states it
    changes as ``NAME_out``; its metadata ``step`` (the stem) and ``peak_frames`` say what it
    is.

    One graph per kind of step, not one graph choosing its step by ``If`` nodes: ONNX Runtime
    re-lays out the convolutions of a model's main graph for its fastest CPU kernels but not
    those of a subgraph, and each ``If`` level copies every state; a step in its own session
    runs in about two thirds of the time (the deepest) to two fifths (the lightest)."""
    from vocex.model.weightsio import share_weights

    dest.mkdir()
    graphs = []
    with torch.no_grad():
        for stem, t in stateful_graphs().items():
            model = _trace(stateful, 1, step_depth(t), opset, t if t in STATEFUL_MOVED else None)
            _weights_as_initializers(model)
            for key, value in (("step", stem), ("peak_frames", str(stateful.peak_frames))):
                model.metadata_props.add(key=key, value=value)
            graphs.append(dest / f"{stem}.onnx")
            graphs[-1].write_bytes(model.SerializeToString())
    share_weights(graphs, dest / "weights", half)
