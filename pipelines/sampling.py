"""Finding a trained run, loading its pipeline, and writing generated videos (mp4 + a preview grid)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from accelerate import PartialState
from PIL import Image

from .data import write_video
from .pipeline_latte import LatteVideoPipeline, make_scheduler

PIPELINE_DIR = "pipeline"  # <run>/dit/pipeline, written by train_dit.py
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def find_pipeline(run: Optional[str | Path] = None, runs_root: str | Path = "runs") -> Path:
    """A saved pipeline folder: `run` itself, `run/pipeline`, `run/dit/pipeline`, or the newest under `runs_root`."""
    if run is not None:
        run = Path(run)
        for candidate in (run, run / PIPELINE_DIR, run / "dit" / PIPELINE_DIR):
            if (candidate / "model_index.json").is_file():
                return candidate
        raise FileNotFoundError(f"no trained pipeline in {run}: expected {run}/dit/{PIPELINE_DIR}/model_index.json "
                                f"(written at the end of train_dit.py); train one with `bash train.sh`")
    found = sorted(Path(runs_root).glob(f"**/{PIPELINE_DIR}/model_index.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no trained run under {Path(runs_root).resolve()}: run `bash train.sh` first, or "
                                f"pass --run PATH to a run folder")
    return found[-1].parent


def load_pipeline(path: str | Path, scheduler: str = "ddpm", device: Optional[str] = None,
                  precision: str = "fp32") -> LatteVideoPipeline:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    pipe = LatteVideoPipeline.from_pretrained(str(path))
    pipe.scheduler = make_scheduler(scheduler)
    device = device or PartialState().device  # the accelerator accelerate would pick: CUDA, MPS, XPU or CPU
    # nn.Module.to: diffusers' ModelMixin.to warns about fp32-pinned modules on every dtype cast, and has none here.
    torch.nn.Module.to(pipe.transformer, device=device, dtype=PRECISIONS[precision])
    pipe.vae.to(device=device)  # the VAE decodes in float32: it is cheap, and its output is what users see
    return pipe


def save_videos(videos: torch.Tensor, out_dir: str | Path, names: Sequence[str], fps: float = 8.0) -> list[Path]:
    """uint8 videos (B, T, H, W, 3) -> one mp4 per video, written atomically; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [write_video(out_dir / f"{name}.mp4", video.numpy(), fps) for video, name in zip(videos, names)]


def save_grid(videos: torch.Tensor, path: str | Path, fps: float = 8.0, max_frames: int = 8) -> tuple[Path, Path]:
    """A PNG (one row per video, `max_frames` evenly spaced frames) and an animated GIF (videos side by side)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = videos.shape[1]
    frames = np.linspace(0, t - 1, min(max_frames, t)).round().astype(int)
    rows = [np.concatenate(list(video[frames].numpy()), axis=1) for video in videos]  # b x (H, n*W, 3)
    png = path.with_suffix(".png")
    _atomic_image_save(Image.fromarray(np.concatenate(rows, axis=0)), png)
    side_by_side = torch.cat(list(videos), dim=2).numpy()  # (T, H, B*W, 3)
    gif = path.with_suffix(".gif")
    images = [Image.fromarray(frame) for frame in side_by_side]
    _atomic_image_save(images[0], gif, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return png, gif


def _atomic_image_save(image: Image.Image, path: Path, **kwargs) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    image.save(tmp, format=path.suffix[1:].upper().replace("JPG", "JPEG"), **kwargs)
    tmp.replace(path)
