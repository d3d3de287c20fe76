"""One-level orthonormal Haar transforms in 2-D (images) and 3-D (video), with their exact inverses.

Band 0 is always the lowest band (LL / LLL: the "low-frequency component", LC); the others are the
high-frequency components (HC). Orthonormality keeps energy equal in both domains, so the inverse is the
transpose and the round trip is exact up to float rounding.
"""

from __future__ import annotations

import itertools
import math

import torch


def _haar_matrix(dims: int) -> torch.Tensor:
    """(2^dims, 2^dims) orthonormal Haar analysis matrix; row k is band k, bits of k pick high/low per axis."""
    rows = []
    for bits in itertools.product((0, 1), repeat=dims):  # (0,..,0) first: the lowest band
        row = []
        for offsets in itertools.product((0, 1), repeat=dims):
            sign = 1.0
            for b, o in zip(bits, offsets):
                sign *= -1.0 if (b and o) else 1.0
            row.append(sign)
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64) / math.sqrt(2**dims)


_HAAR2 = _haar_matrix(2)  # (4, 4)
_HAAR3 = _haar_matrix(3)  # (8, 8)


def _matrix(m: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return m.to(device=like.device, dtype=like.dtype)


def haar2d(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4, C, H/2, W/2) with bands LL, LH, HL, HH."""
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"haar2d needs even height and width, got {h}x{w}")
    blocks = x.reshape(b, c, h // 2, 2, w // 2, 2)  # (B, C, H/2, dy, W/2, dx)
    blocks = blocks.permute(0, 1, 2, 4, 3, 5).reshape(b, c, h // 2, w // 2, 4)  # (B, C, H/2, W/2, 4)
    coeffs = blocks @ _matrix(_HAAR2, x).T  # (B, C, H/2, W/2, 4)
    return coeffs.permute(0, 4, 1, 2, 3)  # (B, 4, C, H/2, W/2)


def ihaar2d(coeffs: torch.Tensor) -> torch.Tensor:
    """Inverse of `haar2d`: (B, 4, C, h, w) -> (B, C, 2h, 2w)."""
    b, _, c, h, w = coeffs.shape
    blocks = coeffs.permute(0, 2, 3, 4, 1) @ _matrix(_HAAR2, coeffs)  # (B, C, h, w, 4)
    blocks = blocks.reshape(b, c, h, w, 2, 2).permute(0, 1, 2, 4, 3, 5)  # (B, C, h, dy, w, dx)
    return blocks.reshape(b, c, 2 * h, 2 * w)


def haar3d(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, 8, C, T/2, H/2, W/2); band bits are (time, height, width) high/low."""
    b, c, t, h, w = x.shape
    if t % 2 or h % 2 or w % 2:
        raise ValueError(f"haar3d needs even frames, height and width, got {t}x{h}x{w}")
    blocks = x.reshape(b, c, t // 2, 2, h // 2, 2, w // 2, 2)  # (B, C, T/2, dt, H/2, dy, W/2, dx)
    blocks = blocks.permute(0, 1, 2, 4, 6, 3, 5, 7).reshape(b, c, t // 2, h // 2, w // 2, 8)
    coeffs = blocks @ _matrix(_HAAR3, x).T  # (B, C, T/2, H/2, W/2, 8)
    return coeffs.permute(0, 5, 1, 2, 3, 4)  # (B, 8, C, T/2, H/2, W/2)


def ihaar3d(coeffs: torch.Tensor) -> torch.Tensor:
    """Inverse of `haar3d`: (B, 8, C, t, h, w) -> (B, C, 2t, 2h, 2w)."""
    b, _, c, t, h, w = coeffs.shape
    blocks = coeffs.permute(0, 2, 3, 4, 5, 1) @ _matrix(_HAAR3, coeffs)  # (B, C, t, h, w, 8)
    blocks = blocks.reshape(b, c, t, h, w, 2, 2, 2).permute(0, 1, 2, 5, 3, 6, 4, 7)  # (B,C,t,dt,h,dy,w,dx)
    return blocks.reshape(b, c, 2 * t, 2 * h, 2 * w)


def video_subbands(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Split a (B, 3, 1 + 4k, H, W) video into its first frame's 2-D Haar bands and the rest's 3-D bands.

    Returns image bands (B, 4, 3, H/2, W/2) and video bands (B, 8, 3, 2k, H/2, W/2), or None for an image.
    Frame 0 is coded alone so a video's first latent frame is an image latent (one latent space for both).
    """
    image = haar2d(x[:, :, 0])  # (B, 4, 3, H/2, W/2)
    video = haar3d(x[:, :, 1:]) if x.shape[2] > 1 else None  # (B, 8, 3, T-1 / 2, H/2, W/2)
    return image, video
