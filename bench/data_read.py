"""Data reading benchmark: clips per second from the same videos as a class-folder layout, as parquet rows of
video bytes and as WebDataset tar shards (indexed and streamed), one process, no DataLoader workers.

    python bench/data_read.py                       # 128 videos of the synthetic data set, 48 frames at 128 px
    python bench/data_read.py --videos 256 --shards 8 --epochs 2

The videos are H.264 mp4 files written from the built-in synthetic data set (16 classes), so the three forms
hold byte-identical videos. Each form is read for `--epochs` passes of 17-frame clips at 64 px (the default
run's clips): "index" is the start-up cost (probing every video; the folder layout's index is cached on disk
after its first build, which this benchmark does not reuse), "read" the clips themselves. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import io
import itertools
import tarfile
import tempfile
import time
import warnings
from pathlib import Path

from pipelines.data import DataConfig, SyntheticVideoDataset, build_dataset, tensor_to_frames, write_video

CLIP = dict(num_frames=17, frame_interval=1, resolution=64, clip_sampling="random")


def write_videos(root: Path, count: int, frames: int, size: int, shards: int) -> None:
    """The same `count` videos as root/folder/<class>/<i>.mp4, root/parquet/*.parquet and root/tars/*.tar."""
    import datasets

    source = SyntheticVideoDataset(count, num_frames=frames, resolution=size, seed=0)
    rows = []
    for i in range(count):
        item = source[i]
        name = source.class_names[item["label"]]
        path = write_video(root / "folder" / name / f"{i:05d}.mp4", tensor_to_frames(item["video"]), fps=8)
        rows.append((item["label"], path.read_bytes()))
    (root / "parquet").mkdir()
    for s in range(shards):
        part = rows[s::shards]
        datasets.Dataset.from_dict({"video": [r[1] for r in part], "label": [r[0] for r in part]}).to_parquet(
            str(root / "parquet" / f"train-{s:05d}.parquet"))
    (root / "tars").mkdir()
    for s in range(shards):
        with tarfile.open(root / "tars" / f"train-{s:05d}.tar", "w") as tar:
            for i, (label, data) in list(enumerate(rows))[s::shards]:
                for ext, payload in (("mp4", data), ("cls", str(label).encode())):
                    info = tarfile.TarInfo(f"{i:05d}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))


def configs(root: Path, index_dir: Path) -> dict[str, DataConfig]:
    tars = dict(name="hf", path=str(root / "tars"), split="train", video_column="mp4", label_column="cls")
    parquet = dict(name="hf", path=str(root / "parquet"), split="train", label_column="label")
    return {
        "class folders (mp4 files)": DataConfig(name="folder", root=str(root / "folder"), index_dir=str(index_dir),
                                                **CLIP),
        "parquet, indexed": DataConfig(**parquet, **CLIP),
        "parquet, streamed": DataConfig(**parquet, streaming=True, **CLIP),
        "WebDataset tars, indexed": DataConfig(**tars, **CLIP),
        "WebDataset tars, streamed": DataConfig(**tars, streaming=True, **CLIP),
    }


def measure(cfg: DataConfig, count: int, epochs: int) -> tuple[float, float]:
    """(seconds to build the data set, seconds to read `epochs` passes of its clips)."""
    start = time.perf_counter()
    data = build_dataset(cfg)
    built = time.perf_counter()
    if cfg.streaming:
        for _ in itertools.islice(iter(data), epochs * count):
            pass
    else:
        for _ in range(epochs):
            for i in range(len(data)):
                data[i]
    return built - start, time.perf_counter() - built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=128)
    parser.add_argument("--frames", type=int, default=48, help="frames per video")
    parser.add_argument("--size", type=int, default=128, help="video width and height")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_videos(root, args.videos, args.frames, args.size, args.shards)
        mib = sum(p.stat().st_size for p in (root / "folder").rglob("*.mp4")) / 2**20
        print(f"{args.videos} videos ({mib:.1f} MiB of mp4, {args.frames} frames at {args.size} px), {args.shards} "
              f"shards; {args.epochs} passes of {CLIP['num_frames']}-frame clips at {CLIP['resolution']} px\n")
        print("| data | index (s) | read (s) | clips/s | vs folders |")
        print("|---|---|---|---|---|")
        base = None
        for name, cfg in configs(root, root / "index").items():
            index_s, read_s = measure(cfg, args.videos, args.epochs)
            rate = args.epochs * args.videos / read_s
            base = base or rate
            print(f"| {name} | {index_s:.2f} | {read_s:.2f} | {rate:.1f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
