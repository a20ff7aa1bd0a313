"""Start a wider U-Net from a trained narrower one, computing the same function
(Net2WiderNet: Chen, Goodfellow & Shlens, "Net2Net: Accelerating Learning via Knowledge
Transfer", ICLR 2016).

Every level's ``w`` channels become ``W`` (``W >= w``): the first ``w`` new channels are the
old ones, each further one a copy of an old channel drawn at random.  A layer's output
channels (and their batch norm) are copied; its input weights from a channel's copies are
split so that they sum to the old weight.  Copies of a channel carry the same activations
in eval mode, so the wider network's output equals the narrower one's (to float rounding).

The split is random per weight rather than equal: with equal halves two copies would get
the same gradient and stay copies for ever (dropout separates only the decoder's first
layers; the encoder's copies would never part).  Random shares make them differ from the
first step while the function is unchanged.
"""

from __future__ import annotations

import torch

from vocex.model.unet import N_LAYERS


def base_width(state: dict[str, torch.Tensor]) -> int:
    """The first encoder layer's width of a U-Net state dict."""
    return int(state["encoder.0.0.weight"].shape[0])


def widen_state(state: dict[str, torch.Tensor], width: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``state`` (a :class:`~vocex.model.unet.UNet` state dict) at base width ``width``.

    Raises ``ValueError`` when ``width`` is narrower than the state's."""
    old = base_width(state)
    if width < old:
        raise ValueError(f"cannot narrow a width-{old} U-Net to {width}")
    gen = torch.Generator().manual_seed(seed)
    # new channel j of level l copies old channel maps[l][j]
    maps = []
    for level in range(N_LAYERS):
        w, big = old * 2**level, width * 2**level
        maps.append(torch.cat([torch.arange(w), torch.randint(0, w, (big - w,), generator=gen)]))

    def split(weight: torch.Tensor, dim: int, mapping: torch.Tensor) -> torch.Tensor:
        """Input channels along ``dim`` widened by ``mapping``; the copies of one old channel
        get random shares of its weight that sum to it."""
        wide = weight.index_select(dim, mapping)
        share = torch.empty(wide.shape, dtype=weight.dtype).uniform_(0.5, 1.5, generator=gen)
        total = torch.zeros(weight.shape, dtype=weight.dtype).index_add_(dim, mapping, share)
        return wide * share / total.index_select(dim, mapping)

    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        part, layer, _, name = key.split(".")  # e.g. encoder.3.1.running_mean
        layer = int(layer)
        # the output width level of this layer, and the mapping(s) of its input channels
        if part == "encoder":
            level = layer
            inputs = [maps[layer - 1]] if layer > 0 else []
        else:
            level = N_LAYERS - 2 - layer  # -1: the last layer, one mask channel
            below = maps[N_LAYERS - 1 - layer]  # previous decoder output and skip share a level
            inputs = [below] if layer == 0 else [below, below + old * 2 ** (N_LAYERS - 1 - layer)]
        out_map = maps[level] if level >= 0 else None
        if value.ndim == 0:  # num_batches_tracked
            out[key] = value.clone()
            continue
        if value.ndim == 4:  # Conv2d (out, in, ...) / ConvTranspose2d (in, out, ...)
            out_dim, in_dim = (0, 1) if part == "encoder" else (1, 0)
            if inputs:
                value = split(value, in_dim, torch.cat(inputs))
        else:
            out_dim = 0
        out[key] = value.index_select(out_dim, out_map) if out_map is not None else value.clone()
    return out
