"""Causal-cache primitives: temporal convolutions that make chunked encoding and decoding exact.

A `cache` is a dict created by `VideoAutoencoder` for one chunked encode/decode call and passed down to every
layer. Each causal convolution stores the end of its input that its next window still needs under its own key
and uses it as the past of the next chunk, so a chunked call equals a whole-video call. A fresh dict per call
means no state can leak from one call into the next; `cache=None` means the whole video is in this one call.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

Cache = Optional[dict]
START_PADDING = ("zeros", "replicate")


def _triple(value: int | tuple[int, int, int]) -> tuple[int, int, int]:
    return (value,) * 3 if isinstance(value, int) else tuple(value)


class CausalConv3d(nn.Conv3d):
    """A Conv3d on (B, C, T, H, W), causal in time: output frame t sees input frames up to t (stride 1) or up
    to s t (temporal stride s), never later ones. Spatial padding defaults to 'same' (k // 2).

    Before the video's first frame the past is k_t - 1 zeros or copies of frame 0 (`start_padding`); before a
    later chunk it is what the previous chunk left. With a temporal stride, chunks must hold whole strides, as
    the chunked loop of `VideoAutoencoder` gives them.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int, int],
                 stride: int | tuple[int, int, int] = 1, padding: Optional[tuple[int, int]] = None, groups: int = 1,
                 bias: bool = True, start_padding: str = "zeros"):
        kt, kh, kw = _triple(kernel_size)
        if start_padding not in START_PADDING:
            raise ValueError(f"start_padding must be one of {START_PADDING}, got {start_padding!r}")
        spatial = padding if padding is not None else (kh // 2, kw // 2)
        # Stride 1 with zeros before the start: symmetric temporal padding of `past`, so output t sees inputs
        # t - past .. t and the first T outputs are the causal ones, with no padded copy of the input.
        self.fast = _triple(stride)[0] == 1 and start_padding == "zeros"
        super().__init__(in_channels, out_channels, (kt, kh, kw), stride=stride, groups=groups, bias=bias,
                         padding=(kt - 1 if self.fast else 0, *spatial))
        self.past = kt - 1
        self.start_padding = start_padding

    def forward(self, x: torch.Tensor, cache: Cache = None) -> torch.Tensor:
        if not self.past:
            return super().forward(x)
        if self.fast:
            return self._forward_zeros(x, cache)
        past = cache.get(self) if cache is not None else None
        if past is None:
            start = x[:, :, :1] if self.start_padding == "replicate" else torch.zeros_like(x[:, :, :1])
            past = torch.cat([start] * self.past, dim=2)  # not `expand`: cat keeps x's memory format (channels-last)
        seq = torch.cat([past, x], dim=2)  # (B, C, carried + T, H, W)
        y = super().forward(seq)  # (B, C', n, H', W')
        if cache is not None:
            # Keep every frame from the start of the next window on: for stride 1 the last k - 1 frames.
            cache[self] = seq[:, :, self.stride[0] * y.shape[2]:].clone()
        return y

    def _forward_zeros(self, x: torch.Tensor, cache: Cache) -> torch.Tensor:
        t = x.shape[2]
        y = super().forward(x)[:, :, :t]  # (B, C', T, H, W), zeros before the first frame
        past = cache.get(self) if cache is not None else None
        if past is not None:  # a later chunk: redo the first outputs with the previous chunk's last frames
            head = torch.cat([past, x[:, :, : self.past]], dim=2)  # (B, C, past + min(T, past), H, W)
            y[:, :, : head.shape[2] - self.past] = F.conv3d(head, self.weight, self.bias, stride=self.stride,
                                                            padding=(0, *self.padding[1:]), groups=self.groups)
        if cache is not None:
            # Only the last `past` frames are kept, copied, so the cache never holds a whole chunk alive.
            before = past if past is not None else x.new_zeros(*x.shape[:2], self.past, *x.shape[3:])
            cache[self] = torch.cat([before, x[:, :, -self.past :]], dim=2)[:, :, -self.past :].clone()
        return y
