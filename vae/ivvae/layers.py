"""IV-VAE's layers. Every feature map is two halves along channels, `[keyframe (2-D) half | temporal (3-D) half]`:
the 2-D half is computed frame by frame, the 3-D half by group causal convolutions. A "KTC" convolution writes
both halves and each of its two convolutions reads both (`KTCConv`); norms and attention act on each half alone.

Group causal convolution (GCConv): frames come in groups of `group` frames (one latent frame's worth at that
depth); inside a group the 3x3x3 window is ordinary, before a group's first frame it sees the previous group's
last frame, after a group's last frame zeros. Frame 0 is a group of its own whose previous frame is itself. So a
chunk of whole groups needs only the previous-frame tap applied to the last frame of the chunk before: the causal
cache.

A keyframe-only model (the image VAE that initialises the keyframe half, `temporal=0`) builds the same modules
without the 3-D half. Module names are the official code's, so released state dicts load as they are.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..causal import Cache
from .fused import GroupCausalTaps, RMSNormSiLU


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """IV-VAE's activations, and therefore their gradients, live channels-last (B, T, H, W, C in memory): oneDNN's
    convolutions over its 8-64 channels run up to 3.7x faster there (a 1x3x3 forward + backward at 16 -> 8
    channels, 17x64x64: 8.8 ms vs 32.9), and the norms reduce over the innermost dimension. No copy if it already is."""
    return x.contiguous(memory_format=torch.channels_last_3d)


def per_frame(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 2-D convolution applied to every frame of x (B, C, T, H, W), as one 1 x k x k 3-D convolution with the
    same weights: no copies, one call."""
    return F.conv3d(channels_last(x), conv.weight.unsqueeze(2), conv.bias, (1, *conv.stride), (0, *conv.padding),
                    (1, *conv.dilation), conv.groups)


def interleave_frames(pairs: torch.Tensor) -> torch.Tensor:
    """(B, 2, C, T, H, W) -> (B, C, 2T, H, W), frame t of pair half i at 2t + i; one copy, channels-last."""
    b, _, c, t, h, w = pairs.shape
    frames = pairs.permute(0, 3, 1, 4, 5, 2).contiguous()  # (B, T, 2, H, W, C)
    return frames.view(b, 2 * t, h, w, c).permute(0, 4, 1, 2, 3)


class Layer(nn.Module):
    """A layer that takes the causal cache and whether its input starts at the video's first frame."""

    def forward(self, x: torch.Tensor, cache: Cache = None, first: bool = True) -> torch.Tensor:
        raise NotImplementedError


def run(layer: nn.Module, x: torch.Tensor, cache: Cache, first: bool) -> torch.Tensor:
    return layer(x, cache, first) if isinstance(layer, Layer) else layer(x)


class KTCConv(Layer):
    """Keyframe-temporal convolution: `conv_2d` (per frame) writes the keyframe half, `conv_3d` (group causal, or
    pointwise for kernel 1) the temporal half, each reading every input channel.

    Both run as one 1 x k x k convolution over the clip as it lies in memory: the keyframe kernel and each of the
    group causal kernel's three temporal taps are separate output channels, and the taps' outputs are then shifted
    into place (`fused.GroupCausalTaps`) - frame t's previous frame (across groups too; frame 0's is itself) and
    its next one, zero for a group's last frame. No regrouping of frames, the same multiply-adds, and one large convolution instead of
    three small ones: an ivvae-small training step (bench/vae_step.py) ran 1.17x faster than with the groups folded
    into the batch, and ivvae-z16 encodes 1.2x faster in a fifth less memory."""

    def __init__(self, in_channels: int, out_2d: int, out_3d: int, kernel_size: int, group: int = 1):
        super().__init__()
        self.conv_2d = nn.Conv2d(in_channels, out_2d, kernel_size, padding=kernel_size // 2)
        self.conv_3d = nn.Conv3d(in_channels, out_3d, kernel_size, padding=kernel_size // 2) if out_3d else None
        self.group = group

    def forward(self, x: torch.Tensor, cache: Cache = None, first: bool = True) -> torch.Tensor:
        if self.conv_3d is None:
            return per_frame(self.conv_2d, x)
        x = channels_last(x)
        k, out_2d, out_3d = self.conv_2d.kernel_size[0], self.conv_2d.out_channels, self.conv_3d.out_channels
        if k == 1:
            weight = torch.cat([self.conv_2d.weight.unsqueeze(2), self.conv_3d.weight])
            return F.conv3d(x, weight, torch.cat([self.conv_2d.bias, self.conv_3d.bias]))
        taps = self.conv_3d.weight.permute(2, 0, 1, 3, 4).flatten(0, 1).unsqueeze(2)  # (3 out_3d, C, 1, k, k), tap-major
        no_bias = self.conv_3d.bias.new_zeros(out_3d)
        bias = torch.cat([self.conv_2d.bias, no_bias, self.conv_3d.bias, no_bias])  # the current-frame tap's
        y = F.conv3d(x, torch.cat([self.conv_2d.weight.unsqueeze(2), taps]), bias, 1, (0, k // 2, k // 2))
        carried = None if first else cache[self]  # the previous tap on the frame before this chunk
        if cache is not None:
            cache[self] = y[:, out_2d:out_2d + out_3d, -1:].clone()
        return GroupCausalTaps.apply(y, carried, out_2d, self.group)


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


class SplitNormSiLU(nn.Module):
    """RMS norm of each half over its channels, per position (no statistics across frames), times a learned gain,
    then SiLU: the official `RMS_norm` and the `nn.SiLU` that follows it everywhere, as one autograd node
    (`fused.RMSNormSiLU`). Its module stands where the official norm does; the SiLU's place in the official
    sequences holds a `SiLUDone`, so released state dicts keep their keys."""

    def __init__(self, channels: int, temporal: bool = True):
        super().__init__()
        self.halves = 2 if temporal else 1
        self.gamma = nn.Parameter(torch.ones(self.halves * channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = channels_last(x).permute(0, 2, 3, 4, 1)  # (B, T, H, W, halves C), contiguous
        return RMSNormSiLU.apply(positions, self.gamma.view(-1), self.halves).permute(0, 4, 1, 2, 3)


class SiLUDone(nn.Identity):
    """The place of the official `nn.SiLU` after a norm, whose SiLU `SplitNormSiLU` applies."""


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

