"""Video data sets through Hugging Face `datasets`: a Hub id, or a local folder of parquet files, of WebDataset
tar shards (`<key>.mp4` + `<key>.cls` / `.json`) or of `save_to_disk` output.

    data.name=hf data.path=<Hub id or folder> data.split=train data.video_column=video data.label_column=label
    data.streaming=true      # read while training: nothing is downloaded or indexed up front

Videos (bytes, or file paths relative to a local folder) are decoded by the project's PyAV reader and cut into
clips by the same rules as the folder layouts; corrupt or too-short rows are skipped with a warning and counted.
`datasets` finds the rows and shards; decoding stays ours because its own video feature needs torchcodec and
would bypass the clip rules.
"""

from __future__ import annotations

import copy
import itertools
import os
import warnings
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info
from tqdm.auto import tqdm

from ..common.errors import ConfigError, DataError, MissingFileError
from ..common.seeding import keyed_generator
from .clip_dataset import ClipSamples, ClipSource, SkippedVideoWarning
from .clips import clip_indices, fit_interval, frames_to_tensor
from .video_io import VideoReadError, probe_video, read_video_frames


def _one_split(ds, path: str, split: str):
    """`ds` narrowed to `split` when it holds several; split "all" takes a data set's only split, as users of
    `datasets` expect of a folder of parquet files, and asks to choose when there are several."""
    import datasets

    if not isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return ds
    if split == "all" and len(ds) != 1:
        raise ConfigError(f"data.path={path} has the splits {', '.join(ds)}: choose one with data.split")
    if split != "all" and split not in ds:
        raise ConfigError(f"data.path={path} has no split '{split}'; its splits are {', '.join(ds)}")
    return ds[split] if split != "all" else next(iter(ds.values()))


def open_hub_dataset(path: str, split: str, streaming: bool, video_column: str, label_column: str = ""):
    """The `datasets` data set at `path` (its `split`), with the video column as raw bytes / paths and only the
    columns used; and its class names ([] when unlabelled, or when a stream's integer labels are not named)."""
    import datasets

    try:
        if Path(path, "dataset_dict.json").is_file() or Path(path, "state.json").is_file():  # save_to_disk output
            ds = _one_split(datasets.load_from_disk(path), path, split)
            ds = ds.to_iterable_dataset() if streaming else ds
        else:
            ds = datasets.load_dataset(path, split=None if split == "all" else split, streaming=streaming)
            ds = _one_split(ds, path, split)
    except (FileNotFoundError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as err:
        raise MissingFileError(f"data.path={path}: no data set there ({err})") from None
    except (KeyError, ValueError) as err:
        raise ConfigError(f"data.path={path} data.split={split}: {err}") from None
    columns = [c for c in (video_column, label_column) if c]
    missing = [c for c in columns if c not in (ds.column_names or [])]
    if missing:
        raise ConfigError(f"data.path={path} has no column {', '.join(missing)}; its columns are "
                          f"{', '.join(ds.column_names or [])} (set data.video_column / data.label_column)")
    ds = ds.select_columns(columns)
    if isinstance(ds.features[video_column], datasets.Video):
        ds = ds.cast_column(video_column, datasets.Video(decode=False))
    names: list[str] = []
    label = ds.features.get(label_column) if label_column else None
    if isinstance(label, datasets.ClassLabel):
        names = list(label.names)
    elif label is not None and label.dtype == "string":
        if streaming:
            raise ConfigError(f"data.label_column={label_column} holds strings: a stream cannot list its classes "
                              f"ahead; cast it to a ClassLabel (datasets' class_encode_column) or stream integers")
        ds = ds.class_encode_column(label_column)
        names = list(ds.features[label_column].names)
    elif label is not None and not streaming:
        names = [str(i) for i in range(max(ds[label_column]) + 1)]
    return ds, names


def _video(value, root: str) -> tuple[bytes | str, str]:
    """A row's video as what the reader takes (bytes or a path) and a name for messages."""
    if isinstance(value, dict):  # datasets' Video(decode=False): {"bytes", "path"}
        if value.get("bytes"):
            return value["bytes"], value.get("path") or "video bytes"
        value = value.get("path") or ""
    if isinstance(value, bytes):
        return value, "video bytes"
    if isinstance(value, str) and value:
        return (value if os.path.isabs(value) or not os.path.isdir(root) else os.path.join(root, value)), value
    raise VideoReadError(f"no video in the row (got {type(value).__name__})")


class HubVideoDataset(ClipSamples):
    """A `datasets` data set read as clips (see `ClipSamples` for the clip settings); every row is probed once at
    start (demuxed, not decoded) to count frames and skip what cannot be used. Items are those of the folder
    layouts, with "path" = "<data.path>[<row>]"."""

    def __init__(self, path: str, split: str = "train", video_column: str = "video", label_column: str = "",
                 **clip_settings):
        super().__init__(**clip_settings)
        self.root, self.source = path, f"{path} ({split})"
        self.video_column, self.label_column = video_column, label_column
        self.ds, self.class_names = open_hub_dataset(path, split, False, video_column, label_column)
        for row in tqdm(range(len(self.ds)), desc=f"indexing {path}", unit="video", disable=len(self.ds) < 500):
            self._index_row(row)
        if not self.samples:
            raise DataError(f"no usable video in {self.source}: {len(self.ds)} rows, none with {self._min_frames()} "
                            f"readable frames ({self.skip_summary()})")

    def _index_row(self, row: int) -> None:
        name = f"{self.root}[{row}]"
        item = self.ds[row]  # one read of the row: its video and its label
        try:
            video, _ = _video(item[self.video_column], self.root)
            available = probe_video(video, name).num_frames
        except VideoReadError as err:
            self._skip(err.reason, name, str(err))
            return
        self._add(name, available, int(item[self.label_column]) if self.label_column else -1, row)

    def _read(self, sample: ClipSource, indices: list[int]):
        video, _ = _video(self.ds[sample.row][self.video_column], self.root)
        return read_video_frames(video, indices, sample.path)


class HubVideoStream(IterableDataset):
    """A `datasets` stream read as clips, endlessly (epoch after epoch), each process its own part.

    Process `process_index` of `num_processes` reads its share of the shards (`split_dataset_by_node`), and
    DataLoader workers split that share again (datasets does it per worker): no clip is read twice in an epoch.
    Training streams ("random" clips) are shuffled by shard order and a `shuffle_buffer` of rows, reseeded each
    epoch. Clip starts and flips are keyed by (seed, epoch, process, worker, clip number), so the stream is the same
    in every run: `resume(batches, batch_size)` fast-forwards past what an interrupted run consumed, probing
    the skipped rows without decoding them, and the resumed run sees exactly the clips that would have followed
    (with W DataLoader workers, in the same order when the batches consumed are a multiple of W; otherwise the
    loader starts its round at worker 0 and the batches of each round of W come in another order).
    Rows that cannot be used are skipped with a warning and counted in `skipped` (per process and worker).
    """

    def __init__(self, path: str, split: str = "train", video_column: str = "video", label_column: str = "",
                 num_frames: int = 17, frame_interval: int = 1, resolution: int = 256, random_flip: bool = False,
                 clip_sampling: str = "random", short_videos: str = "skip", seed: int = 0, shuffle_buffer: int = 256,
                 process_index: int = 0, num_processes: int = 1):
        self.ds, self.class_names = open_hub_dataset(path, split, True, video_column, label_column)
        self.root, self.source = path, f"{path} ({split}, streaming)"
        self.video_column, self.label_column = video_column, label_column
        self.num_frames, self.frame_interval, self.resolution = num_frames, frame_interval, resolution
        self.random_flip, self.clip_sampling, self.short_videos = random_flip, clip_sampling, short_videos
        self.seed = seed
        self.shuffle_buffer, self.process_index, self.num_processes = shuffle_buffer, process_index, num_processes
        self.skipped: dict[str, list[str]] = {}
        self._skip_batches, self._batch_size = 0, 1
        self.endless = True

    def rows(self, skip: int = 0, take: int | None = None, endless: bool = True,
             every_process: bool = False) -> "HubVideoStream":
        """A copy reading only rows [skip, skip + take) of the stream (before shuffling and splitting), endlessly
        or once, split between the processes or read whole by each (`every_process`): training and held-out
        validation clips from one stream."""
        part = copy.copy(self)
        part.ds = self.ds.skip(skip) if skip else self.ds
        part.ds = part.ds.take(take) if take is not None else part.ds
        part.skipped, part.endless, part._skip_batches = {}, endless, 0
        if every_process:
            part.process_index, part.num_processes = 0, 1
        return part

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def skip_summary(self) -> str:
        if not self.skipped:
            return "skipped no video"
        return "skipped " + ", ".join(f"{reason} {len(paths)}" for reason, paths in sorted(self.skipped.items()))

    def resume(self, batches: int, batch_size: int) -> None:
        """Start after the first `batches` batches of `batch_size` clips this process's loader yielded."""
        self._skip_batches, self._batch_size = batches, batch_size

    def _epoch_rows(self, epoch: int):
        from datasets.distributed import split_dataset_by_node

        ds = self.ds
        if self.clip_sampling == "random":
            ds = ds.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer)
            ds.set_epoch(epoch)
        return split_dataset_by_node(ds, rank=self.process_index, world_size=self.num_processes)

    def _clips_to_skip(self) -> int:
        # DataLoader takes batches from its workers in turn: worker w made batches w, w + W, w + 2W, ...
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        return max(0, -(-(self._skip_batches - worker) // workers)) * self._batch_size

    def __iter__(self) -> Iterator[dict]:
        to_skip = self._clips_to_skip()
        for epoch in itertools.count():
            row, index = 0, 0  # rows read and clips made in this epoch
            for item in self._epoch_rows(epoch):
                clip = self._clip(item, epoch, row, index, decode=to_skip == 0)
                row += 1
                if clip is None:
                    continue
                index += 1
                if to_skip:
                    to_skip -= 1
                    continue
                yield clip
            if index == 0 and epoch == 0:
                if row == 0 and get_worker_info() is not None:
                    return  # a DataLoader worker left without shards: the other workers read them all
                raise DataError(f"no usable video in {self.source} for process {self.process_index} "
                                f"({self.skip_summary()})")
            if not self.endless:
                return

    def _clip(self, item: dict, epoch: int, row: int, index: int, decode: bool) -> dict | bool | None:
        """Clip `index` of the epoch from one row (True instead when not `decode`d), or None when the row is
        skipped."""
        name = f"{self.root}[epoch {epoch}, row {row} of process {self.process_index}]"
        try:
            video, label_name = _video(item[self.video_column], self.root)
            name = f"{self.root}:{label_name}" if label_name != "video bytes" else name
            available = probe_video(video, name).num_frames
            interval = fit_interval(available, self.num_frames, self.frame_interval,
                                    self.short_videos == "reduce_interval")
            if interval is None:
                raise VideoReadError(f"video {name} has {available} frames, too few for a clip of {self.num_frames} "
                                     f"frames at interval {self.frame_interval}", "too_short")
            if not decode:
                return True
            # Evaluation clips ("center", "seeded") are keyed as the indexed data set keys its item `index`.
            worker = get_worker_info().id if get_worker_info() else 0
            keys = (epoch, self.process_index, worker, index) if self.clip_sampling == "random" else (index,)
            generator = keyed_generator(self.seed, *keys)
            indices = clip_indices(available, self.num_frames, interval, self.clip_sampling, generator)
            frames = read_video_frames(video, indices, name)  # (T, H, W, 3)
        except VideoReadError as err:
            self.skipped.setdefault(err.reason, []).append(name)
            warnings.warn(f"skipped ({err.reason}): {err}", SkippedVideoWarning, stacklevel=2)
            return None
        flip = self.random_flip and bool(torch.rand((), generator=generator) < 0.5)
        label = int(item[self.label_column]) if self.label_column else -1
        return {"video": frames_to_tensor(frames, self.resolution, flip), "label": label, "path": name}
