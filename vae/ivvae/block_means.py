"""How an IV-VAE built from scratch starts: as the 4x8x8 block-mean autoencoder (the baseline of
`bench/vae_recon.py`), which training then only has to improve on.

At initialisation every residual branch and attention output is zero, so each network is the chain of its
shortcuts and resamplers: linear, but for the RMS norm + SiLU in front of each head. Three channels of that chain
per half are wired to carry the input's block means:

- encoder: `conv1` copies RGB into both halves; the stride-2 resamplers take 2x2 means, the temporal half's
  time convolutions means of frame pairs (frame 0 is never resampled in time), the keyframe half keeps each
  group's first frame. So the keyframe latent gets the keyframe's 8x8 block means and the temporal latent its
  group's 4x8x8 block means (frame 0's 1x8x8 in both);
- the last such layer before the head also writes the means negated and a constant `anchor` channel: RMS(.)
  is then nearly the anchor's alone and silu(a) - silu(-a) = a, so the norm + SiLU pass the means linearly
  (within ~1%) while every other feature stays alive at 1 / `anchor` of its scale;
- decoder: the same chain backwards (nearest up-sampling, frame repetition and channel-to-time copies), the head
  turning the pair back into RGB: every frame decodes to its block's mean.

Widths below three channels (ivvae-tiny) cannot carry RGB: such a model keeps the plain unit-scale start.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..init import kernel_centre, route_
from .blocks import Resample, ResidualBlock
from .layers import FrameConv, KTCConv

RGB = torch.arange(3)
PAIRED = torch.arange(7)  # the means, the means negated, the anchor
DOWN_TAPS = [(0, 0), (0, 1), (1, 0), (1, 1)]  # a stride-2 3x3 kernel over the block it lands on: its 2x2 mean


@torch.no_grad()
def start_as_block_means(model, scale: float = 2.0, anchor: float = 4.0) -> None:
    """Wire `model` (an IVVAE or IVImageVAE just initialised) as the block-mean autoencoder: latent channels 0-2
    of each half = `scale` x the block means. `anchor` is the constant channel's RMS share (x sqrt(width))."""
    cfg, halves = model.config, (2 if model.temporal else 1)
    z = cfg.z_dim // halves
    if z < len(RGB) or cfg.dim * min(cfg.dim_mult) < len(PAIRED):  # every width on the path is at least half that
        return
    enc, dec = model.encoder, model.decoder
    _route(_halves(enc.conv1, halves, split_input=False), RGB)
    width = _chain([*enc.downsamples, *enc.middle], halves, anchor)
    head = enc.head[-1]
    _read_pair(_halves(head.PAC_0, halves), 1.0)
    grouped = [(head.PAC_conv.conv, h * 2 * z, h * 6 * 2 * z) for h in range(halves)]  # PAC_0's outputs lead each half
    _route(grouped, RGB)
    means = [(conv, 0, h * 2 * z) for h, conv in enumerate(_convs(model.conv1))]  # rows [means | log-variances]
    _route(means, RGB, scale * _norm_scale(anchor, width))

    _route(_halves(model.conv2, halves), RGB, 1 / scale)  # the chain carries the means at unit scale
    _route(_halves(dec.conv1, halves), RGB)
    width = _chain([*dec.middle, *dec.upsamples], halves, anchor)
    _read_pair(_halves(dec.head[-1], halves), _norm_scale(anchor, width))


def _chain(layers: list[nn.Module], halves: int, anchor: float) -> int:
    """Route RGB through the shortcuts and resamplers of `layers`; the last of them also writes the pair and the
    anchor. Returns the width per half that the head's norm sees."""
    weighted = [layer for layer in layers if isinstance(layer, Resample) or
                (isinstance(layer, ResidualBlock) and not isinstance(layer.shortcut, nn.Identity))]
    for layer in weighted[:-1]:
        _resample(layer, halves) if isinstance(layer, Resample) else _route(_halves(layer.shortcut, halves), RGB)
    last = weighted[-1]
    if isinstance(last, Resample):
        return _resample(last, halves, anchor)
    targets = _halves(last.shortcut, halves)
    _route(targets, RGB)
    return _write_pair(targets, anchor)


def _resample(layer: Resample, halves: int, anchor: float | None = None) -> int:
    """2x2 means (down) or copies (up) in space, pair means (down) or copies (up) in time. Returns the width."""
    spatial = [(seq[1], 0, 0) for seq in (layer.resample_2d, layer.resample_3d)[:halves]]
    _route(spatial, RGB, 1 / len(DOWN_TAPS), DOWN_TAPS) if layer.mode.startswith("down") else _route(spatial, RGB)
    live = RGB
    if anchor is not None:
        _write_pair(spatial, anchor)
        live = PAIRED
    if layer.time_conv is not None and layer.mode == "down3d":
        route_(layer.time_conv, live, live, 0.5, [(0, 0, 0), (1, 0, 0)])
        if anchor is not None:  # the other features must not read the anchor: they would swamp the norm
            layer.time_conv.weight[len(PAIRED):, 6] = 0
    elif layer.time_conv is not None:  # channels -> two frames
        route_(layer.time_conv, torch.cat([live, layer.channels + live]), torch.cat([live, live]), 1.0)
    return spatial[0][0].out_channels


def _halves(layer: KTCConv | FrameConv, halves: int, split_input: bool = True) -> list[tuple[nn.Module, int, int]]:
    """The convolutions writing each half of `layer`'s output: (convolution, first row, first input column).
    `split_input=False`: the input has no halves (RGB)."""
    if isinstance(layer, KTCConv):  # conv_2d writes the keyframe half, conv_3d the temporal; both read everything
        width = layer.conv_2d.in_channels // halves if split_input else 0
        return [(conv, 0, h * width) for h, conv in enumerate(_convs(layer))]
    conv = layer.conv  # a FrameConv: one convolution over both halves
    rows, columns = conv.out_channels // halves, conv.in_channels // halves
    return [(conv, h * rows, h * columns) for h in range(halves)]


def _convs(layer: KTCConv) -> list[nn.Module]:
    return [conv for conv in (layer.conv_2d, layer.conv_3d) if conv is not None]


def _route(targets, channels: torch.Tensor, value: float = 1.0, taps=None) -> None:
    for conv, row, column in targets:
        route_(conv, row + channels, column + channels, value, taps)


def _write_pair(targets, anchor: float) -> int:
    """Rows 3-5 of each half write the negated means, row 6 the constant anchor x sqrt(width). Returns the width."""
    for conv, row, _ in targets:
        width = conv.out_channels // sum(other is conv for other, _, _ in targets)  # halves sharing a convolution
        conv.weight[row + 3 + RGB] = -conv.weight[row + RGB]
        conv.weight[row + 6] = 0
        conv.bias[row + 3 + RGB] = -conv.bias[row + RGB]
        conv.bias[row + 6] = anchor * math.sqrt(width)
    return width


def _read_pair(targets, value: float) -> None:
    """Each half's rows 0-2 read pair channel c minus its negation 3 + c: silu(a) - silu(-a) = a."""
    _route(targets, RGB, value)
    for conv, row, column in targets:
        conv.weight[(row + RGB, column + 3 + RGB, *kernel_centre(conv))] = -value


def _norm_scale(anchor: float, width: int) -> float:
    """What the RMS norm divides the pair by: the RMS over `width` channels, nearly the anchor's, with the other
    features at about unit scale."""
    return math.sqrt(anchor**2 + (width - len(PAIRED)) / width)
