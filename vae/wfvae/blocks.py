"""WF-VAE's building blocks, each taking the call's causal cache: per-frame 2-D layers, causal 3-D residual blocks,
per-frame attention, spatial and spatio-temporal down/up-samplers.

Module names follow the released checkpoint (`norm1.norm.weight`, `conv1.conv.weight`, `q.conv.weight`, ...), so
its state dict loads as is. Nothing mixes statistics across frames with `norm_type="layernorm"` (the released
one): that keeps chunked inference exact. `"groupnorm"` (the official class default) normalises over frames too.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..causal import Cache, CausalConv3d

NORM_TYPES = ("layernorm", "groupnorm")


def frames_as_images(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2).flatten(0, 1)  # (B, C, T, H, W) -> (B*T, C, H, W)


def images_as_frames(x: torch.Tensor, batch: int) -> torch.Tensor:
    return x.unflatten(0, (batch, -1)).transpose(1, 2)  # (B*T, C, H, W) -> (B, C, T, H, W)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of each position of a (B, C, ...) tensor."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


def make_norm(channels: int, norm_type: str) -> nn.Module:
    if norm_type == "layernorm":
        return ChannelLayerNorm(channels)
    return nn.GroupNorm(32, channels, eps=1e-6)


class CachedConv3d(nn.Module):
    """A causal 3-D convolution that repeats frame 0 before the video's start (the released `CausalConv3d`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: Optional[tuple[int, int]] = None):
        super().__init__()
        self.conv = CausalConv3d(in_channels, out_channels, kernel_size, stride, padding,
                                 start_padding="replicate")

    def forward(self, x: torch.Tensor, cache: Cache = None) -> torch.Tensor:
        return self.conv(x, cache)


class FrameConv2d(nn.Conv2d):
    """A 2-D convolution applied to every frame of a (B, C, T, H, W) video."""

    def forward(self, x: torch.Tensor, cache: Cache = None) -> torch.Tensor:
        return images_as_frames(super().forward(frames_as_images(x)), x.shape[0])


class CachedSequential(nn.Sequential):
    """nn.Sequential whose layers all take the cache."""

    def forward(self, x: torch.Tensor, cache: Cache = None) -> torch.Tensor:
        for layer in self:
            x = layer(x, cache)
        return x


class ResnetBlock2D(nn.Module):
    """Per frame: norm, SiLU, conv 3x3, norm, SiLU, dropout, conv 3x3, plus the (1x1-projected) input."""

    def __init__(self, in_channels: int, out_channels: int, norm_type: str, dropout: float = 0.0):
        super().__init__()
        self.norm1 = make_norm(in_channels, norm_type)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = make_norm(out_channels, norm_type)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, cache: Cache = None) -> torch.Tensor:
        frames = frames_as_images(x)  # (B*T, C, H, W)
        h = self.conv1(F.silu(self.norm1(frames)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = self.nin_shortcut(frames) if hasattr(self, "nin_shortcut") else frames
        return images_as_frames(skip + h, x.shape[0])


class ResnetBlock3D(nn.Module):
    """As ResnetBlock2D with causal 3x3x3 convolutions (and a causal 1x1x1 projection)."""

    def __init__(self, in_channels: int, out_channels: int, norm_type: str, dropout: float = 0.0):
        super().__init__()
        self.norm1 = make_norm(in_channels, norm_type)
        self.conv1 = CachedConv3d(in_channels, out_channels, 3)
        self.norm2 = make_norm(out_channels, norm_type)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = CachedConv3d(out_channels, out_channels, 3)
        if in_channels != out_channels:
            self.nin_shortcut = CachedConv3d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, cache: Cache = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)), cache)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))), cache)
        return (self.nin_shortcut(x, cache) if hasattr(self, "nin_shortcut") else x) + h


class FrameAttention(nn.Module):
    """Single-head self-attention among the h*w positions of each frame (the released `AttnBlock3DFix`)."""

    def __init__(self, channels: int, norm_type: str):
        super().__init__()
        self.norm = make_norm(channels, norm_type)
        self.q = CachedConv3d(channels, channels, 1)
        self.k = CachedConv3d(channels, channels, 1)
        self.v = CachedConv3d(channels, channels, 1)
        self.proj_out = CachedConv3d(channels, channels, 1)

    def forward(self, x: torch.Tensor, cache: Cache = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        x_norm = self.norm(x)
        q, k, v = (layer(x_norm).permute(0, 2, 3, 4, 1).reshape(b * t, h * w, c) for layer in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # (B*T, h*w, C)
        return x + self.proj_out(out.reshape(b, t, h, w, c).permute(0, 4, 1, 2, 3))


class Downsample(nn.Module):
    """Per frame: zero-pad right and bottom by one, 3x3 convolution with stride 2."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=2)

    def forward(self, x: torch.Tensor, cache: Cache = None) -> torch.Tensor:
        return images_as_frames(self.conv(F.pad(frames_as_images(x), (0, 1, 0, 1))), x.shape[0])


class Upsample(nn.Module):
    """Per frame: nearest x2, 3x3 convolution."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cache: Cache = None) -> torch.Tensor:
        frames = F.interpolate(frames_as_images(x), scale_factor=2.0, mode="nearest")
        return images_as_frames(self.conv(frames), x.shape[0])


class Spatial2xTime2x3DDownsample(nn.Module):
    """Zero-pad right and bottom by one, causal 3x3x3 convolution with stride 2 in time and space:
    1 + 2m frames -> 1 + m."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = CachedConv3d(in_channels, out_channels, 3, stride=2, padding=(0, 0))

    def forward(self, x: torch.Tensor, cache: Cache = None) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)), cache)


class Spatial2xTime2x3DUpsample(nn.Module):
    """1 + m frames -> 1 + 2m: frame 0 only x2 in space; the others x2 in time (linear or nearest), all x2 in
    space (bilinear), then a causal 3x3x3 convolution.

    Linear interpolation in time looks one frame ahead: the second frame made from frame i mixes in frame i+1.
    Chunked, the last frame of a chunk is held in the cache until the next chunk brings its successor; the
    chunk marked last (`cache["last"]`) flushes it, repeating the final frame as the interpolation does at the
    end of a video. The output of a chunk is then one frame behind its input, and the layers after it, all
    causal, simply continue on the shifted stream.
    """

    def __init__(self, in_channels: int, out_channels: int, t_interpolation: str = "trilinear"):
        super().__init__()
        self.t_interpolation = t_interpolation
        self.conv = CachedConv3d(in_channels, out_channels, 3)

    def forward(self, x: torch.Tensor, cache: Cache = None) -> torch.Tensor:
        first = cache is None or self not in cache
        held = None if first else cache[self]
        pieces = []
        if first:  # frame 0 of the video: no temporal upsampling
            pieces.append(x[:, :, :1])
            x = x[:, :, 1:]
        if self.t_interpolation == "nearest":
            pieces.append(x.repeat_interleave(2, dim=2))
        else:
            pieces.append(self._linear(x, held, last=cache is None or cache["last"]))
            held = x[:, :, -1:] if x.shape[2] else held
        if cache is not None:
            cache[self] = held
        video = torch.cat(pieces, dim=2)  # (B, C, n, h, w)
        frames = F.interpolate(frames_as_images(video), scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.conv(images_as_frames(frames, x.shape[0]), cache)

    @staticmethod
    def _linear(x: torch.Tensor, held: Optional[torch.Tensor], last: bool) -> torch.Tensor:
        """Frames m of the sequence after frame 0 (x, after the `held` one) -> 2m: 0.75 f[m] + 0.25 f[m+1] and
        0.25 f[m] + 0.75 f[m+1] between neighbours, f[0] first and the last frame itself last, as trilinear
        `F.interpolate` with align_corners=False gives them."""
        seq = x if held is None else torch.cat([held, x], dim=2)  # (B, C, n, h, w)
        pieces = [seq[:, :, :1]] if held is None and seq.shape[2] else []
        a, b = seq[:, :, :-1], seq[:, :, 1:]
        pairs = torch.stack([0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b], dim=3)  # (B, C, n-1, 2, h, w)
        pieces.append(pairs.flatten(2, 3))
        if last and seq.shape[2]:
            pieces.append(0.75 * seq[:, :, -1:] + 0.25 * seq[:, :, -1:])
        return torch.cat(pieces, dim=2)
