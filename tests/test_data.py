"""The video readers and data set layouts, on small fixtures written here (PyAV avi/mp4/mkv, jpg folders) whose
frames encode their own numbers (tests/coded_videos.py)."""

import os
from pathlib import Path
import warnings
from dataclasses import dataclass, field

import av
import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.common.config import load_config
from pipelines.training.run_config import RunConfig as TrainingConfig
from pipelines.common.errors import ConfigError
from pipelines.data import (
    UCF101,
    DataConfig,
    SkippedVideoWarning,
    SkyTimelapse,
    VideoFolder,
    VideoReadError,
    build_dataset,
    probe,
    read_frames,
    write_video,
)
from pipelines.data import index as index_module
from pipelines.data.clips import clip_indices, fit_interval, frames_to_tensor
from tests.coded_videos import coded_frames, frame_ids, write_avi, write_jpgs, write_mkv


def write_truncated_avi(path, n: int = 40) -> None:
    write_avi(path, coded_frames(n), codec="mjpeg")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])


def small(root, **kwargs):
    """Data set arguments for the fixtures: 32x32 clips, index cache inside the test's tmp folder."""
    return dict(resolution=32, index_dir=root.parent / "index", **kwargs)


# ---------------------------------------------------------------------------------------------- video I/O


def test_write_video_roundtrip_and_selected_frames(tmp_path):
    frames = coded_frames(20)[:, :47, :33]  # odd sizes get padded for yuv420p
    path = write_video(tmp_path / "out" / "clip.mp4", frames, fps=12.5)
    assert sorted(os.listdir(tmp_path / "out")) == ["clip.mp4"]  # no temporary file left behind
    info = probe(path)
    assert (info.num_frames, info.fps) == (20, 12.5)
    read = read_frames(path, [7, 0, 7, 19])
    assert read.shape == (4, 48, 34, 3) and read.dtype == np.uint8
    assert frame_ids(torch.from_numpy(read).permute(3, 0, 1, 2).float() / 127.5 - 1) == [7, 0, 7, 19]
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        write_video(tmp_path / "bad.mp4", frames.astype(np.float32), fps=10)


def test_frame_count_without_header_count(tmp_path):
    write_mkv(tmp_path / "clip.mkv", coded_frames(13))
    with av.open(str(tmp_path / "clip.mkv")) as container:
        assert container.streams.video[0].frames == 0  # matroska stores no frame count
    assert probe(tmp_path / "clip.mkv").num_frames == 13


def test_truncated_and_corrupt_files(tmp_path):
    write_truncated_avi(tmp_path / "cut.avi")
    with pytest.raises(VideoReadError, match="truncated") as err:
        probe(tmp_path / "cut.avi")
    assert err.value.reason == "truncated"
    # Decoding stops after the last frame asked for, so the intact start still reads.
    assert read_frames(tmp_path / "cut.avi", [0, 3]).shape[0] == 2
    with pytest.raises(VideoReadError, match="ends before frame 35"):
        read_frames(tmp_path / "cut.avi", [35])
    (tmp_path / "noise.avi").write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(VideoReadError) as err:
        probe(tmp_path / "noise.avi")
    assert err.value.reason == "unreadable"


def test_crop_resize_and_flip():
    frames = np.zeros((2, 40, 80, 3), np.uint8)
    frames[:, :, 20:60] = 200  # the centre square
    frames[:, :, 40:60, 1] = 0  # its right half has no green
    video = frames_to_tensor(frames, resolution=20)
    assert video.shape == (3, 2, 20, 20)
    assert torch.allclose(video[0], torch.full_like(video[0], 200 / 127.5 - 1))  # the sides are cropped away
    assert video[1, :, :, :9].min() > 0.5 and video[1, :, :, 11:].max() < -0.9
    flipped = frames_to_tensor(frames, resolution=20, flip=True)
    assert torch.equal(flipped, video.flip(-1))


def test_clip_indices_and_short_videos():
    assert clip_indices(20, 4, 3, "center") == [5, 8, 11, 14]
    torch.manual_seed(0)
    starts = {clip_indices(20, 4, 3, "random")[0] for _ in range(200)}
    assert starts == set(range(11))  # every start from 0 to 20 - 10 is drawn
    assert fit_interval(10, 4, 3, reduce=False) == 3
    assert fit_interval(9, 4, 3, reduce=False) is None
    assert fit_interval(9, 4, 3, reduce=True) == 2
    assert fit_interval(3, 4, 3, reduce=True) is None


# ---------------------------------------------------------------------------------------------- layouts


def make_ucf(tmp_path, class_index=True):
    root = tmp_path / "UCF-101"
    videos = {}
    for c, name in enumerate(["Basketball", "ApplyEyeMakeup", "YoYo"]):
        for g in (1, 2):
            rel = f"{name}/v_{name}_g{g:02d}_c01.avi"
            write_avi(root / rel, coded_frames(12, start=40 * c + 20 * (g - 1)))
            videos[rel] = name
    broken = "Basketball/v_Basketball_g02_c02.avi"
    (root / broken).write_bytes(b"RIFF" + bytes(500))
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    if class_index:
        (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Basketball\n3 Knitting\n4 YoYo\n")
    train = [r for r in videos if "_g01_" in r] + ["YoYo/v_YoYo_g03_c01.avi"]  # the last one is not on disk
    (lists / "trainlist01.txt").write_text("".join(f"{r} 1\n" for r in train))
    (lists / "testlist01.txt").write_text("".join(f"{r}\n" for r in videos if "_g02_" in r) + broken + "\n")
    return tmp_path, videos


def test_ucf101_labels_and_splits(tmp_path):
    parent, videos = make_ucf(tmp_path)
    with pytest.warns(SkippedVideoWarning, match="v_Basketball_g02_c02.avi"):
        every = UCF101(parent, split="all", num_frames=4, clip_sampling="center", **small(parent))
    assert every.class_names == ["ApplyEyeMakeup", "Basketball", "Knitting", "YoYo"]  # from classInd.txt
    assert every.num_classes == 4 and len(every) == 6
    for i in range(len(every)):
        item = every[i]
        name = os.path.basename(os.path.dirname(item["path"]))
        assert item["label"] == every.class_names.index(name)
        assert item["video"].shape == (3, 4, 32, 32)
        assert -1 <= item["video"].min() and item["video"].max() <= 1
    with pytest.warns(SkippedVideoWarning, match="v_YoYo_g03_c01.avi: listed in .*trainlist01.txt"):
        train = UCF101(parent, split="train", num_frames=4, **small(parent))
    assert sorted(s.path.split("_")[-2] for s in train.samples) == ["g01"] * 3
    assert {r: [os.path.basename(p) for p in v] for r, v in train.skipped.items()} == {
        "missing": ["v_YoYo_g03_c01.avi"]}  # the broken video is in the other split
    with pytest.warns(SkippedVideoWarning):
        test = UCF101(parent, split="test", num_frames=4, **small(parent))
    assert sorted(s.path.split("_")[-2] for s in test.samples) == ["g02"] * 3
    assert [os.path.basename(p) for p in test.skipped["unreadable"]] == ["v_Basketball_g02_c02.avi"]
    with pytest.raises(FileNotFoundError, match="testlist02.txt"):
        UCF101(parent, split="test", fold=2, **small(parent))


def test_ucf101_without_class_index_uses_sorted_folders(tmp_path):
    parent, _ = make_ucf(tmp_path, class_index=False)
    with pytest.warns(SkippedVideoWarning):
        data = UCF101(parent / "UCF-101", num_frames=4, **small(parent))
    assert data.class_names == ["ApplyEyeMakeup", "Basketball", "YoYo"]
    assert {s.label for s in data.samples if "/YoYo/" in s.path} == {2}


def test_clip_frames_are_the_right_ones(tmp_path):
    write_avi(tmp_path / "data" / "clip.avi", coded_frames(30))
    root = tmp_path / "data"
    center = VideoFolder(root, num_frames=5, frame_interval=3, clip_sampling="center", **small(root))
    assert frame_ids(center[0]["video"]) == [8, 11, 14, 17, 20]
    seeded = VideoFolder(root, num_frames=5, frame_interval=3, clip_sampling="seeded", seed=3, **small(root))
    first = frame_ids(seeded[0]["video"])
    assert first == frame_ids(seeded[0]["video"])
    assert np.diff(first).tolist() == [3] * 4 and 0 <= first[0] <= 30 - 13
    torch.manual_seed(0)
    random = VideoFolder(root, num_frames=5, frame_interval=3, **small(root))
    starts = {frame_ids(random[0]["video"])[0] for _ in range(12)}
    assert len(starts) > 3


def test_sky_timelapse_frame_order_and_splits(tmp_path):
    root = tmp_path / "sky"
    for split, long_id, offset in (("sky_train", "a1B2", 0), ("sky_train", "c3D4", 100), ("sky_test", "e5F6", 200)):
        # Unpadded numbers: a name sort would put frame 10 before frame 2.
        write_jpgs(root / split / long_id / f"{long_id}_1", coded_frames(12, start=offset),
                   name=lambda i, lid=long_id: f"{lid}_1_frames_{i}.jpg")
    train = SkyTimelapse(root, split="train", num_frames=12, clip_sampling="center", **small(root))
    assert len(train) == 2 and train.num_classes == 0
    item = train[0]
    assert item["label"] == -1 and frame_ids(item["video"]) == list(range(12))
    assert len(SkyTimelapse(root, split="all", num_frames=12, **small(root))) == 3
    only_test = SkyTimelapse(root / "sky_test", num_frames=12, clip_sampling="center", **small(root))
    assert frame_ids(only_test[0]["video"]) == list(range(200, 212))


def test_folder_labels_from_class_folders(tmp_path):
    labelled = tmp_path / "labelled"
    write_avi(labelled / "dogs" / "a.avi", coded_frames(8))
    write_video(labelled / "cats" / "b.mp4", coded_frames(8), fps=25)
    write_jpgs(labelled / "cats" / "c", coded_frames(8))
    data = VideoFolder(labelled, num_frames=8, **small(labelled))
    assert data.class_names == ["cats", "dogs"]
    assert sorted((os.path.basename(s.path), s.label) for s in data.samples) == [("a.avi", 1), ("b.mp4", 0), ("c", 0)]
    flat = tmp_path / "flat"
    write_video(flat / "x.mp4", coded_frames(8), fps=25)
    write_jpgs(flat / "frames", coded_frames(8))
    data = VideoFolder(flat, num_frames=8, **small(flat))
    assert data.num_classes == 0 and [s.label for s in data.samples] == [-1, -1]


def test_bad_videos_are_skipped_once_each_and_counted(tmp_path):
    root = tmp_path / "mixed"
    write_avi(root / "good.avi", coded_frames(20))
    write_avi(root / "short.avi", coded_frames(5))
    write_truncated_avi(root / "cut.avi")
    (root / "noise.avi").write_bytes(np.random.default_rng(1).bytes(3000))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = VideoFolder(root, num_frames=8, **small(root))
    skipped = [str(w.message) for w in caught if issubclass(w.category, SkippedVideoWarning)]
    assert len(skipped) == 3
    assert {name: [os.path.basename(p) for p in paths] for name, paths in data.skipped.items()} == {
        "unreadable": ["noise.avi"], "truncated": ["cut.avi"], "too_short": ["short.avi"]}
    assert len(data) == 1 and data.num_skipped == 3
    assert data.skip_summary() == "skipped 3 of 4 videos: too_short 1, truncated 1, unreadable 1"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reduced = VideoFolder(root, num_frames=3, frame_interval=4, short_videos="reduce_interval",
                              clip_sampling="center", **small(root))
    assert sorted(str(w.message).split(":")[0] for w in caught) == ["skipped (truncated)", "skipped (unreadable)"]
    assert [frame_ids(reduced[i]["video"]) for i in range(len(reduced))] == [[5, 9, 13], [0, 2, 4]]


def test_frames_failing_at_read_time_are_replaced_and_counted(tmp_path):
    root = tmp_path / "frames"
    write_jpgs(root / "broken", coded_frames(6))
    (root / "broken" / "frame_2.jpg").write_bytes(b"\xff\xd8 not a jpeg")  # first and last frame still open
    write_jpgs(root / "fine", coded_frames(6, start=50))
    data = VideoFolder(root, num_frames=6, clip_sampling="center", **small(root))
    assert len(data) == 2
    with pytest.warns(SkippedVideoWarning, match="frame_2.jpg"):
        item = data[0]
    assert item["path"].endswith("fine") and frame_ids(item["video"]) == list(range(50, 56))
    assert [os.path.basename(p) for p in data.skipped["unreadable"]] == ["broken"]


def test_index_is_cached_and_rebuilt_when_the_folder_changes(tmp_path, monkeypatch):
    root = tmp_path / "videos"
    write_avi(root / "a.avi", coded_frames(10))
    write_avi(root / "b.avi", coded_frames(11))
    probed = []
    real_probe = index_module.probe
    monkeypatch.setattr(index_module, "probe", lambda p: probed.append(p) or real_probe(p))
    first = VideoFolder(root, num_frames=4, **small(root))
    assert len(probed) == 2 and not first.index_reused
    assert len(os.listdir(tmp_path / "index")) == 1
    second = VideoFolder(root, num_frames=9, **small(root))
    assert len(probed) == 2 and second.index_reused
    assert [s.num_frames for s in second.samples] == [10, 11]
    write_avi(root / "c.avi", coded_frames(12))
    third = VideoFolder(root, num_frames=4, **small(root))
    assert len(probed) == 5 and not third.index_reused and len(third) == 3


def test_empty_or_unusable_data_set_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no usable video in data set root .*empty.* expected video files"):
        VideoFolder(tmp_path / "empty", **small(tmp_path / "empty"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.avi").write_bytes(b"0" * 100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedVideoWarning)
        with pytest.raises(ValueError, match="unreadable 1"):
            VideoFolder(tmp_path / "bad", **small(tmp_path / "bad"))
    with pytest.raises(FileNotFoundError, match="not a folder"):
        VideoFolder(tmp_path / "nowhere")


def test_real_clips(test_data_dir, tmp_path):
    assert probe(test_data_dir / "bigbuckbunny.mp4").num_frames == 75
    assert probe(test_data_dir / "carphone.mp4").num_frames == 90
    data = VideoFolder(test_data_dir, num_frames=9, frame_interval=2, resolution=64, clip_sampling="center",
                       index_dir=tmp_path)
    assert sorted(os.path.basename(s.path) for s in data.samples) == ["bigbuckbunny.mp4", "carphone.mp4"]
    video = data[0]["video"]
    assert video.shape == (3, 9, 64, 64) and video.std() > 0.1


# ---------------------------------------------------------------------------------------------- config


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    max_steps: int = 10


def test_data_config_loads_as_a_section(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(f"data:\n  name: folder\n  root: {tmp_path / 'vids'}\n  num_frames: 9\nmax_steps: 3\n")
    cfg = load_config(RunConfig, path, ["data.frame_interval=3", "data.resolution=32"])
    assert (cfg.data.name, cfg.data.num_frames, cfg.data.frame_interval, cfg.max_steps) == ("folder", 9, 3, 3)
    write_avi(tmp_path / "vids" / "a.avi", coded_frames(25))
    cfg.data.index_dir = str(tmp_path / "index")
    data = build_dataset(cfg.data)
    assert isinstance(data, VideoFolder) and data[0]["video"].shape == (3, 9, 32, 32)
    assert load_config(RunConfig).data.name == "synthetic"
    with pytest.raises(ConfigError, match="num_frame'"):
        load_config(RunConfig, None, ["data.num_frame=9"])
    with pytest.raises(ConfigError, match="synthetic, ucf101, sky, folder"):
        load_config(RunConfig, None, ["data.name=kinetics"])
    with pytest.raises(ConfigError, match="data.root is needed"):
        load_config(RunConfig, None, ["data.name=ucf101"])
    with pytest.raises(ConfigError, match="random_flip"):
        load_config(RunConfig, None, ["data.random_flip=true"])
    # YAML 1.1's boolean words stay words on the command line, and boolean keys accept them
    assert load_config(TrainingConfig, None, ["mixed_precision=no"]).mixed_precision == "no"
    assert load_config(RunConfig, None, ["data.name=folder", "data.root=x", "data.random_flip=yes"]).data.random_flip


def test_build_synthetic_and_vae_frame_rule():
    data = build_dataset(DataConfig(num_samples=3, num_frames=5, resolution=16, synthetic_classes=4))
    assert len(data) == 3 and data.num_classes == 4 and data[2]["video"].shape == (3, 5, 16, 16)


def test_a_symlink_cycle_is_followed_once(tmp_path):
    root = tmp_path / "videos"
    write_video(root / "cls" / "clip.mp4", coded_frames(6), fps=8)
    os.symlink(root, root / "cls" / "loop")  # cls/loop/cls/loop/... without end
    os.symlink(root / "cls", root / "alias")  # a second name for one folder
    assert [s.path for s in index_module.scan_sources(root)] == [str(root / "alias" / "clip.mp4")]
    assert len(VideoFolder(root, num_frames=4, **small(root))) == 1


@pytest.mark.parametrize("name", ["concat:{0}|{0}", "subfile:,start,0,end,0,,:{0}", "http://127.0.0.1:9/clip.mp4"])
def test_a_path_is_opened_as_a_local_file_only(tmp_path, name):
    clip = write_video(tmp_path / "clip.mp4", coded_frames(4), fps=8)
    with pytest.raises(VideoReadError, match="cannot open video"):
        probe(name.format(clip))
    with pytest.raises(VideoReadError, match="cannot open video"):
        read_frames(name.format(clip), [0])


def test_frames_over_the_pixel_limit_are_skipped_and_counted(tmp_path, monkeypatch):
    root = tmp_path / "videos"
    write_video(root / "a" / "small.mp4", coded_frames(6)[:, :16, :16], fps=8)
    write_video(root / "a" / "large.mp4", coded_frames(6), fps=8)  # 48 x 64
    frames = root / "b" / "large_frames"
    frames.mkdir(parents=True)
    for i, frame in enumerate(coded_frames(6)):
        Image.fromarray(frame).save(frames / f"{i:04d}.png")
    monkeypatch.setattr("pipelines.data.video_io.MAX_FRAME_PIXELS", 16 * 16)
    with pytest.raises(VideoReadError, match="64x48, over the 256-pixel limit") as err:
        probe(root / "a" / "large.mp4")
    assert err.value.reason == "too_large"
    with pytest.warns(SkippedVideoWarning, match="over the 256-pixel limit"):
        data = VideoFolder(root, num_frames=4, **small(root))
    assert len(data) == 1 and data.skip_summary() == "skipped 2 of 3 videos: too_large 2"


def test_a_config_file_extends_another(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "base.yaml").write_text(
        "max_steps: 7\ndata:\n  name: folder\n  root: /videos\n  num_frames: 9\n")
    (tmp_path / "middle.yaml").write_text("extends: base/base.yaml\ndata:\n  num_frames: 5\n")
    (tmp_path / "top.yaml").write_text("extends: middle.yaml\nmax_steps: 3\n")
    cfg = load_config(RunConfig, tmp_path / "top.yaml", ["data.resolution=32"])  # paths relative to each file
    assert (cfg.max_steps, cfg.data.name, cfg.data.root, cfg.data.num_frames, cfg.data.resolution) == (
        3, "folder", "/videos", 5, 32)
    (tmp_path / "loop.yaml").write_text("extends: top.yaml\n")
    (tmp_path / "base" / "base.yaml").write_text("extends: ../loop.yaml\n")
    with pytest.raises(ConfigError, match="in a circle"):
        load_config(RunConfig, tmp_path / "top.yaml")
    (tmp_path / "lost.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml \\(extended by"):
        load_config(RunConfig, tmp_path / "lost.yaml")


def test_shipped_configs_that_extend_others_load():
    from pipelines.training.dit_trainer import DiTTrainConfig
    from pipelines.training.vae_trainer import VAETrainConfig

    root = Path(__file__).resolve().parents[1] / "configs"
    lean16 = load_config(VAETrainConfig, root / "vae" / "leanvae-16ch.yaml", ["data.root=/v"])
    lean4 = load_config(VAETrainConfig, root / "vae" / "leanvae-4ch.yaml", ["data.root=/v"])
    assert lean16.model["preset"] == "lean-16ch" and lean16.max_steps == lean4.max_steps == 700000
    sky = load_config(DiTTrainConfig, root / "dit" / "latte-xl2-sky.yaml")
    assert (sky.conditional, sky.guidance_scale, sky.data["name"], sky.model.preset) == (
        False, 1.0, "sky", "Latte-XL/2")
    for name, video in (("latte-xl2-ucf101", None), ("latte-xl2-sky", sky)):  # Latte+IMG: 8 images, batch 4
        video = video or load_config(DiTTrainConfig, root / "dit" / f"{name}.yaml")
        joint = load_config(DiTTrainConfig, root / "dit" / f"{name}-img.yaml")
        assert (joint.num_images, joint.batch_size, video.num_images) == (8, 4, 0)
        assert {**vars(joint), "num_images": 0, "batch_size": video.batch_size, "output_dir": video.output_dir} == vars(video)
