"""Clip sampling (which frames of a video make a training clip) and the pixel preprocessing of Latte's loaders."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..common.pixels import to_uint8

CLIP_SAMPLING = ("random", "center", "seeded")


def clip_span(num_frames: int, frame_interval: int) -> int:
    """Frames of the source video that a clip covers, first to last frame included."""
    return (num_frames - 1) * frame_interval + 1


def fit_interval(available: int, num_frames: int, frame_interval: int, reduce: bool) -> int | None:
    """The interval a video of `available` frames is read at: `frame_interval`, or with `reduce` the largest
    smaller interval whose clip still fits; None when the video is too short either way."""
    if clip_span(num_frames, frame_interval) <= available:
        return frame_interval
    if reduce and num_frames > 1:
        interval = (available - 1) // (num_frames - 1)
        return interval if interval >= 1 else None
    return None


def clip_indices(available: int, num_frames: int, frame_interval: int, mode: str,
                 generator: torch.Generator | None = None) -> list[int]:
    """Frame indices of one clip: "center" starts it in the middle of the video, "random" and "seeded" draw the
    start uniformly (from `generator`, or torch's global RNG when None). The clip must fit (see `fit_interval`)."""
    if mode not in CLIP_SAMPLING:
        raise ValueError(f"clip sampling '{mode}' is not one of {', '.join(CLIP_SAMPLING)}")
    slack = available - clip_span(num_frames, frame_interval)
    if slack < 0:
        raise ValueError(f"a clip of {num_frames} frames at interval {frame_interval} needs "
                         f"{clip_span(num_frames, frame_interval)} frames, the video has {available}")
    if mode == "center":
        start = slack // 2
    else:
        start = int(torch.randint(0, slack + 1, (1,), generator=generator))
    return [start + i * frame_interval for i in range(num_frames)]


def frames_to_tensor(frames: np.ndarray, resolution: int, flip: bool = False) -> torch.Tensor:
    """uint8 frames (T, H, W, 3) -> float (3, T, resolution, resolution) in [-1, 1].

    Centre crop to a square on the long side, then an antialiased resize: the same pixels as Latte's
    short-side resize followed by a centre crop, at a fraction of the cost for wide frames.
    """
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (T, 3, H, W)
    height, width = video.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    video = video[:, :, top:top + side, left:left + side].float()  # (T, 3, S, S)
    if side != resolution:
        video = F.interpolate(video, size=(resolution, resolution), mode="bilinear", antialias=side > resolution,
                              align_corners=False).clamp_(0, 255)  # (T, 3, R, R)
    if flip:
        video = video.flip(-1)
    return (video / 127.5 - 1.0).permute(1, 0, 2, 3).contiguous()  # (3, T, R, R)


def tensor_to_frames(video: torch.Tensor) -> torch.Tensor:
    """float (3, T, H, W) in [-1, 1] -> uint8 (T, H, W, 3) on the CPU: the inverse of `frames_to_tensor`'s scaling,
    and the layout `write_video` takes."""
    return to_uint8(video.detach()).permute(1, 2, 3, 0).cpu()
