"""The real side of FVD: the real clip sets, their detector statistics cached on disk, and the two reference
points printed beside every FVD.

- `reference`: the protocol's real clips (StyleGAN-V: the first N usable videos, one seeded clip each), the set
  every FVD of a generated set is measured against.
- `disjoint`: the next N clips of the same plan. FVD(disjoint, reference) is the floor: what a perfect generator
  would score with this many clips.
- `reconstructed`: clips like `disjoint` but long enough for the VAE (1 + 4k frames), coded and decoded by the
  run's VAE. FVD(reconstructed, reference) is the VAE's ceiling: no DiT decoded by this VAE does better.

Statistics (float64 mean and biased covariance) are stored under sha256(clip list, protocol, detector file
sha256), so they are reused by any run on the same data and detector and recomputed when one of them changes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ..common.errors import ConfigError
from ..common.files import atomic_write, write_json
from ..data import DataConfig, build_dataset, read_frames
from ..data.clips import frames_to_tensor
from .metrics import feature_statistics, real_clip_plan


@dataclass
class ClipSet:
    """Real clips: `identity` names them exactly (JSON), `read()` yields float (3, T, H, W) in [-1, 1]."""

    identity: dict
    count: int
    read: Callable[[], Iterator[torch.Tensor]]


def synthetic_clips(seed: int, count: int, frames: int, resolution: int, classes: int) -> tuple[ClipSet, list]:
    """Held-out synthetic clips (seeds apart from the training set's) and their labels."""
    settings = dict(name="synthetic", num_samples=count, num_frames=frames, resolution=resolution,
                    synthetic_classes=classes or 16, seed=seed)
    data = build_dataset(DataConfig(**settings))
    clips = ClipSet(settings, count, lambda: (data[i]["video"] for i in range(count)))
    return clips, [data[i]["label"] for i in range(count)]


@dataclass
class RealVideos:
    """The plan of real clips of one data set: `reference` (the first `count` usable videos), `disjoint` (the
    next `count`), and `too_short`, how many of the videos were skipped for having fewer frames than a clip
    needs (`frames` x `stride`). `skipped` says which files could not be read at all."""

    reference: ClipSet
    disjoint: ClipSet
    too_short: int
    skipped: str


def real_videos(dataset: str, root: str, seed: int, resolution: int, frames: int, stride: int,
                count: int) -> RealVideos:
    """The real clips FVD compares against, of UCF-101 (all videos), SkyTimelapse (train split) or any folder
    of videos (flat, nested or in class folders; clips already cut to `frames` frames are used whole at stride
    1), in the protocol's order (StyleGAN-V: the first usable videos, one seeded clip each)."""
    split = "train" if dataset == "sky" else "all"
    data = build_dataset(DataConfig(name=dataset, root=root, split=split, num_frames=1, resolution=resolution,
                                    clip_sampling="center"))
    lengths = [s.num_frames for s in data.samples]
    try:
        plan = real_clip_plan(lengths, 2 * count, frames, stride, seed=seed)
    except ValueError as err:
        raise ConfigError(f"{root}: {err} ({len(lengths)} videos; {data.skip_summary()})") from None
    sets = []
    for part in (slice(0, count), slice(count, 2 * count)):
        clips = [(Path(data.samples[i].path), idx.tolist()) for i, idx in plan[part]]
        identity = dict(dataset=dataset, split=split, resolution=resolution, frames=frames, stride=stride, seed=seed,
                        clips=[[str(path.relative_to(root)), idx] for path, idx in clips])
        sets.append(ClipSet(identity, len(clips), partial(_read_clips, clips, resolution)))
    if not sets[1].count:
        raise ConfigError(f"{root}: {len(plan)} usable video(s) for clips of {frames} frames at stride {stride}; "
                          f"the floor needs at least 2 (one per side)")
    examined = lengths[:plan[-1][0] + 1] if len(plan) == 2 * count else lengths  # the plan stops when full
    too_short = sum(length < frames * stride for length in examined)
    return RealVideos(sets[0], sets[1], too_short, data.skip_summary())


def padded(clips: ClipSet, frames: int) -> ClipSet:
    """`clips` with each clip's last frame repeated up to `frames` frames (a VAE's valid length)."""
    def read() -> Iterator[torch.Tensor]:
        for clip in clips.read():  # (3, T, H, W)
            extra = frames - clip.shape[1]
            yield torch.cat([clip, clip[:, -1:].expand(-1, extra, -1, -1)], dim=1) if extra > 0 else clip
    return ClipSet({**clips.identity, "padded_to": frames}, clips.count, read)


def _read_clips(clips: list[tuple[Path, list[int]]], resolution: int) -> Iterator[torch.Tensor]:
    for path, idx in clips:
        yield frames_to_tensor(read_frames(path, idx), resolution)


def statistics_key(identity: dict, protocol: dict, detector_sha256: str) -> str:
    blob = json.dumps({"clips": identity, "protocol": protocol, "detector": detector_sha256}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class StatisticsCache:
    """Feature statistics on disk, one `<key>.npz` (+ `<key>.json`, what it was computed from) per clip set."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).expanduser()

    def statistics(self, key: str, features: Callable[[], np.ndarray],
                   describe: dict) -> tuple[np.ndarray, np.ndarray, bool]:
        """(mean, covariance, whether they came from the cache); computed from `features()` on a miss."""
        path = self.folder / f"{key}.npz"
        if path.is_file():
            with np.load(path) as stored:
                return stored["mu"], stored["sigma"], True
        mu, sigma = feature_statistics(features())
        self.folder.mkdir(parents=True, exist_ok=True)

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to a temporary name
                np.savez(f, mu=mu, sigma=sigma)

        atomic_write(path, save)
        write_json(self.folder / f"{key}.json", {**describe, "key": key})
        return mu, sigma, False
