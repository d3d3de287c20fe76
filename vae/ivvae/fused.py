"""IV-VAE's two elementwise-heavy steps as single autograd nodes with hand-written backward passes.

At ivvae-small's width (8-32 channels at full resolution) a training step is bound by passes over memory, not by
its convolutions: autograd's version of the split RMS norm + SiLU made ~40% of the step, and the group causal
convolution's shifts and concatenations another ~10% (`bench/vae_step.py`, profiled). Written out, each needs a
few passes forward and backward, and hands back gradients channels-last, where the convolutions want them.
Nothing here changes what is computed: tests check both against autograd on the plain expression.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


class RMSNormSiLU(torch.autograd.Function):
    """silu(g * x / rms(x)) over the innermost dimension's `halves` groups of channels: x (..., halves C)
    contiguous, gain g (halves C,). Arithmetic in float32 (or x's dtype if wider), the output in x's dtype; what
    backward needs is kept as the normed input in float32, as autograd's version of the expression kept it
    (keeping it in bfloat16 instead cost a cast each way: an ivvae-small bf16 step 1.15x slower)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, gain: torch.Tensor, halves: int) -> torch.Tensor:
        x32 = _at_least_float32(x).reshape(-1, halves, x.shape[-1] // halves)  # (N, halves, C)
        rms_inv = torch.linalg.vector_norm(x32, 2, -1, keepdim=True).clamp_min_(1e-12).reciprocal_()
        rms_inv.mul_(x32.shape[-1] ** 0.5)  # (N, halves, 1): sqrt(C) / |x| = 1 / rms(x)
        normed = (x32 * rms_inv).flatten(1)  # (N, halves C)
        ctx.save_for_backward(normed, rms_inv, gain)
        ctx.halves = halves
        return F.silu(normed * _at_least_float32(gain), inplace=True).to(x.dtype).view(x.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        normed, rms_inv, gain = ctx.saved_tensors  # normed (N, halves C), already at least float32
        gain32 = _at_least_float32(gain)
        grad_scaled = torch.ops.aten.silu_backward(_at_least_float32(grad).reshape(normed.shape), normed * gain32)
        grad_gain = (grad_scaled * normed).sum(0)
        grad_normed = grad_scaled.mul_(gain32).view(rms_inv.shape[0], ctx.halves, -1)  # (N, halves, C)
        normed = normed.view(grad_normed.shape)
        # d(x / rms x) / dx = (I - n n^T / C) / rms x: take out the component along the normed vector.
        along = (grad_normed * normed).mean(-1, keepdim=True)
        grad_x = torch.addcmul(grad_normed, normed, along, value=-1).mul_(rms_inv)
        return grad_x.to(grad.dtype).view(grad.shape), grad_gain.to(gain.dtype), None


class GroupCausalTaps(torch.autograd.Function):
    """A KTC convolution's output from one 1 x k x k convolution's: y (B, C2 + 3 C3, T, H, W), channels-last, holds
    the keyframe half's C2 channels, then the group causal kernel's previous-, current- and next-frame taps, each
    evaluated on every frame (biases included). The temporal half at frame t is now[t] + before[t - 1] +
    after[t + 1], where the video's frame 0 takes itself as its previous frame (`carried`: None) and a chunk's
    frame 0 the cached previous tap of the frame before it (`carried`, (B, C3, 1, H, W)), and a group's last frame
    has no next-frame term. Returns (B, C2 + C3, T, H, W), channels-last."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, carried: Optional[torch.Tensor], keyframe_channels: int,
                group: int) -> torch.Tensor:
        first = carried is None
        c2 = keyframe_channels
        c3 = (y.shape[1] - c2) // 3
        if (y.shape[2] - int(first)) % group:
            raise ValueError(f"KTCConv needs whole groups of {group} frames, got {y.shape[2] - int(first)}")
        before, now, after = y[:, c2:].split(c3, dim=1)
        out = torch.empty((y.shape[0], c2 + c3, *y.shape[2:]), dtype=y.dtype, device=y.device,
                          memory_format=torch.channels_last_3d)
        out[:, :c2] = y[:, :c2]
        temporal = out[:, c2:]
        temporal.copy_(now)
        temporal[:, :, 1:] += before[:, :, :-1]
        temporal[:, :, :1] += before[:, :, :1] if first else carried
        if y.shape[2] > 1:
            _within_groups(temporal, first, group)[:, :, :, :-1] += _within_groups(after, first, group)[:, :, :, 1:]
        ctx.shape, ctx.split, ctx.first, ctx.group = y.shape, (c2, c3), first, group
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (c2, c3), first = ctx.split, ctx.first
        grad_y = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=torch.channels_last_3d)
        grad_y[:, :c2] = grad[:, :c2]
        temporal = grad[:, c2:]
        before, now, after = grad_y[:, c2:].split(c3, dim=1)
        now.copy_(temporal)
        before[:, :, :-1] = temporal[:, :, 1:]
        before[:, :, -1:] = 0
        if first:
            before[:, :, :1] += temporal[:, :, :1]
        after.zero_()
        if ctx.shape[2] > 1:
            within, group = _within_groups, ctx.group
            within(after, first, group)[:, :, :, 1:] = within(temporal, first, group)[:, :, :, :-1]
        return grad_y, (None if first else temporal[:, :, :1].clone()), None, None


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _within_groups(x: torch.Tensor, first: bool, group: int) -> torch.Tensor:
    """(B, C, T, H, W) -> a view (B, C, groups, group, H, W) of its whole groups (the video's frame 0, a group of
    one, left out)."""
    return x[:, :, int(first):].unflatten(2, (-1, group))
