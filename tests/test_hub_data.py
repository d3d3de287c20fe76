"""Video data through Hugging Face `datasets` (parquet with video bytes, WebDataset tar shards, streaming, split
by process) and latent caches exported as `datasets` folders, on small data sets written here.

Frame i of every video is one flat colour that encodes (video, frame), so a clip's pixels say which video and
frames were read.
"""

import io
import itertools
import json
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import train_dit
import train_vae
from conftest import reset_accelerate_state
from pipelines.common.errors import ConfigError, MissingFileError
from pipelines.data import DataConfig, SkippedVideoWarning, VideoFolder, build_dataset, write_video
from pipelines.data.hub import HubVideoStream
from pipelines.training.latent_cache import main as cache_main
from pipelines.training.latent_hub import HubLatentDataset, open_latents
from pipelines.training.latent_hub import main as export_main
from vae import build_autoencoder

CLASSES, PER_CLASS, FRAMES = ("circle", "square"), 3, 12
CLIP = dict(num_frames=5, frame_interval=2, resolution=16)


def video_frames(video: int) -> np.ndarray:
    frames = np.zeros((FRAMES, 16, 16, 3), np.uint8)
    frames[..., 0] = 20 * video + 10
    frames[..., 1] = (np.arange(FRAMES) * 20 + 10)[:, None, None]
    return frames


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """A class-folder layout, and the same videos as a parquet file and as two WebDataset tar shards (each shard
    with one corrupt member; the folder and parquet copies have one corrupt video too)."""
    import datasets

    root = tmp_path_factory.mktemp("hub")
    rows = []  # (class folder, file name, bytes), in the folder layout's order (class, then name)
    for label, name in enumerate(CLASSES):
        for k in range(PER_CLASS):
            path = write_video(root / "folder" / name / f"v{k}.mp4", video_frames(label * PER_CLASS + k), fps=8)
            rows.append((label, path.name, path.read_bytes()))
    (root / "folder" / "square" / "zz_broken.mp4").write_bytes(b"not a video")
    rows.append((1, "zz_broken.mp4", b"not a video"))
    (root / "parquet").mkdir()
    datasets.Dataset.from_dict({"video": [r[2] for r in rows], "label": [r[0] for r in rows]}).to_parquet(
        str(root / "parquet" / "train-00000.parquet"))
    (root / "tars").mkdir()
    good = rows[:-1]
    for shard in range(2):
        with tarfile.open(root / "tars" / f"train-{shard:05d}.tar", "w") as tar:
            members = [(f"{shard}_{i:02d}", r) for i, r in enumerate(good) if i % 2 == shard]
            members.append((f"{shard}_99", (0, "broken", b"broken bytes")))
            for key, (label, _, data) in members:
                for ext, payload in (("mp4", data), ("cls", str(label).encode()),
                                     ("json", json.dumps({"label": label}).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return root


def hub(root: Path, kind: str, **kw) -> DataConfig:
    columns = dict(video_column="mp4", label_column="cls") if kind == "tars" else dict(label_column="label")
    return DataConfig(name="hf", path=str(root / kind), **{"split": "train", **columns, **CLIP, **kw})


def quiet(build, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedVideoWarning)
        return build(*args)


def one_pass(stream: HubVideoStream) -> list[dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedVideoWarning)
        return list(stream.rows(endless=False))


def key(item: dict) -> tuple:
    """(video number, first frame number) read back from a clip's colours."""
    rgb = (item["video"][:, :, 8, 8] + 1) * 127.5  # (3, T)
    return round((rgb[0, 0].item() - 10) / 20), round((rgb[1, 0].item() - 10) / 20)


@pytest.mark.parametrize("sampling", ["center", "seeded"])
def test_parquet_rows_give_the_clips_and_labels_of_the_folder_layout(videos, sampling):
    folder = quiet(VideoFolder, videos / "folder", CLIP["num_frames"], CLIP["frame_interval"], CLIP["resolution"],
                   False, sampling)
    table = quiet(build_dataset, hub(videos, "parquet", clip_sampling=sampling))
    assert len(table) == len(folder) == 6 and table.num_classes == 2
    assert table.skip_summary() == folder.skip_summary() == "skipped 1 of 7 videos: unreadable 1"
    for i in range(len(folder)):
        assert table[i]["label"] == folder[i]["label"]
        assert torch.equal(table[i]["video"], folder[i]["video"])


def test_a_data_set_with_one_split_needs_no_split_and_several_ask_for_one(videos, tmp_path):
    import datasets

    named = quiet(build_dataset, hub(videos, "parquet", clip_sampling="center"))
    only = quiet(build_dataset, hub(videos, "parquet", clip_sampling="center", split="all"))  # the default: its one
    assert len(only) == len(named) == 6 and all(torch.equal(only[i]["video"], named[i]["video"]) for i in range(6))
    rows = datasets.load_dataset(str(videos / "parquet"), split="train")
    datasets.DatasetDict({"train": rows, "test": rows}).save_to_disk(str(tmp_path / "two"))
    two = dict(name="hf", path=str(tmp_path / "two"), label_column="label", **CLIP)
    with pytest.raises(ConfigError, match=r"has the splits train, test: choose one with data.split"):
        build_dataset(DataConfig(**two))
    with pytest.raises(ConfigError, match=r"has no split 'validation'; its splits are train, test"):
        build_dataset(DataConfig(**two, split="validation"))
    assert len(quiet(build_dataset, DataConfig(**two, split="test"))) == 6


@pytest.mark.parametrize("kind", ["parquet", "tars"])
def test_streaming_gives_the_clips_of_the_indexed_data_set(videos, kind):
    table = quiet(build_dataset, hub(videos, kind, clip_sampling="seeded"))
    stream = one_pass(build_dataset(hub(videos, kind, clip_sampling="seeded", streaming=True)))
    assert [key(item) for item in stream] == [key(table[i]) for i in range(len(table))]
    assert all(torch.equal(s["video"], table[i]["video"]) and s["label"] == table[i]["label"]
               for i, s in enumerate(stream))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["parquet", "tars"])
def test_two_processes_read_every_clip_once_and_count_the_corrupt_entries(videos, kind):
    parts = [build_dataset(hub(videos, kind, streaming=True)) for _ in range(2)]
    for rank, part in enumerate(parts):
        part.process_index, part.num_processes = rank, 2
    seen = [[key(item)[0] for item in one_pass(part)] for part in parts]
    assert sorted(seen[0] + seen[1]) == list(range(6)) and seen[0] and seen[1]
    whole = build_dataset(hub(videos, kind, streaming=True)).rows(endless=False)
    with pytest.warns(SkippedVideoWarning, match="unreadable"):
        list(whole)
    assert whole.skip_summary() == f"skipped unreadable {1 if kind == 'parquet' else 2}"


def test_a_resumed_stream_continues_where_it_stopped(videos):
    def stream():
        return build_dataset(hub(videos, "tars", streaming=True, shuffle_buffer=4, random_flip=True))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedVideoWarning)
        straight = iter(stream())
        reference = [next(straight) for _ in range(16)]  # nearly three epochs, reshuffled each
        resumed = stream()
        resumed.resume(batches=5, batch_size=2)
        rest = iter(resumed)
        after = [next(rest) for _ in range(6)]
    assert [key(x) for x in reference[:6]] != [key(x) for x in reference[6:12]]  # epochs are shuffled anew
    assert all(torch.equal(a["video"], b["video"]) for a, b in zip(after, reference[10:16]))


def test_a_resumed_stream_with_loader_workers_reads_the_same_clips(videos):
    def batches(skip: int) -> list[list[tuple]]:
        stream = build_dataset(hub(videos, "tars", streaming=True, shuffle_buffer=4))
        stream.resume(batches=skip, batch_size=2)
        loader = torch.utils.data.DataLoader(stream, batch_size=2, num_workers=2)
        return [[key({"video": v}) for v in batch["video"]] for batch in itertools.islice(loader, 8 - skip)]

    straight = batches(0)
    assert batches(4) == straight[4:]  # whole rounds of the workers consumed: exact
    # Otherwise the loader restarts its rounds at worker 0: the same batches, in another order within each round.
    resumed = batches(3)
    assert resumed != straight[3:]
    assert all(sorted(resumed[i:i + 2]) == sorted(straight[3 + i:5 + i]) for i in (0, 2))


def test_a_column_of_file_paths_reads_the_files_relative_to_the_data_set_folder(videos, tmp_path):
    import datasets

    files = sorted((videos / "folder").rglob("v*.mp4"))
    (tmp_path / "paths").mkdir()
    datasets.Dataset.from_dict({"file": [f"../{f.relative_to(videos)}" for f in files]}).to_parquet(
        str(tmp_path / "paths" / "train.parquet"))
    (tmp_path / "folder").symlink_to(videos / "folder")
    table = build_dataset(DataConfig(name="hf", path=str(tmp_path / "paths"), split="train", video_column="file",
                                     clip_sampling="center", **CLIP))
    assert table.num_classes == 0 and [key(table[i])[0] for i in range(len(table))] == list(range(6))
    assert table[0]["label"] == -1


def test_bad_hub_settings_are_explained(videos):
    with pytest.raises(ConfigError, match="data.path is needed"):
        DataConfig(name="hf")
    with pytest.raises(ConfigError, match="data.streaming is for data.name=hf"):
        DataConfig(name="folder", root="x", streaming=True)
    with pytest.raises(ConfigError, match="no column clip; its columns are mp4, cls, json"):
        build_dataset(hub(videos, "tars", video_column="clip"))
    with pytest.raises(MissingFileError, match="no data set there"):
        build_dataset(DataConfig(name="hf", path=str(videos / "nothing"), split="train"))


def test_train_vae_streams_tar_shards_and_resumes_exactly(videos, tmp_path, fresh_accelerate_state):
    data = [f"data.path={videos / 'tars'}", "data.name=hf", "data.split=train", "data.video_column=mp4",
            "data.streaming=true", "data.num_frames=5", "data.frame_interval=2", "data.resolution=16"]
    common = ["model.preset=lean-tiny", "batch_size=2", "val_clips=1", "stats_clips=2", "report_to=none",
              "checkpoint_every=2", "max_steps=4", *data]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedVideoWarning)
        straight = train_vae.main([*common, f"output_dir={tmp_path / 'a'}"])
        reset_accelerate_state()
        train_vae.main([*common, f"output_dir={tmp_path / 'b'}", "max_steps=2"])
        reset_accelerate_state()
        resumed = train_vae.main([*common, f"output_dir={tmp_path / 'b'}", "resume=latest"])
    assert straight["val"] == resumed["val"] and straight["latents_std"] == resumed["latents_std"]
    name = "vae/diffusion_pytorch_model.safetensors"
    a, b = load_file(tmp_path / "a" / name), load_file(tmp_path / "b" / name)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def latent_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("latents")
    torch.manual_seed(0)
    vae = build_autoencoder("lean-tiny")
    vae.register_to_config(latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[0.5, 2.0, 1.0, 0.25])
    vae.save_pretrained(root / "vae")
    data = ["data.num_samples=12", "data.num_frames=9", "data.resolution=16", "data.synthetic_classes=4"]
    cache_main([f"vae={root / 'vae'}", f"output_dir={root / 'latents'}", "shard_size=5", *data])
    export_main([f"cache_dir={root / 'latents'}", f"output_dir={root / 'exported'}"])
    return root, data


def test_an_exported_latent_cache_loads_back_equal(latent_cache):
    root, _ = latent_cache
    local, exported = open_latents(root / "latents"), open_latents(root / "exported")
    assert isinstance(exported, HubLatentDataset) and exported.manifest == local.manifest
    assert len(exported) == len(local) == 12
    for i in range(len(local)):
        a, b = local[i], exported[i]
        assert a["label"] == b["label"] and torch.equal(a["mean"], b["mean"]) and torch.equal(a["std"], b["std"])


def test_the_dit_trains_from_an_exported_cache_and_refuses_a_mismatched_one(latent_cache, tmp_path, capsys,
                                                                          fresh_accelerate_state):
    root, data = latent_cache
    common = [f"vae={root / 'vae'}", f"cache_dir={root / 'exported'}", "model.preset=Latte-tiny", "batch_size=4",
              "report_to=none", "sample_every=0", "sample_steps=2", "sample_classes=[0]", "max_steps=2", *data]
    summary = train_dit.main([*common, f"output_dir={tmp_path / 'run'}"])
    assert summary["step"] == 2 and np.isfinite(summary["logs"]["loss/total"])
    reset_accelerate_state()
    with pytest.raises(SystemExit) as exit_info:
        train_dit.main([*common, f"output_dir={tmp_path / 'other'}", "data.num_frames=13"])
    assert exit_info.value.code == 2 and "num_frames: cache 9 vs run 13" in capsys.readouterr().err
    other_vae = build_autoencoder("lean-tiny")
    with torch.no_grad():
        next(other_vae.parameters()).add_(0.1)
    other_vae.save_pretrained(tmp_path / "other_vae")
    reset_accelerate_state()
    with pytest.raises(SystemExit) as exit_info:
        train_dit.main([*common, f"output_dir={tmp_path / 'other'}", f"vae={tmp_path / 'other_vae'}"])
    assert exit_info.value.code == 2 and "the latent cache was made by the VAE" in capsys.readouterr().err


def test_exporting_an_unfinished_cache_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export_main([f"cache_dir={tmp_path}", f"output_dir={tmp_path / 'out'}"])
    assert exit_info.value.code == 2 and "not a finished latent cache" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_export_replaces_only_its_own_earlier_export(latent_cache, tmp_path, capsys):
    root, data = latent_cache
    shards = sorted((root / "latents").glob("shard_*"))
    for output_dir in (root / "latents", root / "latents" / "inside", root):  # the cache, in it, holding it
        with pytest.raises(SystemExit) as exit_info:
            export_main([f"cache_dir={root / 'latents'}", f"output_dir={output_dir}"])
        assert exit_info.value.code == 2 and "export to a folder of its own" in capsys.readouterr().err
    assert sorted((root / "latents").glob("shard_*")) == shards and not (root / "latents" / "inside").exists()
    users = tmp_path / "users"
    users.mkdir()
    (users / "thesis.tex").write_text("a user's file")
    with pytest.raises(SystemExit) as exit_info:
        export_main([f"cache_dir={root / 'latents'}", f"output_dir={users}"])
    assert exit_info.value.code == 2 and "not an export of a latent cache" in capsys.readouterr().err
    assert (users / "thesis.tex").read_text() == "a user's file"
    export_main([f"cache_dir={root / 'latents'}", f"output_dir={root / 'exported'}"])  # its own: replaced
    assert open_latents(root / "exported").manifest == open_latents(root / "latents").manifest
    other = tmp_path / "other"
    cache_main([f"vae={root / 'vae'}", f"output_dir={other}", "shard_size=4", *data])
    with pytest.raises(SystemExit) as exit_info:
        export_main([f"cache_dir={other}", f"output_dir={root / 'exported'}"])
    assert exit_info.value.code == 2 and "an export of another cache" in capsys.readouterr().err
