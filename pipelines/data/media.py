"""Writing videos to look at: one mp4 each, and a preview grid (PNG rows of frames, an animated GIF side by side).

Videos come as the pipeline's output_type="np" gives them, (B, T, H, W, 3) float in [0, 1], or as uint8.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..common.files import atomic_write
from ..common.pixels import to_uint8
from .video_io import write_video


def _uint8(videos) -> torch.Tensor:
    return to_uint8(torch.as_tensor(videos), (0.0, 1.0)).cpu()  # (B, T, H, W, 3)


def save_videos(videos, out_dir: str | Path, names: Sequence[str], fps: float = 8.0) -> list[Path]:
    """One mp4 per video, written atomically; returns the paths."""
    videos = _uint8(videos)
    return [write_video(Path(out_dir) / f"{name}.mp4", video.numpy(), fps) for video, name in zip(videos, names)]


def save_grid(videos, path: str | Path, fps: float = 8.0, max_frames: int = 8) -> tuple[Path, Path]:
    """A PNG (one row per video, `max_frames` evenly spaced frames) and an animated GIF (videos side by side)."""
    videos, path = _uint8(videos), Path(path)
    t = videos.shape[1]
    frames = np.linspace(0, t - 1, min(max_frames, t)).round().astype(int)
    rows = [np.concatenate(list(video[frames].numpy()), axis=1) for video in videos]  # b x (H, n*W, 3)
    png = atomic_write(path.with_suffix(".png"),
                       lambda tmp: Image.fromarray(np.concatenate(rows, axis=0)).save(tmp, format="PNG"))
    images = [Image.fromarray(frame) for frame in torch.cat(list(videos), dim=2).numpy()]  # T x (H, B*W, 3)
    gif = atomic_write(path.with_suffix(".gif"), lambda tmp: images[0].save(
        tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0))
    return png, gif
