"""`build_dataset`: a `DataConfig` to the data set it describes."""

from __future__ import annotations

from accelerate import PartialState
from torch.utils.data import Dataset, IterableDataset

from .config import DataConfig
from .hub import HubVideoDataset, HubVideoStream
from .layouts import UCF101, SkyTimelapse, VideoFolder
from .synthetic import SyntheticVideoDataset


def build_dataset(cfg: DataConfig) -> Dataset | IterableDataset:
    """The data set of `cfg`; every one has `num_classes`, `class_names`, `skipped` and `skip_summary()`,
    and items {"video": float (3, T, H, W) in [-1, 1], "label": int (-1 when unlabelled), "path": str}.
    A streamed one (`data.streaming`) is an endless IterableDataset holding this process's part."""
    if cfg.name == "synthetic":
        return SyntheticVideoDataset(cfg.num_samples, num_frames=cfg.num_frames, resolution=cfg.resolution,
                                     seed=cfg.seed, num_classes=cfg.synthetic_classes,
                                     detail=cfg.synthetic_detail)
    common = dict(num_frames=cfg.num_frames, frame_interval=cfg.frame_interval, resolution=cfg.resolution,
                  random_flip=cfg.random_flip, clip_sampling=cfg.clip_sampling, short_videos=cfg.short_videos,
                  seed=cfg.seed, index_dir=cfg.index_dir or None)
    if cfg.name == "hf":
        hub = dict(split=cfg.split, video_column=cfg.video_column, label_column=cfg.label_column)
        del common["index_dir"]
        if cfg.streaming:
            state = PartialState()
            return HubVideoStream(cfg.path, **hub, **common, shuffle_buffer=cfg.shuffle_buffer,
                                  process_index=state.process_index, num_processes=state.num_processes)
        return HubVideoDataset(cfg.path, **hub, **common)
    if cfg.name == "ucf101":
        return UCF101(cfg.root, split=cfg.split, fold=cfg.fold, **common)
    if cfg.name == "sky":
        return SkyTimelapse(cfg.root, split=cfg.split, **common)
    return VideoFolder(cfg.root, **common)
