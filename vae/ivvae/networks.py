"""IV-VAE's encoder and decoder. Widths are per half (dim 64: 64 / 128 / 256 / 256 going down). Time is halved
at the ends of stages 1 and 2 and doubled at the ends of decoder stages 0 and 1, so the groups of the group causal
convolutions are one latent frame's worth of frames at every depth: 4, then 2, then per-frame layers."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ..causal import Cache
from .blocks import Resample, ResidualBlock, ResidualBlock2d
from .layers import PAC, KTCConv, FrameConv, Layer, SplitAttention, SiLUDone, SplitNormSiLU, channels_last, run


def _run_all(layers: nn.Sequential, x: torch.Tensor, cache: Cache, first: bool) -> torch.Tensor:
    for layer in layers:
        x = run(layer, x, cache, first)
    return x


class Encoder(Layer):
    """Pixels (B, 3, 1 + 4k, H, W) -> both halves' posterior parameters (B, halves * 2z, 1 + k, H/8, W/8)."""

    def __init__(self, dim: int, z: int, dim_mult: Sequence[int], num_res_blocks: int, dropout: float,
                 temporal: bool):
        super().__init__()
        dims = [dim * m for m in (1, *dim_mult)]
        self.conv1 = KTCConv(3, dims[0], dims[0] if temporal else 0, 3, group=4)
        layers = []
        for stage, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(num_res_blocks):
                if stage < 3:
                    layers.append(ResidualBlock(in_dim, out_dim, 2 if stage == 2 else 4, dropout, temporal))
                else:
                    layers += [ResidualBlock2d(in_dim, out_dim, dropout, temporal), SplitAttention(out_dim, temporal)]
                in_dim = out_dim
            if stage < 3:
                layers.append(Resample(out_dim, "down2d" if stage == 0 else "down3d", temporal))
            if stage == 2:
                layers.append(SplitAttention(out_dim, temporal))
        self.downsamples = nn.Sequential(*layers)
        self.middle = nn.Sequential(ResidualBlock2d(out_dim, out_dim, dropout, temporal),
                                    SplitAttention(out_dim, temporal), ResidualBlock2d(out_dim, out_dim, dropout, temporal))
        self.head = nn.Sequential(SplitNormSiLU(out_dim, temporal), SiLUDone(), PAC(out_dim, 2 * z, temporal))

    def forward(self, x: torch.Tensor, cache: Cache = None, first: bool = True) -> torch.Tensor:
        x = self.conv1(channels_last(x), cache, first)  # (B, 2 dim, T, H, W)
        x = _run_all(self.downsamples, x, cache, first)  # (B, 2 * 4 dim, T', H/8, W/8)
        return _run_all(self.head, _run_all(self.middle, x, cache, first), cache, first)


class Decoder(Layer):
    """Latent halves (B, halves * z, 1 + k, h, w) -> RGB of each half (B, halves * 3, 1 + 4k, 8h, 8w)."""

    def __init__(self, dim: int, z: int, dim_mult: Sequence[int], num_res_blocks: int, dropout: float,
                 temporal: bool):
        super().__init__()
        halves = 2 if temporal else 1
        dims = [dim * m for m in (dim_mult[-1], *reversed(dim_mult))]
        self.conv1 = FrameConv(halves * z, halves * dims[0], 3)
        self.middle = nn.Sequential(ResidualBlock2d(dims[0], dims[0], dropout, temporal),
                                    SplitAttention(dims[0], temporal), ResidualBlock2d(dims[0], dims[0], dropout, temporal))
        layers = []
        for stage, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            in_dim = in_dim // 2 if stage else in_dim  # each up-sampler halved the width
            for _ in range(num_res_blocks + 1):
                if stage == 0:
                    layers += [ResidualBlock2d(in_dim, out_dim, dropout, temporal), SplitAttention(out_dim, temporal)]
                else:
                    layers.append(ResidualBlock(in_dim, out_dim, 2 if stage == 1 else 4, dropout, temporal))
                in_dim = out_dim
            if stage < 3:
                layers.append(Resample(out_dim, "up3d" if stage < 2 else "up2d", temporal))
        self.upsamples = nn.Sequential(*layers)
        self.head = nn.Sequential(SplitNormSiLU(out_dim, temporal), SiLUDone(),
                                  KTCConv(halves * out_dim, 3, 3 if temporal else 0, 3, group=4))

    def forward(self, x: torch.Tensor, cache: Cache = None, first: bool = True) -> torch.Tensor:
        x = _run_all(self.middle, self.conv1(channels_last(x)), cache, first)  # (B, 2 * 4 dim, T', h, w)
        x = _run_all(self.upsamples, x, cache, first)  # (B, 2 dim, T, H, W)
        rgb = _run_all(self.head, x, cache, first)
        if rgb.requires_grad:
            rgb.register_hook(channels_last)
        return rgb
