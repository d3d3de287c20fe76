"""Video data: readers for UCF-101, SkyTimelapse and plain folders, a built-in synthetic data set, video I/O.

Every data set yields {"video": float (3, T, H, W) in [-1, 1], "label": int (-1 when unlabelled), "path": str}
and has `num_classes`, `class_names`, `skipped` (reason -> paths) and `skip_summary()`.
`python -m pipelines.data.preview` (or `pipelines.data.preview.save_preview`) writes a few clips to look at.
"""

from .clip_dataset import SkippedVideoWarning, VideoClipDataset
from .clips import frames_to_tensor, tensor_to_frames
from .config import DATASET_NAMES, DataConfig
from .factory import build_dataset
from .layouts import UCF101, SkyTimelapse, VideoFolder
from .synthetic import CLASS_NAMES, SyntheticVideoDataset
from .video_io import VideoInfo, VideoReadError, probe, read_frames, write_video

__all__ = [
    "CLASS_NAMES",
    "DATASET_NAMES",
    "DataConfig",
    "SkippedVideoWarning",
    "SkyTimelapse",
    "SyntheticVideoDataset",
    "UCF101",
    "VideoClipDataset",
    "VideoFolder",
    "VideoInfo",
    "VideoReadError",
    "build_dataset",
    "frames_to_tensor",
    "probe",
    "read_frames",
    "tensor_to_frames",
    "write_video",
]
