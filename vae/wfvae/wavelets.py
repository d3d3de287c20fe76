"""WF-VAE's Haar transforms: a causal 3-D one over time and space, a per-frame 2-D one, and their inverses.

Coefficients are band-major, channel = band * C + colour, bands in (time, height, width) bit order: LLL, LLH,
LHL, LHH, HLL, ... (`[:, :3]` is the lowest band of an RGB input). The 3-D transform pairs frame 0 with a copy
of itself and then frames (1, 2), (3, 4), ...: T = 1 + 2m frames give 1 + m, frame 0 alone gives 1; its inverse
drops the copy again. The 3-D filters are +-`constant` (1 / (2 sqrt 2), orthonormal, by default; the released
weights carry 0.3536, which scales every round trip by 1.000264). The module and buffer names are the released
checkpoint's, so its state dict loads as is.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..causal import Cache

BANDS_3D = ("h", "g", "hh", "gh", "h_v", "g_v", "hh_v", "gh_v")  # (t, h, w) high bits 000, 001, 010, ... 111
BANDS_2D = ("aa", "ad", "da", "dd")  # LL, high in height, high in width, both
EXACT_CONSTANT = 1 / (2 * math.sqrt(2))


def haar_filters(dims: int, constant: float) -> torch.Tensor:
    """(2^dims, 1, 1, 2, ..., 2): one conv weight per band; band k has sign -1 where a high bit of k meets
    offset 1 along that axis."""
    filters = []
    for bits in itertools.product((0, 1), repeat=dims):
        signs = [math.prod(-1.0 if b and o else 1.0 for b, o in zip(bits, offsets))
                 for offsets in itertools.product((0, 1), repeat=dims)]
        filters.append(torch.tensor(signs).view((1, 1) + (2,) * dims) * constant)
    return torch.stack(filters)  # (2^dims, 1, 1, 2, ...)


def _band_major(coeffs: torch.Tensor, batch: int) -> torch.Tensor:
    """(B*C, K, ...) per-channel bands -> (B, K*C, ...), channel = band * C + colour."""
    bc, k = coeffs.shape[:2]
    return coeffs.view(batch, bc // batch, k, *coeffs.shape[2:]).transpose(1, 2).reshape(batch, -1, *coeffs.shape[2:])


def _per_channel(coeffs: torch.Tensor, bands: int) -> torch.Tensor:
    """(B, K*C, ...) -> (B*C, K, ...)."""
    b, kc = coeffs.shape[:2]
    return coeffs.view(b, bands, kc // bands, *coeffs.shape[2:]).transpose(1, 2).reshape(-1, bands, *coeffs.shape[2:])


class _Filter(nn.Module):
    """Holds one frozen 3-D Haar filter as `conv.weight` (the released checkpoint's key layout)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.conv = nn.Conv3d(1, 1, 2, stride=2, bias=False)
        self.conv.weight.data.copy_(weight)
        self.conv.requires_grad_(False)


class HaarWaveletTransform3D(nn.Module):
    """(B, C, 1 + 2m, H, W) -> (B, 8C, 1 + m, H/2, W/2); chunks after the first hold whole frame pairs."""

    def __init__(self, constant: float = EXACT_CONSTANT):
        super().__init__()
        for name, weight in zip(BANDS_3D, haar_filters(3, constant)):
            setattr(self, f"{name}_conv", _Filter(weight))

    def forward(self, x: torch.Tensor, cache: Cache = None) -> torch.Tensor:
        if cache is None or self not in cache:  # the video's start: frame 0 is paired with itself
            x = torch.cat([x[:, :, :1], x], dim=2)
            if cache is not None:
                cache[self] = True
        weight = torch.cat([getattr(self, f"{name}_conv").conv.weight for name in BANDS_3D])  # (8, 1, 2, 2, 2)
        b, c = x.shape[:2]
        coeffs = F.conv3d(x.reshape(b * c, 1, *x.shape[2:]), weight, stride=2)  # (B*C, 8, t, h, w)
        return _band_major(coeffs, b)


class InverseHaarWaveletTransform3D(nn.Module):
    """(B, 8C, 1 + m, h, w) -> (B, C, 1 + 2m, 2h, 2w): the first coefficient frame's copy of frame 0 is dropped."""

    def __init__(self, constant: float = EXACT_CONSTANT):
        super().__init__()
        for name, weight in zip(BANDS_3D, haar_filters(3, constant)):
            self.register_buffer(name, weight.clone())  # its own storage: safetensors refuses shared ones

    def forward(self, coeffs: torch.Tensor, cache: Cache = None) -> torch.Tensor:
        first = cache is None or self not in cache
        if cache is not None:
            cache[self] = True
        weight = torch.cat([getattr(self, name) for name in BANDS_3D])  # (8, 1, 2, 2, 2)
        b = coeffs.shape[0]
        frames = F.conv_transpose3d(_per_channel(coeffs, 8), weight, stride=2)  # (B*C, 1, 2t, 2h, 2w)
        frames = frames.view(b, -1, *frames.shape[2:])  # (B, C, 2t, 2h, 2w)
        return frames[:, :, 1:] if first else frames


class HaarWaveletTransform2D(nn.Module):
    """Per frame: (B, C, T, H, W) -> (B, 4C, T, H/2, W/2), orthonormal (filters +-1/2)."""

    def __init__(self):
        super().__init__()
        for name, weight in zip(BANDS_2D, _filters_2d()):
            self.register_buffer(name, weight.clone())  # its own storage: safetensors refuses shared ones

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        weight = torch.cat([getattr(self, name) for name in BANDS_2D])  # (4, 1, 2, 2)
        frames = x.transpose(1, 2).reshape(b * t * c, 1, h, w)  # (B*T*C, 1, H, W)
        coeffs = F.conv2d(frames, weight, stride=2).view(b, t, c, 4, h // 2, w // 2)
        return coeffs.permute(0, 3, 2, 1, 4, 5).reshape(b, 4 * c, t, h // 2, w // 2)


class InverseHaarWaveletTransform2D(nn.Module):
    """Per frame: (B, 4C, T, h, w) -> (B, C, T, 2h, 2w)."""

    def __init__(self):
        super().__init__()
        for name, weight in zip(BANDS_2D, _filters_2d()):
            self.register_buffer(name, weight.clone())  # its own storage: safetensors refuses shared ones

    def forward(self, coeffs: torch.Tensor) -> torch.Tensor:
        b, kc, t, h, w = coeffs.shape
        weight = torch.cat([getattr(self, name) for name in BANDS_2D])  # (4, 1, 2, 2)
        bands = coeffs.view(b, 4, kc // 4, t, h, w).permute(0, 3, 2, 1, 4, 5).reshape(-1, 4, h, w)  # (B*T*C, 4, h, w)
        frames = F.conv_transpose2d(bands, weight, stride=2)  # (B*T*C, 1, 2h, 2w)
        return frames.view(b, t, kc // 4, 2 * h, 2 * w).transpose(1, 2)  # (B, C, T, 2h, 2w)


def _filters_2d() -> torch.Tensor:
    # The released order: LL, then high in height (rows differ), then high in width, then both.
    ll_hw = haar_filters(2, 0.5)  # bands in (h, w) bit order: LL, LH (width), HL (height), HH
    return ll_hw[[0, 2, 1, 3]]  # (4, 1, 1, 2, 2)
