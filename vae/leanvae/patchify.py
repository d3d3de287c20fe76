"""Wavelet patchifier: Haar sub-bands -> non-overlapping patch tokens, split into low (LC) and high (HC) bands.

A token covers 4x8x8 pixels of video (one 2x4x4 patch of 3-D Haar coefficients) or 1x8x8 pixels of the
first frame (one 4x4 patch of its 2-D Haar coefficients). Frame 0's token sits at time index 0. Both maps are
linear and per patch, so a chunk of whole groups of frames is tokenised independently of its neighbours.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from einops import rearrange

from ..haar import haar2d, haar3d, ihaar2d, ihaar3d

PATCH_T, PATCH_S = 2, 4  # patch size over the Haar coefficient grid (time, space)
COLOURS = 3


def _widths(bands: int, patch_t: int) -> tuple[int, int]:
    """Input widths of the LC (band 0) and HC (the other bands) maps for one patch."""
    per_band = COLOURS * patch_t * PATCH_S * PATCH_S
    return per_band, (bands - 1) * per_band


IMAGE_WIDTHS = _widths(4, 1)  # (48, 144)
VIDEO_WIDTHS = _widths(8, PATCH_T)  # (96, 672)


def _image_patches(bands: torch.Tensor) -> torch.Tensor:
    """(B, n, 3, H/2, W/2) -> (B, 1, H/8, W/8, n*3*16)."""
    return rearrange(bands, "b n c (h p) (w q) -> b 1 h w (n c p q)", p=PATCH_S, q=PATCH_S)


def _video_patches(bands: torch.Tensor) -> torch.Tensor:
    """(B, n, 3, T/2, H/2, W/2) -> (B, T/4, H/8, W/8, n*3*32)."""
    return rearrange(bands, "b n c (t r) (h p) (w q) -> b t h w (n c r p q)", r=PATCH_T, p=PATCH_S, q=PATCH_S)


class WaveletPatchEmbed(nn.Module):
    def __init__(self, lc_dim: int, hc_dim: int):
        super().__init__()
        self.image_lc = nn.Linear(IMAGE_WIDTHS[0], lc_dim)
        self.image_hc = nn.Linear(IMAGE_WIDTHS[1], hc_dim)
        self.video_lc = nn.Linear(VIDEO_WIDTHS[0], lc_dim)
        self.video_hc = nn.Linear(VIDEO_WIDTHS[1], hc_dim)

    def forward(self, x: torch.Tensor, first: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels (B, 3, T, H, W) -> LC tokens (B, t, H/8, W/8, lc_dim) and HC tokens (.., hc_dim).

        `first`: the chunk starts at frame 0, which is coded alone; T is then 1 + 4k, otherwise 4k.
        """
        lc, hc = [], []
        if first:
            bands = haar2d(x[:, :, 0])  # (B, 4, 3, H/2, W/2)
            lc.append(self.image_lc(_image_patches(bands[:, :1])))  # (B, 1, h, w, lc_dim)
            hc.append(self.image_hc(_image_patches(bands[:, 1:])))  # (B, 1, h, w, hc_dim)
            x = x[:, :, 1:]
        if x.shape[2]:
            bands = haar3d(x)  # (B, 8, 3, T/2, H/2, W/2)
            lc.append(self.video_lc(_video_patches(bands[:, :1])))  # (B, T/4, h, w, lc_dim)
            hc.append(self.video_hc(_video_patches(bands[:, 1:])))  # (B, T/4, h, w, hc_dim)
        return torch.cat(lc, dim=1), torch.cat(hc, dim=1)


class WaveletPatchUnembed(nn.Module):
    def __init__(self, lc_dim: int, hc_dim: int):
        super().__init__()
        self.image_lc = nn.Linear(lc_dim, IMAGE_WIDTHS[0])
        self.image_hc = nn.Linear(hc_dim, IMAGE_WIDTHS[1])
        self.video_lc = nn.Linear(lc_dim, VIDEO_WIDTHS[0])
        self.video_hc = nn.Linear(hc_dim, VIDEO_WIDTHS[1])

    def forward(self, lc: torch.Tensor, hc: torch.Tensor, first: bool) -> torch.Tensor:
        """LC (B, t, h, w, lc_dim) and HC tokens -> pixels (B, 3, T, 8h, 8w); T = 1 + 4(t-1) if `first` else 4t."""
        frames = []
        if first:
            coeffs = torch.cat([self.image_lc(lc[:, :1]), self.image_hc(hc[:, :1])], dim=-1)  # (B, 1, h, w, 192)
            bands = rearrange(coeffs, "b 1 h w (n c p q) -> b n c (h p) (w q)", c=COLOURS, p=PATCH_S, q=PATCH_S)
            frames.append(ihaar2d(bands).unsqueeze(2))  # (B, 3, 1, H, W)
            lc, hc = lc[:, 1:], hc[:, 1:]
        if lc.shape[1]:
            coeffs = torch.cat([self.video_lc(lc), self.video_hc(hc)], dim=-1)  # (B, t, h, w, 768)
            bands = rearrange(
                coeffs, "b t h w (n c r p q) -> b n c (t r) (h p) (w q)", c=COLOURS, r=PATCH_T, p=PATCH_S, q=PATCH_S
            )
            frames.append(ihaar3d(bands))  # (B, 3, 4t, H, W)
        return torch.cat(frames, dim=2)
