"""Dump a few clips of a data set to look at: one mp4 per clip and a PNG grid (rows = clips, columns = frames).

    python -m pipelines.data.preview --out outputs/preview [--config FILE] [key=value ...]   # DataConfig keys
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from ..common.config import load_config
from ..common.errors import exit_on_user_error
from ..common.files import atomic_write

from .clips import tensor_to_frames
from .config import DataConfig
from .factory import build_dataset
from .video_io import write_video


def save_preview(dataset, out_dir: str | Path, num_clips: int = 8, fps: float = 8.0,
                 frames_in_grid: int = 6) -> Path:
    """Write clips 0..num_clips-1 of `dataset` as mp4s plus `grid.png`; returns the grid's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = getattr(dataset, "class_names", [])
    rows = []
    for i in range(min(num_clips, len(dataset))):
        item = dataset[i]
        frames = tensor_to_frames(item["video"])  # (T, H, W, 3)
        label = names[item["label"]] if 0 <= item["label"] < len(names) else str(item["label"])
        write_video(out_dir / f"clip{i:03d}_{label}.mp4", frames, fps)
        picks = torch.linspace(0, frames.shape[0] - 1, min(frames_in_grid, frames.shape[0])).round().long()
        rows.append(torch.cat(list(frames[picks]), dim=1))  # (H, n * W, 3)
    return atomic_write(out_dir / "grid.png",
                        lambda tmp: Image.fromarray(torch.cat(rows, dim=0).numpy()).save(tmp, format="PNG"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a few clips of a data set as mp4s and a PNG grid.")
    parser.add_argument("--out", required=True, help="folder for the mp4s and grid.png")
    parser.add_argument("--num", type=int, default=8, help="number of clips")
    parser.add_argument("--config", type=Path, default=None, help="a YAML file of DataConfig keys")
    parser.add_argument("overrides", nargs="*", help="DataConfig key=value, e.g. name=ucf101 root=/data/UCF-101")
    args = parser.parse_args(argv)
    with exit_on_user_error("preview"):
        dataset = build_dataset(load_config(DataConfig, args.config, args.overrides))
    grid = save_preview(dataset, args.out, args.num)
    print(f"wrote {min(args.num, len(dataset))} clips and {grid}; {dataset.skip_summary()}")


if __name__ == "__main__":
    main()
