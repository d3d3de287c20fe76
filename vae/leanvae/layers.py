"""LeanVAE building blocks: the causal depthwise 3-D convolution and the Neighbourhood-Aware Feedforward layer.

Tokens live channels-last, (B, T, H, W, C), so every Linear is one large matmul with no permutes; the
depthwise convolution reads the same memory as a channels_last_3d (B, C, T, H, W) view. Every temporal
operator is a `CausalConv3d` sharing the call's causal cache (vae/causal.py), so chunked inference is exact.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..causal import Cache, CausalConv3d


class CausalDepthwiseConv3d(nn.Module):
    """Depthwise 3x3x3 convolution over a channels-last token grid: causal in time (2 past frames), 'same' in space."""

    def __init__(self, dim: int, kernel_size: int = 3):
        super().__init__()
        self.conv = CausalConv3d(dim, dim, kernel_size, groups=dim)

    def forward(self, x: torch.Tensor, cache: Cache = None) -> torch.Tensor:
        y = self.conv(x.permute(0, 4, 1, 2, 3), cache)  # (B, C, T, H, W): a channels_last_3d view, no copy
        return y.permute(0, 2, 3, 4, 1)  # (B, T, H, W, C)


class GEGLUFeedForward(nn.Module):
    """LayerNorm -> Linear(d, 2 * inner) -> GEGLU -> Linear(inner, d), inner = int(8d/3), no biases.

    Without gradients the tokens go through in slices of `INFERENCE_TOKENS`, the product in place: each slice's
    intermediates (inner wide, 2.7x the input) stay small enough for the allocator to reuse warm memory, where a
    whole clip's are fresh pages every call (lean-4ch, 17 x 256 x 256: peak memory of an encode 165 -> 109 MiB,
    bfloat16 encode + decode 0.63 -> 0.50 s, float32 as fast; BENCHMARKS.md). Every operation is per token, so the
    slices compute the same function.
    """

    INFERENCE_TOKENS = 2048

    def __init__(self, dim: int):
        super().__init__()
        inner = int(8 * dim / 3)
        self.norm = nn.LayerNorm(dim)
        self.proj_in = nn.Linear(dim, 2 * inner, bias=False)
        self.proj_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # training keeps every intermediate for the backward in any case
            hidden, gate = self.hidden_and_gate(x)
            return self.proj_out(hidden * F.gelu(gate))  # (B, T, H, W, C)
        tokens = x.reshape(-1, x.shape[-1])  # (N, C)
        out = torch.empty_like(tokens)
        for piece, target in zip(tokens.split(self.INFERENCE_TOKENS), out.split(self.INFERENCE_TOKENS)):
            hidden, gate = self.hidden_and_gate(piece)  # (n, inner) each
            target.copy_(self.proj_out(hidden.mul_(F.gelu(gate))))  # in place: no graph to keep here
        return out.view(x.shape)  # (B, T, H, W, C)

    def hidden_and_gate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # proj_in as two products with its weight's halves: each output is contiguous, where the halves of one
        # product are strided views that GELU and the product run 14x / 7x slower on, and on a CPU two N = inner
        # products beat one of 2 * inner (lean-4ch, 5120 tokens: 44.5 vs 58 ms).
        x = self.norm(x)
        hidden_weight, gate_weight = self.proj_in.weight.chunk(2)  # (inner, d) each, contiguous
        return F.linear(x, hidden_weight), F.linear(x, gate_weight)  # (..., inner) each


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
