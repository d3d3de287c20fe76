"""Dump a few clips of a data set to look at: one mp4 per clip and a grid (PNG rows of frames, a GIF side by side).

    python -m pipelines.data.preview out=outputs/preview [num_clips=8] [--config FILE] [data.key=value ...]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..common.cli import parse_cli
from ..common.errors import ConfigError, exit_on_user_error
from .clips import tensor_to_frames
from .config import DataConfig
from .factory import build_dataset
from .media import save_grid
from .video_io import write_video


@dataclass
class PreviewConfig:
    out: str = ""  # folder for the mp4s and the grid
    num_clips: int = 8
    fps: float = 8.0
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        if not self.out:
            raise ConfigError("out=<folder> is needed: where the clips and the grid go")


def save_preview(dataset, out_dir: str | Path, num_clips: int = 8, fps: float = 8.0) -> Path:
    """Write clips 0..num_clips-1 of `dataset` as mp4s plus `grid.png` / `grid.gif`; returns the PNG's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = getattr(dataset, "class_names", [])
    clips = []
    for i in range(min(num_clips, len(dataset))):
        item = dataset[i]
        frames = tensor_to_frames(item["video"])  # (T, H, W, 3) uint8
        label = names[item["label"]] if 0 <= item["label"] < len(names) else str(item["label"])
        write_video(out_dir / f"clip{i:03d}_{label}.mp4", frames, fps)
        clips.append(frames)
    return save_grid(torch.stack(clips), out_dir / "grid", fps)[0]  # (N, T, H, W, 3)


def main(argv: list[str] | None = None) -> None:
    with exit_on_user_error("preview"):
        cfg = parse_cli(PreviewConfig, argv, description=__doc__, flags={"out": "folder for the mp4s and grid",
                                                                          "num_clips": "number of clips"})
        dataset = build_dataset(cfg.data)
    grid = save_preview(dataset, cfg.out, cfg.num_clips, cfg.fps)
    print(f"wrote {min(cfg.num_clips, len(dataset))} clips and {grid}; {dataset.skip_summary()}")


if __name__ == "__main__":
    main()
