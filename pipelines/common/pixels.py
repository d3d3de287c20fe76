"""The one conversion of float pixels to uint8, used for every video written or scored."""

from __future__ import annotations

import torch


def to_uint8(video: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
    """Float pixels in `value_range` -> uint8 in [0, 255], rounding half up; any layout. Uint8 input is returned as is.

    For [-1, 1] this is StyleGAN-V's `(x * 127.5 + 128).clamp(0, 255).to(uint8)` in float32, bit for bit (the FVD
    protocol); Latte's `((x * 0.5 + 0.5) * 255 + 0.5)` is the same rounding but float error splits the two on exact
    ties. Values a little outside the range (decoder overshoot) are clamped; far outside means a wrong range.
    """
    if video.dtype == torch.uint8:
        return video
    if not video.is_floating_point():
        raise ValueError(f"videos must be float or uint8, got dtype {video.dtype}")
    low, high = value_range
    scale = 255.0 / (high - low)
    margin = (high - low) / 2
    if not bool(((video.detach() >= low - margin) & (video.detach() <= high + margin)).all()):
        raise ValueError(f"float videos must be finite and in [{low:g}, {high:g}] (got NaN or values beyond "
                         f"[{low - margin:g}, {high + margin:g}]); pass uint8 for [0, 255] data")
    return (video.float() * scale + (0.5 - low * scale)).clamp(0, 255).to(torch.uint8)
