"""WF-VAE's decoder: the mirror of the encoder, predicting the energy-flow sub-bands and adding their inverse
transforms back into the shallower levels (paper eq. 2-3)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..causal import Cache
from .blocks import (CachedConv3d, CachedSequential, FrameAttention, FrameConv2d, ResnetBlock3D,
                     Spatial2xTime2x3DUpsample, Upsample, make_norm)
from .wavelets import InverseHaarWaveletTransform2D, InverseHaarWaveletTransform3D


class Decoder(nn.Module):
    def __init__(self, latent_dim: int, base: int, num_resblocks: int, flow: int, norm_type: str, dropout: float,
                 use_attention: bool, t_interpolation: str, connect_layers: int, haar_constant: float):
        super().__init__()
        self.flow = flow
        self.conv_in = CachedConv3d(latent_dim, 4 * base, 3)
        mid = [ResnetBlock3D(4 * base, 4 * base, norm_type, dropout),
               ResnetBlock3D(4 * base, 4 * base + flow, norm_type, dropout)]
        if use_attention:
            mid.insert(1, FrameAttention(4 * base, norm_type))
        self.mid = CachedSequential(*mid)
        self.up2 = CachedSequential(*[ResnetBlock3D(4 * base, 4 * base, norm_type, dropout) for _ in range(num_resblocks)],
                                    Spatial2xTime2x3DUpsample(4 * base, 4 * base, t_interpolation),
                                    ResnetBlock3D(4 * base, 4 * base + flow, norm_type, dropout))
        self.up1 = CachedSequential(*[ResnetBlock3D(4 * base if i == 0 else 2 * base, 2 * base, norm_type, dropout)
                                      for i in range(num_resblocks)],
                                    Upsample(2 * base, 2 * base), ResnetBlock3D(2 * base, 2 * base, norm_type, dropout))
        self.layer = CachedSequential(ResnetBlock3D(2 * base, base, norm_type, dropout),
                                      ResnetBlock3D(base, base, norm_type, dropout))
        self.connect_l1 = CachedSequential(*[ResnetBlock3D(flow, flow, norm_type, dropout) for _ in range(connect_layers)],
                                           FrameConv2d(flow, 12, 3, padding=1))
        self.connect_l2 = CachedSequential(*[ResnetBlock3D(flow, flow, norm_type, dropout) for _ in range(connect_layers)],
                                           FrameConv2d(flow, 24, 3, padding=1))
        self.norm_out = make_norm(base, norm_type)
        self.conv_out = FrameConv2d(base, 24, 3, padding=1)
        self.inverse_wavelet_transform_out = InverseHaarWaveletTransform3D(haar_constant)
        self.inverse_wavelet_transform_l1 = InverseHaarWaveletTransform2D()
        self.inverse_wavelet_transform_l2 = InverseHaarWaveletTransform3D(haar_constant)

    def forward(self, z: torch.Tensor, cache: Cache = None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Latents (B, d, T', h, w) -> pixels (B, 3, T, 8h, 8w) and the predicted sub-bands W2 (after adding the
        deeper flow's reconstruction) and W3. Chunked, the output is one mid-rate frame behind (see the upsampler)."""
        f = self.flow
        h = self.mid(self.conv_in(z, cache), cache)  # (B, 4 base + flow, T', h, w)
        l2_coeffs = self.connect_l2(h[:, -f:], cache)  # (B, 24, T', h, w)
        l2 = self.inverse_wavelet_transform_l2(l2_coeffs, cache)  # (B, 3, t, 2h, 2w)
        h = self.up2(h[:, :-f], cache)  # (B, 4 base + flow, t, 2h, 2w), one frame behind l2 when chunked
        l1_coeffs = self.connect_l1(h[:, -f:], cache)  # (B, 12, t, 2h, 2w)
        l1_coeffs = torch.cat([l1_coeffs[:, :3] + self._aligned(l2, l1_coeffs.shape[2], cache), l1_coeffs[:, 3:]], 1)
        l1 = self.inverse_wavelet_transform_l1(l1_coeffs)  # (B, 3, t, 4h, 4w)
        h = self.layer(self.up1(h[:, :-f], cache), cache)  # (B, base, t, 4h, 4w)
        h = self.conv_out(F.silu(self.norm_out(h)))  # (B, 24, t, 4h, 4w)
        h = torch.cat([h[:, :3] + l1, h[:, 3:]], dim=1)
        return self.inverse_wavelet_transform_out(h, cache), (l1_coeffs, l2_coeffs)  # (B, 3, T, 8h, 8w)

    def _aligned(self, l2: torch.Tensor, frames: int, cache: Cache) -> torch.Tensor:
        """The first `frames` of the deeper flow's frames, keeping the rest for the next chunk."""
        if cache is None:
            return l2
        pending = torch.cat([cache.pop(self, l2[:, :, :0]), l2], dim=2)
        cache[self] = pending[:, :, frames:]
        return pending[:, :, :frames]
