"""IV-VAE's blocks: residual blocks (KTC or per-frame), and the resamplers - spatial by 2 on each half, and in
time keyframe subsampling (keyframe half) / a stride-2 convolution (temporal half) going down, frame repetition
(keyframe half) / channel-to-time (temporal half) going up. Frame 0 is never resampled in time."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..causal import Cache
from .layers import FrameConv, KTCConv, Layer, SiLUDone, SplitNormSiLU, interleave_frames, per_frame, run


class ResidualBlock(Layer):
    """norm, SiLU, KTC conv, norm, SiLU, dropout, KTC conv, plus a 1x1 KTC shortcut when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, group: int, dropout: float, temporal: bool):
        super().__init__()
        halves = 2 if temporal else 1
        out_3d = out_channels if temporal else 0
        self.residual = nn.Sequential(
            SplitNormSiLU(in_channels, temporal), SiLUDone(),
            KTCConv(halves * in_channels, out_channels, out_3d, 3, group),
            SplitNormSiLU(out_channels, temporal), SiLUDone(), nn.Dropout(dropout),
            KTCConv(halves * out_channels, out_channels, out_3d, 3, group))
        self.shortcut = (KTCConv(halves * in_channels, out_channels, out_3d, 1) if in_channels != out_channels
                         else nn.Identity())

    def forward(self, x: torch.Tensor, cache: Cache = None, first: bool = True) -> torch.Tensor:
        shortcut = run(self.shortcut, x, cache, first)
        for layer in self.residual:
            x = run(layer, x, cache, first)
        return x + shortcut


class ResidualBlock2d(ResidualBlock):
    """The same with per-frame convolutions over both halves (the deepest stages, where a group is one frame)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float, temporal: bool):
        Layer.__init__(self)
        halves = 2 if temporal else 1
        self.residual = nn.Sequential(
            SplitNormSiLU(in_channels, temporal), SiLUDone(), FrameConv(halves * in_channels, halves * out_channels, 3),
            SplitNormSiLU(out_channels, temporal), SiLUDone(), nn.Dropout(dropout),
            FrameConv(halves * out_channels, halves * out_channels, 3))
        self.shortcut = (FrameConv(halves * in_channels, halves * out_channels, 1) if in_channels != out_channels
                         else nn.Identity())


class Resample(Layer):
    """mode "down2d" / "down3d": spatial /2 (+ time /2); "up2d" / "up3d": spatial x2, width /2 (+ time x2)."""

    MODES = ("down2d", "down3d", "up2d", "up3d")

    def __init__(self, channels: int, mode: str, temporal: bool):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.channels, self.mode = channels, mode
        self.resample_2d = self._spatial(channels, mode)
        self.resample_3d = self._spatial(channels, mode) if temporal else None
        self.time_conv = None
        if temporal and mode == "down3d":
            self.time_conv = nn.Conv3d(channels, channels, (2, 1, 1), stride=(2, 1, 1))
        elif temporal and mode == "up3d":
            self.time_conv = nn.Conv3d(channels, 2 * channels, 1)

    @staticmethod
    def _spatial(channels: int, mode: str) -> nn.Sequential:
        if mode.startswith("down"):  # pad right and bottom by one, then a stride-2 3x3 convolution
            return nn.Sequential(nn.ConstantPad3d((0, 1, 0, 1, 0, 0), 0.0), nn.Conv2d(channels, channels, 3, stride=2))
        return nn.Sequential(nn.Upsample(scale_factor=(1.0, 2.0, 2.0), mode="nearest-exact"),
                             nn.Conv2d(channels, channels // 2, 3, padding=1))

    def forward(self, x: torch.Tensor, cache: Cache = None, first: bool = True) -> torch.Tensor:
        halves = list(x.split(self.channels, dim=1))  # keyframe half (, temporal half)
        if self.mode == "up3d":
            halves = self._in_time(halves, first, self._up_in_time)
        halves = [per_frame(seq[1], seq[0](half)) for seq, half in zip((self.resample_2d, self.resample_3d), halves)]
        if self.mode == "down3d":
            halves = self._in_time(halves, first, self._down_in_time)
        return torch.cat(halves, dim=1)

    @staticmethod
    def _in_time(halves: list[torch.Tensor], first: bool, resample) -> list[torch.Tensor]:
        """Resample every frame in time but the video's frame 0, which stays as it is."""
        if not first:
            return resample(halves)
        rest = [half[:, :, 1:] for half in halves]
        if not rest[0].shape[2]:
            return halves
        return [torch.cat([half[:, :, :1], done], dim=2) for half, done in zip(halves, resample(rest))]

    def _down_in_time(self, halves: list[torch.Tensor]) -> list[torch.Tensor]:
        keyframes = halves[0][:, :, ::2]  # the first frame of every pair
        return [keyframes] + ([self.time_conv(halves[1])] if len(halves) > 1 else [])

    def _up_in_time(self, halves: list[torch.Tensor]) -> list[torch.Tensor]:
        keyframes = halves[0]
        repeated = interleave_frames(keyframes.unsqueeze(1).expand(-1, 2, -1, -1, -1, -1))  # each keyframe twice
        if len(halves) == 1:
            return [repeated]
        pairs = self.time_conv(halves[1]).unflatten(1, (2, -1))  # (B, 2, C, T, H, W): channels -> two frames
        return [repeated, interleave_frames(pairs)]
