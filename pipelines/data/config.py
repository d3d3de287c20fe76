"""The `data:` section of every run config."""

from __future__ import annotations

from dataclasses import dataclass

from ..common.errors import ConfigError

from .clip_dataset import SHORT_VIDEO_POLICIES
from .clips import CLIP_SAMPLING
from .layouts import SPLITS

DATASET_NAMES = ("synthetic", "ucf101", "sky", "folder", "hf")


@dataclass
class DataConfig:
    """Which videos to train on and how clips are cut from them (see `build_dataset`).

    The number of classes is not configured: it is the built data set's `num_classes` (0 when unlabelled).
    """

    name: str = "synthetic"  # synthetic | ucf101 | sky | folder | hf (Hugging Face datasets)
    root: str = ""  # data set folder (ucf101, sky, folder)
    split: str = "all"  # train | test | all (ucf101 split lists; sky_train / sky_test); hf: its split (all: its only one)
    path: str = ""  # hf: a Hub id or a local folder (parquet, WebDataset tars, save_to_disk output)
    video_column: str = "video"  # hf: the column of video bytes or file paths (WebDataset tars: mp4)
    label_column: str = ""  # hf: the column of labels ("" = unlabelled; WebDataset tars: cls)
    streaming: bool = False  # hf: read while training (endless, each process its own shards) instead of indexing
    shuffle_buffer: int = 256  # hf streaming: rows shuffled in memory (with the shard order) for training
    fold: int = 1  # UCF-101 split list 1, 2 or 3
    num_frames: int = 17
    frame_interval: int = 1
    resolution: int = 64  # clips are resolution x resolution (short-side resize, centre crop)
    random_flip: bool = False
    clip_sampling: str = "random"  # random (training) | center | seeded (evaluation)
    short_videos: str = "skip"  # skip | reduce_interval
    index_dir: str = ""  # cache of data set indexes; "" = ~/.cache/leanlatte/data_index
    num_samples: int = 4096  # synthetic: data set size
    synthetic_classes: int = 16  # synthetic: number of classes, 1..16
    synthetic_detail: float = 0.0  # synthetic: texture and camera motion, 0..1 (towards real footage, for VAEs)
    seed: int = 0  # synthetic content and "center"/"seeded" clip sampling

    def __post_init__(self) -> None:
        choices = {"name": DATASET_NAMES, "clip_sampling": CLIP_SAMPLING, "short_videos": SHORT_VIDEO_POLICIES}
        if self.name != "hf":
            choices["split"] = SPLITS
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"data.{key} '{getattr(self, key)}' is not one of {', '.join(allowed)}")
        for key in ("num_frames", "frame_interval", "resolution", "num_samples", "fold", "synthetic_classes",
                    "shuffle_buffer"):
            if getattr(self, key) < 1:
                raise ConfigError(f"data.{key} must be >= 1, got {getattr(self, key)}")
        if not 0 <= self.synthetic_detail <= 1:
            raise ConfigError(f"data.synthetic_detail must be in [0, 1], got {self.synthetic_detail}")
        if self.name == "hf":
            if not self.path:
                raise ConfigError("data.path is needed for data.name=hf: a Hub id or a local data set folder")
        elif self.streaming:
            raise ConfigError("data.streaming is for data.name=hf; folder layouts are indexed, not streamed")
        if self.name not in ("synthetic", "hf") and not self.root:
            raise ConfigError(f"data.root is needed for data.name={self.name}: the folder holding the videos")
        if self.name == "synthetic" and self.random_flip:
            raise ConfigError("data.random_flip would swap the left- and right-moving classes of the synthetic "
                              "data set; set it to false for data.name=synthetic")

