"""Causal-cache primitives: temporal convolutions that make chunked encoding and decoding exact.

A `cache` is a dict created by `VideoAutoencoder` for one chunked encode/decode call and passed down to every
layer. Each causal convolution stores the last `kernel_t - 1` frames of its input under its own key and uses
them as the past of the next chunk, so a chunked call equals a whole-video call. A fresh dict per call means
no state can leak from one call into the next; `cache=None` means the whole video is in this one call.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

Cache = Optional[dict]
START_PADDING = ("zeros", "replicate")


class CausalConv3d(nn.Conv3d):
    """A stride-1 Conv3d on (B, C, T, H, W), causal in time and 'same' in space.

    Output frame t sees input frames t - (k_t - 1) .. t. Before the video's first frame the past is zeros or
    copies of frame 0 (`start_padding`); before a later chunk it is the cached end of the previous chunk.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int, int],
                 groups: int = 1, bias: bool = True, start_padding: str = "zeros"):
        kt, kh, kw = (kernel_size,) * 3 if isinstance(kernel_size, int) else kernel_size
        if start_padding not in START_PADDING:
            raise ValueError(f"start_padding must be one of {START_PADDING}, got {start_padding!r}")
        # Symmetric temporal padding of `past`: output t then sees inputs t - past .. t, so the first T outputs
        # are the causal ones with no padded copy of the input (the last `past` outputs are dropped).
        super().__init__(in_channels, out_channels, (kt, kh, kw), padding=(kt - 1, kh // 2, kw // 2), groups=groups,
                         bias=bias)
        self.past = kt - 1
        self.start_padding = start_padding

    def forward(self, x: torch.Tensor, cache: Cache = None) -> torch.Tensor:
        t = x.shape[2]
        y = super().forward(x)[:, :, :t]  # (B, C', T, H, W), zeros before the first frame
        if not self.past:
            return y
        past = cache.get(self) if cache is not None else None
        if past is None and self.start_padding == "replicate":
            past = x[:, :, :1].expand(-1, -1, self.past, -1, -1)
        if past is not None:  # redo the first outputs with the real past instead of zeros
            head = torch.cat([past, x[:, :, : self.past]], dim=2)  # (B, C, past + min(T, past), H, W)
            y[:, :, : head.shape[2] - self.past] = F.conv3d(head, self.weight, self.bias, padding=(0, *self.padding[1:]),
                                                            groups=self.groups)
        if cache is not None:
            # Only the last `past` frames are kept, copied, so the cache never holds a whole chunk alive.
            before = past if past is not None else x.new_zeros(*x.shape[:2], self.past, *x.shape[3:])
            cache[self] = torch.cat([before, x[:, :, -self.past :]], dim=2)[:, :, -self.past :].clone()
        return y
