"""LeanVAE building blocks: the causal depthwise 3-D convolution and the Neighbourhood-Aware Feedforward layer.

Tokens live channels-last, (B, T, H, W, C), so every Linear is one large matmul with no permutes; the
depthwise convolution reads the same memory as a channels_last_3d (B, C, T, H, W) view.

Causal-cache chunked inference: a `cache` dict is created by the caller for one encode/decode call and
passed down. Each causal convolution stores the last `kernel_t - 1` frames of its input under its own key
and uses them as the past of the next chunk, so chunked output equals whole-video output. A fresh dict per
call means no state can leak from one call into the next.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

Cache = Optional[dict]


class CausalDepthwiseConv3d(nn.Module):
    """Depthwise 3x3x3 convolution over a token grid: causal in time (2 past frames), 'same' in space."""

    def __init__(self, dim: int, kernel_size: int = 3):
        super().__init__()
        self.past = kernel_size - 1
        # Symmetric temporal padding of `past`: output frame i then sees input frames i-past..i, i.e. the
        # first T outputs are the causal ones, with no padded copy of the input (the last `past` are dropped).
        self.conv = nn.Conv3d(dim, dim, kernel_size, padding=(self.past, kernel_size // 2, kernel_size // 2),
                              groups=dim)

    def forward(self, x: torch.Tensor, cache: Cache = None) -> torch.Tensor:
        b, t, h, w, c = x.shape
        x = x.permute(0, 4, 1, 2, 3)  # (B, C, T, H, W), channels_last_3d strides: a view, no copy
        y = self.conv(x)[:, :, :t]  # (B, C, T, H, W): zeros before the first frame
        if cache is None:
            return y.permute(0, 2, 3, 4, 1)  # (B, T, H, W, C)
        past = cache.get(self)
        if past is None:  # first chunk: the zero padding above is the video's real start
            past = x.new_zeros(b, c, self.past, h, w)
        else:  # a later chunk: redo the first outputs with the previous chunk's last frames
            head = torch.cat([past, x[:, :, : self.past]], dim=2)  # (B, C, past + min(T, past), H, W)
            y[:, :, : head.shape[2] - self.past] = F.conv3d(
                head, self.conv.weight, self.conv.bias, padding=(0,) + self.conv.padding[1:], groups=c
            )
        # Only the last `past` frames are kept, copied, so the cache never holds a whole chunk alive.
        cache[self] = torch.cat([past, x[:, :, -self.past :]], dim=2)[:, :, -self.past :].clone()
        return y.permute(0, 2, 3, 4, 1)  # (B, T, H, W, C)


class GEGLUFeedForward(nn.Module):
    """LayerNorm -> Linear(d, 2 * inner) -> GEGLU -> Linear(inner, d), inner = int(8d/3), no biases."""

    def __init__(self, dim: int):
        super().__init__()
        inner = int(8 * dim / 3)
        self.norm = nn.LayerNorm(dim)
        self.proj_in = nn.Linear(dim, 2 * inner, bias=False)
        self.proj_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden, gate = self.proj_in(self.norm(x)).chunk(2, dim=-1)  # 2 x (B, T, H, W, inner)
        return self.proj_out(hidden * F.gelu(gate))  # (B, T, H, W, C)


class NAF(nn.Module):
    """Neighbourhood-Aware Feedforward: causal depthwise conv (token mixing) then a GEGLU feed-forward.

    `residual=True` is ResNAF (both parts residual, the encoder/decoder layer); `residual=False` is the plain
    layer the ISTA-Net+ transforms are made of.
    """

    def __init__(self, dim: int, residual: bool = True):
        super().__init__()
        self.residual = residual
        self.mix = CausalDepthwiseConv3d(dim)
        self.ff = GEGLUFeedForward(dim)

    def forward(self, x: torch.Tensor, cache: Cache = None) -> torch.Tensor:
        if self.residual:
            x = x + self.mix(x, cache)
            return x + self.ff(x)
        return self.ff(self.mix(x, cache))


class NAFStack(nn.Sequential):
    """A chain of NAF layers sharing one cache."""

    def __init__(self, dim: int, depth: int, residual: bool = True):
        super().__init__(*[NAF(dim, residual) for _ in range(depth)])

    def forward(self, x: torch.Tensor, cache: Cache = None) -> torch.Tensor:
        for layer in self:
            x = layer(x, cache)
        return x
