"""The U-Net of Jansson et al., "Singing Voice Separation with Deep U-Net Convolutional
Networks" (ISMIR 2017).

Encoder: six Conv2d 5x5 stride 2 (16, 32, 64, 128, 256, 512 channels at the paper width),
each batch-normed with leaky ReLU 0.2.  Decoder: six ConvTranspose2d 5x5 stride 2 back to one
channel, batch norm and ReLU (sigmoid on the last, giving the mask), 50 % dropout after the
first three, each fed the concatenation of the previous decoder output and the matching
encoder output.  The output of :class:`UNet` is the soft mask; the vocal estimate is
``mask * magnitude`` and the paper's loss is L1 between that and the true vocal magnitude
(:func:`l1_loss`).

``causal=True`` makes the network causal in time (not in frequency): the encoder pads only
the past (4 columns on the left), the decoder's transposed convolutions drop the columns
they would add on the right, so mask column ``t`` depends on input columns ``<= t`` alone
(encoder column ``i`` of level ``l`` sees input ``<= 2**l * i``; every decoder output ``o``
reads only coarse columns ``i`` with ``2 i <= o``).  A live stream uses the newest columns of
its window, which in the symmetric network sit at the zero-padded edge and are a small part
of what the loss trains; in the causal one every column of every patch is such a column, so
the whole patch trains what the stream uses.  The per-patch peak normalisation still reads
the whole patch: the stream's newest columns see exactly that window.

This module imports torch; inference without torch goes through the ONNX backend.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

N_LAYERS = 6
PAPER_BASE_CHANNELS = 16


class UNet(nn.Module):
    """Mask estimator.

    Args:
        base_channels: channels of the first encoder layer (16 in the paper); layer ``i``
            has ``base_channels * 2**i``.
        dropout: dropout probability after the first three decoder layers (0.5 in the paper).
        causal: time-causal convolutions (see the module doc); the same parameters either way.

    ``forward(magnitude)``: ``magnitude`` is ``(batch, 1, n_bins, n_frames)`` float32, linear
    STFT magnitude, ``n_bins`` and ``n_frames`` multiples of 64.  It is scaled by its own
    maximum per item (the paper's [0, 1] normalisation) before the network, so the mask does
    not depend on the input level.  Returns the mask, same shape, in [0, 1].
    """

    def __init__(self, base_channels: int = PAPER_BASE_CHANNELS, dropout: float = 0.5,
                 causal: bool = False) -> None:
        super().__init__()
        self.causal = causal
        # (freq, time) padding: causal layers pad time on the left only, outside the conv
        conv_pad = (2, 0) if causal else 2
        deconv_pad, deconv_extra = ((2, 0), (1, 0)) if causal else (2, 1)
        widths = [base_channels * 2**i for i in range(N_LAYERS)]
        self.encoder = nn.ModuleList()
        in_ch = 1
        for out_ch in widths:
            self.encoder.append(
                nn.Sequential(
                    nn.Conv2d(in_ch, out_ch, 5, stride=2, padding=conv_pad),
                    nn.BatchNorm2d(out_ch),
                    nn.LeakyReLU(0.2),
                )
            )
            in_ch = out_ch
        self.decoder = nn.ModuleList()
        # decoder i maps to the width of encoder N-2-i; its input is the previous decoder
        # output concatenated with encoder N-1-i (the first takes the bottleneck alone).
        for i in range(N_LAYERS):
            out_ch = widths[N_LAYERS - 2 - i] if i < N_LAYERS - 1 else 1
            layers: list[nn.Module] = [
                nn.ConvTranspose2d(in_ch, out_ch, 5, stride=2, padding=deconv_pad, output_padding=deconv_extra)
            ]
            if i < N_LAYERS - 1:
                layers += [nn.BatchNorm2d(out_ch), nn.ReLU()]
                if i < 3:
                    layers.append(nn.Dropout(dropout))
            else:
                layers.append(nn.Sigmoid())
            self.decoder.append(nn.Sequential(*layers))
            in_ch = 2 * out_ch

    def _encode(self, magnitude: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's outputs, first to last, of the peak-normalised input."""
        peak = torch.amax(magnitude, dim=(1, 2, 3), keepdim=True)
        return self._encode_scaled(magnitude / (peak + 1e-8))

    def _encode_scaled(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's outputs, first to last, of an already normalised input."""
        skips = []
        for layer in self.encoder:
            # causal: 4 columns of the past on the left, none on the right
            x = layer(F.pad(x, (4, 0)) if self.causal else x)
            skips.append(x)
        return skips

    def forward(self, magnitude: torch.Tensor) -> torch.Tensor:
        return self._decode(self._encode(magnitude))

    def forward_scaled(self, x: torch.Tensor) -> torch.Tensor:
        """The mask of an input already normalised (e.g. by :func:`sliding_peak_normalise`,
        the stateful stream's causal normalisation): ``forward`` without its patch peak."""
        return self._decode(self._encode_scaled(x))

    def _decode(self, skips: list[torch.Tensor]) -> torch.Tensor:
        x = skips[-1]
        for i, layer in enumerate(self.decoder):
            if i > 0:
                x = torch.cat([x, skips[-1 - i]], dim=1)
            frames = x.shape[-1]
            for j, sub in enumerate(layer):
                x = sub(x)
                if j == 0 and self.causal:  # 2 T + 3 columns: keep the 2 T that read nothing to their right
                    x = x[..., : 2 * frames]
        return x

    def newest(self, magnitude: torch.Tensor, n: int) -> torch.Tensor:
        """``forward(magnitude)[..., -n:]``, the newest ``n`` mask columns, computed without
        the rest of the decoder: a live stream uses only the newest columns, and the decoder
        is most of the network's compute.

        A transposed convolution (5 wide, stride 2) gives output column ``o`` from input
        columns ``i`` with ``o - 4 <= 2 i <= o + 2``, so the newest ``n`` outputs need only
        the newest ``ceil(n / 2) + 2`` inputs (and the same columns of the skip).  Each
        decoder layer runs on that many columns of its input and keeps the newest columns it
        owes the next; batch norm (eval) and the activations are per column.  The encoder
        runs whole.  The result equals the full forward's columns to float rounding (tested)."""
        if n >= magnitude.shape[-1]:
            return self(magnitude)[..., magnitude.shape[-1] - n:]
        skips = self._encode(magnitude)
        # reads[i]: the newest input columns decoder layer i needs for the columns it owes (the
        # last layer owes n, every other the columns the next one reads); layer i's input is as
        # wide as skip -1 - i
        reads, owed = [0] * N_LAYERS, n
        for i in range(N_LAYERS - 1, -1, -1):
            reads[i] = owed = min(-(-owed // 2) + 2, skips[-1 - i].shape[-1])
        x = skips[-1][..., skips[-1].shape[-1] - reads[0]:]
        for i, layer in enumerate(self.decoder):
            if i > 0:
                skip = skips[-1 - i]
                x = torch.cat([x, skip[..., skip.shape[-1] - reads[i]:]], dim=1)
            owes = reads[i + 1] if i + 1 < N_LAYERS else n
            # the columns that read every input they need
            x = layer[0](x)[..., 2 * reads[i] - owes : 2 * reads[i]]
            for sub in list(layer)[1:]:
                x = sub(x)
        return x


def sliding_peak_normalise(magnitude: torch.Tensor, frames: int) -> torch.Tensor:
    """Causal level normalisation: each column divided by the peak of the newest ``frames``
    columns up to it (itself included; columns before the signal count as silence), per
    batch item.  ``magnitude`` is ``(batch, 1, n_bins, n_frames)``; same shape out.

    The window form divides its whole window by the window's peak, so its newest column is
    divided by the peak of the newest ``context_frames`` columns: with ``frames`` equal to
    ``context_frames`` every column here gets exactly that divisor, which a stream can
    compute as the columns arrive (:class:`vocex.model.stateful.StatefulUNet`)."""
    column_peak = torch.amax(magnitude, dim=(1, 2))  # (batch, n_frames)
    padded = F.pad(column_peak, (frames - 1, 0))[:, None]
    peak = F.max_pool1d(padded, frames, 1)[:, 0]
    return magnitude / (peak[:, None, None, :] + 1e-8)


class UNetEnsemble(nn.Module):
    """The mean mask of several U-Nets that share a front end (widths and causality may
    differ).  A member with a smaller ``mask_delay`` than the ensemble's has its mask moved
    later by the difference, so every member's column ``t`` belongs to the same frame."""

    def __init__(self, members: list[UNet], delays: list[int]) -> None:
        super().__init__()
        if not members or len(members) != len(delays):
            raise ValueError("an ensemble needs one mask delay per member, and at least one member")
        self.members = nn.ModuleList(members)
        self.shifts = [max(delays) - d for d in delays]

    def forward(self, magnitude: torch.Tensor) -> torch.Tensor:
        total = torch.zeros_like(magnitude)
        for i, member in enumerate(self.members):
            mask = member(magnitude)
            shift = self.shifts[i]
            if shift > 0:
                mask = F.pad(mask[..., : mask.shape[-1] - shift], (shift, 0))
            total = total + mask
        return total / len(self.shifts)

    def newest(self, magnitude: torch.Tensor, n: int) -> torch.Tensor:
        """``forward(magnitude)[..., -n:]`` from each member's :meth:`UNet.newest`."""
        if n + max(self.shifts) > magnitude.shape[-1]:  # a member's columns would start before the window
            return self(magnitude)[..., magnitude.shape[-1] - n:]
        total = magnitude.new_zeros(magnitude.shape[:-1] + (n,))
        for i, member in enumerate(self.members):
            shift = self.shifts[i]
            total = total + member.newest(magnitude, n + shift)[..., :n]
        return total / len(self.shifts)


class NewestColumns(nn.Module):
    """``model.newest(magnitude, n)`` as a module, for export: the live path's graph."""

    def __init__(self, model: nn.Module, n: int) -> None:
        super().__init__()
        self.model, self.n = model, n

    def forward(self, magnitude: torch.Tensor) -> torch.Tensor:
        return self.model.newest(magnitude, self.n)


def delayed_l1(
    mask: torch.Tensor,
    mix_magnitude: torch.Tensor,
    vocal_magnitude: torch.Tensor,
    delay: int = 0,
    frame_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`l1_loss` with mask column ``t`` applied to frame ``t - delay`` (the first
    ``delay`` mask columns and the last ``delay`` frames drop out; ``frame_weights`` are over
    the frames)."""
    if not delay:
        return l1_loss(mask, mix_magnitude, vocal_magnitude, frame_weights)
    w = None if frame_weights is None else frame_weights[:-delay]
    return l1_loss(mask[..., delay:], mix_magnitude[..., :-delay], vocal_magnitude[..., :-delay], w)


def l1_loss(
    mask: torch.Tensor,
    mix_magnitude: torch.Tensor,
    vocal_magnitude: torch.Tensor,
    frame_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """The paper's loss: mean ``|mask * mix - vocals|``, all ``(batch, 1, n_bins, n_frames)``.

    ``frame_weights`` (``(n_frames,)``, optional) weights the time columns, e.g. towards the
    newest columns that the live path uses; it is normalised to mean 1.
    """
    err = torch.abs(mask * mix_magnitude - vocal_magnitude)
    if frame_weights is not None:
        err = err * (frame_weights / frame_weights.mean())
    return err.mean()
