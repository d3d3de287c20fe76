"""IV-VAE's layers. Every feature map is two halves along channels, `[keyframe (2-D) half | temporal (3-D) half]`:
the 2-D half is computed frame by frame, the 3-D half by group causal convolutions. A "KTC" convolution writes
both halves and each of its two convolutions reads both (`KTCConv`); norms and attention act on each half alone.

Group causal convolution (GCConv): frames come in groups of `group` frames (one latent frame's worth at that
depth); inside a group the 3x3x3 window is ordinary, before a group's first frame it sees the previous group's
last frame, after a group's last frame zeros. Frame 0 is a group of its own whose previous frame is itself. So a
chunk of whole groups needs only the last input frame of the chunk before: the causal cache.

A keyframe-only model (the image VAE that initialises the keyframe half, `temporal=0`) builds the same modules
without the 3-D half. Module names are the official code's, so released state dicts load as they are.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..causal import Cache


def per_frame(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 2-D convolution applied to every frame of x (B, C, T, H, W), as one 1 x k x k 3-D convolution with the
    same weights: no copies, one call; a training step of ivvae-small ran 1.25x faster than frame by frame."""
    return F.conv3d(x, conv.weight.unsqueeze(2), conv.bias, (1, *conv.stride), (0, *conv.padding),
                    (1, *conv.dilation), conv.groups)


class Layer(nn.Module):
    """A layer that takes the causal cache and whether its input starts at the video's first frame."""

    def forward(self, x: torch.Tensor, cache: Cache = None, first: bool = True) -> torch.Tensor:
        raise NotImplementedError


def run(layer: nn.Module, x: torch.Tensor, cache: Cache, first: bool) -> torch.Tensor:
    return layer(x, cache, first) if isinstance(layer, Layer) else layer(x)


class GroupCausalConv3d(nn.Conv3d):
    """3x3x3 convolution over groups of `group` frames (module docstring); spatial padding 1."""

    def __init__(self, in_channels: int, out_channels: int, group: int):
        super().__init__(in_channels, out_channels, 3, padding=(0, 1, 1))
        self.group = group

    def forward(self, x: torch.Tensor, cache: Cache = None, first: bool = True) -> torch.Tensor:
        previous = x[:, :, :1] if first else cache[self]  # frame 0 is its own previous frame
        if cache is not None:
            cache[self] = x[:, :, -1:].clone()
        rest = x[:, :, int(first):]
        g = self.group
        if rest.shape[2] % g:
            raise ValueError(f"GroupCausalConv3d needs whole groups of {g} frames, got {rest.shape[2]}")
        outputs = [self._windows(torch.cat([previous, x[:, :, :1]], dim=2).unsqueeze(2))] if first else []  # frame 0
        if rest.shape[2]:
            groups = rest.unflatten(2, (-1, g))  # (B, C, n, g, H, W)
            before = torch.cat([previous, rest[:, :, g - 1 : -1 : g]], dim=2).unsqueeze(3)  # each group's previous
            outputs.append(self._windows(torch.cat([before, groups], dim=3)))
        return torch.cat(outputs, dim=2)

    def _windows(self, windows: torch.Tensor) -> torch.Tensor:
        """Windows (B, C, n, 1 + g, H, W) -> (B, C', n g, H, W): all n groups in one call, folded into the batch,
        each followed by a zero frame."""
        b, c, n, t, h, w = windows.shape
        folded = F.pad(windows.transpose(1, 2).reshape(b * n, c, t, h, w), (0, 0, 0, 0, 0, 1))  # zeros after
        # Channels-last from here on (the layers after keep it): oneDNN's 3-D convolutions over 8-32 channels run
        # up to 2x faster in it; a training step of ivvae-small 1.08x.
        folded = folded.contiguous(memory_format=torch.channels_last_3d)
        out = super().forward(folded)  # (B n, C', g, H, W)
        return out.unflatten(0, (b, n)).transpose(1, 2).flatten(2, 3)


class KTCConv(Layer):
    """Keyframe-temporal convolution: `conv_2d` (per frame) writes the keyframe half, `conv_3d` (group causal; a
    pointwise Conv3d for kernel 1) the temporal half, each reading every input channel."""

    def __init__(self, in_channels: int, out_2d: int, out_3d: int, kernel_size: int, group: int = 1):
        super().__init__()
        self.conv_2d = nn.Conv2d(in_channels, out_2d, kernel_size, padding=kernel_size // 2)
        self.pointwise = kernel_size == 1
        if not out_3d:
            self.conv_3d = None
        else:
            self.conv_3d = nn.Conv3d(in_channels, out_3d, 1) if self.pointwise else GroupCausalConv3d(
                in_channels, out_3d, group)

    def forward(self, x: torch.Tensor, cache: Cache = None, first: bool = True) -> torch.Tensor:
        keyframe = per_frame(self.conv_2d, x)  # (B, out_2d, T, H, W)
        if self.conv_3d is None:
            return keyframe
        temporal = self.conv_3d(x) if self.pointwise else self.conv_3d(x, cache, first)
        return torch.cat([keyframe, temporal], dim=1)


class FrameConv(Layer):
    """One 2-D convolution over both halves, per frame (the official `Sep_Conv2d`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2),
                              dilation=dilation)

    def forward(self, x: torch.Tensor, cache: Cache = None, first: bool = True) -> torch.Tensor:
        return per_frame(self.conv, x)


def unit(x: torch.Tensor, dim: int) -> torch.Tensor:
    """`F.normalize(x, dim=dim)` as a sum of squares: PyTorch's vector norm over a non-innermost dimension is slow
    on CPU (4 ms a call in an ivvae-small training step, a seventh of the step; in bfloat16 a fifth of a decode)."""
    return x / (x * x).sum(dim, keepdim=True).sqrt().clamp_min(1e-12)


class SplitRMSNorm(nn.Module):
    """RMS norm of each half over its channels, per position (no statistics across frames), times sqrt(C_half)
    and a learned gain; no bias."""

    def __init__(self, channels: int, temporal: bool = True):
        super().__init__()
        self.halves = 2 if temporal else 1
        self.scale = channels**0.5
        self.gamma = nn.Parameter(torch.ones(self.halves * channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        halves = x.unflatten(1, (self.halves, -1))  # (B, halves, C, T, H, W), a view
        return unit(halves, dim=2).flatten(1, 2) * (self.gamma * self.scale)


class Attention(nn.Module):
    """Single-head self-attention over the positions of each frame, RMS-normed input, residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.Module()
        self.norm.gamma = nn.Parameter(torch.ones(channels, 1, 1))
        self.to_qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)  # (B T, C, H, W)
        normed = unit(frames, dim=1) * (self.norm.gamma * c**0.5)
        qkv = self.to_qkv(normed).flatten(2).transpose(1, 2).unsqueeze(1).contiguous()  # (B T, 1, HW, 3C)
        q, k, v = qkv.chunk(3, dim=-1)  # contiguous as in the official code: SDPA then rounds identically
        out = F.scaled_dot_product_attention(q, k, v).squeeze(1).transpose(1, 2).reshape(b * t, c, h, w)
        return x + self.proj(out).unflatten(0, (b, t)).transpose(1, 2)


class SplitAttention(Layer):
    """Attention on each half alone."""

    def __init__(self, channels: int, temporal: bool = True):
        super().__init__()
        self.channels = channels
        self.Attention_2d = Attention(channels)
        self.Attention_3d = Attention(channels) if temporal else None

    def forward(self, x: torch.Tensor, cache: Cache = None, first: bool = True) -> torch.Tensor:
        if self.Attention_3d is None:
            return self.Attention_2d(x)
        keyframe, temporal = x.split(self.channels, dim=1)
        return torch.cat([self.Attention_2d(keyframe), self.Attention_3d(temporal)], dim=1)


class PAC(Layer):
    """Parallel atrous convolutions (the encoder head): six per-frame convolutions (1x1, and 3x3 at dilations 1,
    3, 6, 9, 12) over both halves; their keyframe outputs, then their temporal outputs, fused by a 1x1 convolution."""

    DILATIONS = (1, 3, 6, 9, 12)

    def __init__(self, channels: int, out_channels: int, temporal: bool = True):
        super().__init__()
        halves = 2 if temporal else 1
        self.halves = halves
        self.PAC_0 = FrameConv(halves * channels, halves * out_channels, 1)
        for dilation in self.DILATIONS:
            setattr(self, f"PAC_{dilation}", FrameConv(halves * channels, halves * out_channels, 3, dilation))
        self.PAC_conv = FrameConv(6 * halves * out_channels, halves * out_channels, 1)

    def forward(self, x: torch.Tensor, cache: Cache = None, first: bool = True) -> torch.Tensor:
        branches = [self.PAC_0(x)] + [getattr(self, f"PAC_{d}")(x) for d in self.DILATIONS]
        halves = [branch.chunk(self.halves, dim=1) for branch in branches]
        grouped = [half[i] for i in range(self.halves) for half in halves]  # keyframe outputs, then temporal
        return self.PAC_conv(torch.cat(grouped, dim=1))

