"""WF-VAE's encoder: the input's 3-D Haar sub-bands through a per-frame stage and a causal stage that halves time
and space, with the two energy-flow sub-bands joined in at matching depths."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..causal import Cache
from .blocks import (CachedConv3d, CachedSequential, Downsample, FrameAttention, FrameConv2d, ResnetBlock2D,
                     ResnetBlock3D, Spatial2xTime2x3DDownsample, make_norm)
from .wavelets import HaarWaveletTransform2D, HaarWaveletTransform3D


class Encoder(nn.Module):
    def __init__(self, latent_dim: int, base: int, num_resblocks: int, flow: int, norm_type: str, dropout: float,
                 use_attention: bool, haar_constant: float):
        super().__init__()
        self.down1 = CachedSequential(FrameConv2d(24, base, 3, padding=1),
                                      *[ResnetBlock2D(base, base, norm_type, dropout) for _ in range(num_resblocks)],
                                      Downsample(base, base))
        self.down2 = CachedSequential(FrameConv2d(base + flow, 2 * base, 3, padding=1),
                                      *[ResnetBlock3D(2 * base, 2 * base, norm_type, dropout) for _ in range(num_resblocks)],
                                      Spatial2xTime2x3DDownsample(2 * base, 2 * base))
        self.connect_l1 = FrameConv2d(12, flow, 3, padding=1)
        self.connect_l2 = FrameConv2d(24, flow, 3, padding=1)
        mid = [ResnetBlock3D(2 * base + flow, 4 * base, norm_type, dropout),
               ResnetBlock3D(4 * base, 4 * base, norm_type, dropout)]
        if use_attention:
            mid.insert(1, FrameAttention(4 * base, norm_type))
        self.mid = CachedSequential(*mid)
        self.norm_out = make_norm(4 * base, norm_type)
        self.conv_out = CachedConv3d(4 * base, 2 * latent_dim, 3)
        self.wavelet_transform_in = HaarWaveletTransform3D(haar_constant)
        self.wavelet_transform_l1 = HaarWaveletTransform2D()
        self.wavelet_transform_l2 = HaarWaveletTransform3D(haar_constant)

    def forward(self, x: torch.Tensor, cache: Cache = None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Pixels (B, 3, T, H, W) -> posterior parameters (B, 2d, T', H/8, W/8) and the energy-flow sub-bands
        W2 (B, 12, t, H/4, W/4) and W3 (B, 24, T', H/8, W/8) (the WL loss compares them with the decoder's)."""
        coeffs = self.wavelet_transform_in(x, cache)  # (B, 24, t, H/2, W/2)
        l1_coeffs = self.wavelet_transform_l1(coeffs[:, :3])  # (B, 12, t, H/4, W/4)
        l2_coeffs = self.wavelet_transform_l2(l1_coeffs[:, :3], cache)  # (B, 24, T', H/8, W/8)
        h = torch.cat([self.down1(coeffs, cache), self.connect_l1(l1_coeffs)], dim=1)  # (B, base + flow, t, ...)
        h = torch.cat([self.down2(h, cache), self.connect_l2(l2_coeffs)], dim=1)  # (B, 2 base + flow, T', ...)
        h = self.conv_out(F.silu(self.norm_out(self.mid(h, cache))), cache)  # (B, 2d, T', H/8, W/8)
        return h, (l1_coeffs, l2_coeffs)
