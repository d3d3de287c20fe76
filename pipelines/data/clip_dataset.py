"""The clip data set shared by every on-disk layout: index, skip bookkeeping, clip sampling and preprocessing.

Each item is a dict {"video": float (3, T, H, W) in [-1, 1], "label": int (-1 when unlabelled), "path": str}.
Layouts (`layouts.py`) only say which videos belong to the data set and what their labels are.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from ..common.errors import DataError, MissingFileError
from ..common.seeding import keyed_generator
from .clips import CLIP_SAMPLING, clip_indices, clip_span, fit_interval, frames_to_tensor
from .index import Source, load_or_build_index
from .video_io import VideoReadError, read_frames

SHORT_VIDEO_POLICIES = ("skip", "reduce_interval")
MAX_REPLACEMENTS = 16


class SkippedVideoWarning(UserWarning):
    """Emitted once for each video a data set leaves out (unreadable, truncated, too short, missing)."""


@dataclass(frozen=True)
class ClipSource:
    path: str  # what messages and items call the video (a file, or a row of a `datasets` data set)
    num_frames: int
    frame_interval: int
    label: int
    row: int = -1  # the row of a `datasets` data set


class ClipSamples(Dataset):
    """What every video data set shares: clip settings, the samples, skip bookkeeping, reading with replacement.

    Subclasses fill `samples` (through `_add`) and say how a sample's frames are read (`_read`); `source` names
    the data set in messages. Skipped videos warn once each (SkippedVideoWarning) and are listed in `skipped`
    (reason -> paths); `skip_summary()` gives the line to print at the end of a run. A video that fails only when
    read (in a worker) is replaced by the next usable one, and the item says so ("replaces": the failed reads,
    "" for a clip that stands for itself): evaluation sets keep their size, `collate_clips` drops the stand-ins
    from training batches (a neighbour's clip seen twice) and hands the failures on to be counted.
    """

    source = ""

    def __init__(self, num_frames: int = 17, frame_interval: int = 1, resolution: int = 256,
                 random_flip: bool = False, clip_sampling: str = "random", short_videos: str = "skip",
                 seed: int = 0):
        if num_frames < 1 or frame_interval < 1 or resolution < 1:
            raise ValueError(f"num_frames, frame_interval and resolution must be >= 1, got "
                             f"{num_frames}, {frame_interval}, {resolution}")
        if clip_sampling not in CLIP_SAMPLING:
            raise ValueError(f"clip_sampling '{clip_sampling}' is not one of {', '.join(CLIP_SAMPLING)}")
        if short_videos not in SHORT_VIDEO_POLICIES:
            raise ValueError(f"short_videos '{short_videos}' is not one of {', '.join(SHORT_VIDEO_POLICIES)}")
        self.num_frames, self.frame_interval, self.resolution = num_frames, frame_interval, resolution
        self.random_flip, self.clip_sampling, self.seed = random_flip, clip_sampling, seed
        self.short_videos = short_videos
        self.class_names: list[str] = []
        self.skipped: dict[str, list[str]] = {}
        self.samples: list[ClipSource] = []
        self._failed_here: dict[str, str] = {}  # path -> reason, of reads that failed in this process

    def _read(self, sample: ClipSource, indices: list[int]) -> np.ndarray:
        """uint8 frames (T, H, W, 3) of `sample` at `indices`; raises VideoReadError."""
        return read_frames(sample.path, indices)

    @property
    def num_classes(self) -> int:
        """Number of classes; 0 for an unlabelled data set."""
        return len(self.class_names)

    @property
    def num_skipped(self) -> int:
        return sum(len(paths) for paths in self.skipped.values())

    def skip_summary(self) -> str:
        """One line such as "skipped 3 of 20 videos: truncated 1, unreadable 2" (or "skipped no video")."""
        if not self.skipped:
            return "skipped no video"
        reasons = ", ".join(f"{reason} {len(paths)}" for reason, paths in sorted(self.skipped.items()))
        return f"skipped {self.num_skipped} of {self.num_skipped + len(self.samples)} videos: {reasons}"

    def _skip(self, reason: str, path: str, message: str) -> None:
        self.skipped.setdefault(reason, []).append(path)
        warnings.warn(f"skipped ({reason}): {message}", SkippedVideoWarning, stacklevel=3)

    def _add(self, path: str, available: int, label: int, row: int = -1) -> None:
        """Keep a video of `available` frames as a sample, or skip it as too short for a clip."""
        interval = fit_interval(available, self.num_frames, self.frame_interval, self.short_videos == "reduce_interval")
        if interval is None:
            self._skip("too_short", path, f"video {path} has {available} frames; a clip of {self.num_frames} frames "
                       f"at interval {self.frame_interval} needs {clip_span(self.num_frames, self.frame_interval)}")
        else:
            self.samples.append(ClipSource(path, available, interval, label, row))

    def _min_frames(self) -> int:
        return clip_span(self.num_frames, self.frame_interval if self.short_videos == "skip" else 1)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.samples):
            raise IndexError(f"index {index} out of range for a data set of {len(self.samples)} clips")
        failures = []
        for offset in range(min(MAX_REPLACEMENTS, len(self.samples))):
            sample = self.samples[(index + offset) % len(self.samples)]
            if sample.path in self._failed_here:
                failures.append(f"{self._failed_here[sample.path]}: {sample.path}")
                continue
            try:
                return self._load(sample, index) | {"replaces": "; ".join(failures)}
            except VideoReadError as err:
                self._failed_here[sample.path] = err.reason
                self._skip(err.reason, sample.path, str(err))
                failures.append(f"{err.reason}: {sample.path}")
        raise RuntimeError(f"{MAX_REPLACEMENTS} videos in a row from item {index} of '{self.source}' failed to read "
                           f"({self.skip_summary()})")

    def _load(self, sample: ClipSource, index: int) -> dict:
        generator = None if self.clip_sampling == "random" else keyed_generator(self.seed, index)
        frames = self._read(sample, clip_indices(sample.num_frames, self.num_frames, sample.frame_interval,
                                                 self.clip_sampling, generator))  # (T, H, W, 3)
        flip = self.random_flip and bool(torch.rand((), generator=generator) < 0.5)
        return {"video": frames_to_tensor(frames, self.resolution, flip), "label": sample.label, "path": sample.path}


def collate_clips(items: list[dict]) -> dict:
    """A training batch of clips without the stand-ins for videos that failed to read (see `ClipSamples`); their
    failures travel with the batch as "read_failures" (a list of "reason: path"). Items of other data sets are
    batched as they are."""
    kept = [item for item in items if not item.get("replaces")]
    if not kept:
        raise DataError(f"every clip of a batch failed to read ({'; '.join(i['replaces'] for i in items)})")
    batch = default_collate([{k: v for k, v in item.items() if k != "replaces"} for item in kept])
    return batch | {"read_failures": [item["replaces"] for item in items if item.get("replaces")]}


class VideoClipDataset(ClipSamples, ABC):
    """Clips of `num_frames` frames, `frame_interval` apart, from the videos a layout selects under `root`.

    clip_sampling: "random" (training: start and flip from torch's RNG, which DataLoader seeds per worker),
        "center" (the middle clip, flip from (seed, index)) or "seeded" (start and flip from (seed, index), the
        same every epoch: for evaluation sets such as FVD's real clips).
    short_videos: "skip" drops videos shorter than the clip span, "reduce_interval" reads them at the largest
        interval that fits (still skipping those shorter than `num_frames`).
    index_dir: where the cached index is kept (default `~/.cache/leanlatte/data_index`).
    """

    layout = "folder"
    expected = "video files or frame folders"

    def __init__(self, root: str | Path, num_frames: int = 17, frame_interval: int = 1, resolution: int = 256,
                 random_flip: bool = False, clip_sampling: str = "random", short_videos: str = "skip",
                 seed: int = 0, index_dir: str | Path | None = None):
        super().__init__(num_frames, frame_interval, resolution, random_flip, clip_sampling, short_videos, seed)
        self.root = Path(root)
        self.source = str(root)
        if not self.root.is_dir():
            raise MissingFileError(f"data set root '{root}' is not a folder; expected {self.expected}")
        sources = self.find_sources()
        index = load_or_build_index(self.root, sources, self.layout, index_dir)
        self.index_reused = index.reused
        readable = {entry.path: entry for entry in index.entries}
        failed = {path: (reason, message) for reason, items in index.failed.items() for path, message in items}
        for path, label in self.select([source.path for source in sources]):
            if path in failed:
                self._skip(failed[path][0], path, failed[path][1])
            else:
                self._add(path, readable[path].num_frames, label)
        if not self.samples:
            found = f"{len(sources)} candidates found" + (f"; {self.skip_summary()}" if self.skipped else "")
            raise DataError(f"no usable video in data set root '{self.root}' (layout '{self.layout}'): expected "
                             f"{self.expected}, with at least {self._min_frames()} frames each ({found})")

    @abstractmethod
    def find_sources(self) -> list[Source]:
        """The video files / frame folders under `root` to index."""

    @abstractmethod
    def select(self, paths: list[str]) -> list[tuple[str, int]]:
        """The paths (of all `find_sources`, readable or not) that belong to the data set, each with its label;
        sets `class_names`, and may `_skip("missing", ...)` what a split list names but the folder lacks."""
