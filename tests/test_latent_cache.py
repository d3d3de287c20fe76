"""The latent cache: contents, resume after a kill, mismatch refusal."""

import json
import shutil

import pytest
import torch

from pipelines.common.locks import FolderInUse, hold_folder
from pipelines.data import DataConfig, build_dataset
from pipelines.training import latent_cache
from pipelines.training.cache_folder import CacheFolderConflict
from pipelines.training.latent_cache import (CacheMismatch, LatentCacheConfig, LatentDataset, NonFiniteLatents,
                                             build_cache, check_cache)
from vae import build_autoencoder, load_autoencoder

DATA = DataConfig(name="synthetic", num_samples=10, num_frames=9, resolution=16, synthetic_classes=4)


def save_vae(path, seed=0):
    torch.manual_seed(seed)
    build_autoencoder("lean-tiny").save_pretrained(path)
    return str(path)


@pytest.fixture
def vae_dir(tmp_path):
    return save_vae(tmp_path / "vae")


def config(vae_dir, out, **kw):
    return LatentCacheConfig(vae=vae_dir, output_dir=str(out), data=DATA, shard_size=4, batch_size=3, **kw)


def test_cache_holds_the_posterior_of_each_clip(vae_dir, tmp_path):
    manifest = json.loads(build_cache(config(vae_dir, tmp_path / "cache")).read_text())
    cached = LatentDataset(tmp_path / "cache")
    assert len(cached) == 10 and manifest["clips"] == 10 and len(manifest["shards"]) == 3
    assert manifest["latent_shape"] == [4, 3, 2, 2] and manifest["num_classes"] == 4
    assert manifest["vae"]["class"] == "LeanVAE" and manifest["vae"]["config"]["lc_dim"] == 8
    vae = load_autoencoder(vae_dir).eval()
    clips = build_dataset(DATA)
    for i in (0, 5, 9):
        x = clips[i]["video"].unsqueeze(0)
        with torch.no_grad():
            posterior = vae.encode(x).latent_dist
            recon = vae.decode(cached[i]["mean"].unsqueeze(0)).sample
            expected = vae.decode(posterior.mean).sample
        assert torch.allclose(cached[i]["mean"], posterior.mean[0], atol=1e-6)
        assert torch.allclose(cached[i]["std"], posterior.std[0], atol=1e-6)
        assert cached[i]["label"] == clips[i]["label"]
        assert (recon - expected).abs().max() < 1e-5  # decodes to the VAE's own reconstruction of the clip


def test_rerun_after_a_kill_skips_finished_shards(vae_dir, tmp_path, monkeypatch):
    build_cache(config(vae_dir, tmp_path / "full"))
    real_encode, calls = latent_cache._encode_shard, []

    def dies_on_third_shard(*args):
        path = args[-2]
        calls.append(path.name)
        if len(calls) == 3:
            path.with_name(f".{path.name}.tmp").write_bytes(b"half a shard")
            raise KeyboardInterrupt
        real_encode(*args)

    monkeypatch.setattr(latent_cache, "_encode_shard", dies_on_third_shard)
    with pytest.raises(KeyboardInterrupt):
        build_cache(config(vae_dir, tmp_path / "killed"))
    assert not (tmp_path / "killed" / "manifest.json").exists()
    with pytest.raises(FileNotFoundError, match="not a finished latent cache"):
        LatentDataset(tmp_path / "killed")
    calls.clear()
    build_cache(config(vae_dir, tmp_path / "killed"))
    assert calls == ["shard_00002.safetensors"]  # only the unfinished shard is redone
    assert not list((tmp_path / "killed").glob(".*.tmp"))  # the killed build's temporary was swept
    full, resumed = LatentDataset(tmp_path / "full"), LatentDataset(tmp_path / "killed")
    for i in range(len(full)):
        assert torch.equal(full[i]["mean"], resumed[i]["mean"])


def test_mismatched_cache_is_refused(vae_dir, tmp_path):
    manifest = json.loads(build_cache(config(vae_dir, tmp_path / "cache")).read_text())
    check_cache(manifest, vae_dir, {})  # a run that asks for nothing takes the cache's settings
    check_cache(manifest, vae_dir, {"name": "synthetic", "num_frames": 9, "resolution": 16})  # nor what matches
    with pytest.raises(CacheMismatch, match="made by the VAE"):
        check_cache(manifest, save_vae(tmp_path / "other", seed=1), {})
    with pytest.raises(CacheMismatch, match="num_frames: cache 9 vs run 13"):
        check_cache(manifest, vae_dir, {"num_frames": 13})
    with pytest.raises(CacheMismatch, match=r"data.random_flip is set when a latent cache is built"):
        check_cache(manifest, vae_dir, {"random_flip": True})


def test_command_line_errors_are_one_line(vae_dir, tmp_path, capsys):
    common = [f"output_dir={tmp_path / 'cache'}", "data.num_samples=4", "data.resolution=16"]
    with pytest.raises(SystemExit) as exit_info:
        latent_cache.main([f"vae={tmp_path / 'no-vae'}", *common])
    assert exit_info.value.code == 2 and "no VAE weights" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        latent_cache.main([f"vae={vae_dir}", *common, "data.num_frames=8"])
    assert exit_info.value.code == 2 and "use 5 or 9" in capsys.readouterr().err


def test_a_rerun_with_another_vae_or_settings_is_refused_and_overwrite_rebuilds(vae_dir, tmp_path):
    out = tmp_path / "cache"
    build_cache(config(vae_dir, out))
    other_vae = save_vae(tmp_path / "other", seed=1)
    before = {p.name: p.read_bytes() for p in out.glob("shard_*")}
    with pytest.raises(CacheFolderConflict, match=r"holds another latent cache \(vae_sha256: .* vs .*; cache vs "
                                                  r"this build\): overwrite=true rebuilds it"):
        build_cache(config(other_vae, out))
    with pytest.raises(CacheFolderConflict, match="shard_size: 4 vs 3"):
        build_cache(LatentCacheConfig(vae=vae_dir, output_dir=str(out), data=DATA, shard_size=3))
    with pytest.raises(CacheFolderConflict, match="passes: 1 vs 2"):
        build_cache(config(vae_dir, out, passes=2))
    assert {p.name: p.read_bytes() for p in out.glob("shard_*")} == before  # nothing touched
    manifest = json.loads(build_cache(config(other_vae, out, overwrite=True)).read_text())
    check_cache(manifest, other_vae, {})  # every shard is the new VAE's now
    vae = load_autoencoder(other_vae).eval()
    with torch.no_grad():
        expected = vae.encode(build_dataset(DATA)[9]["video"].unsqueeze(0)).latent_dist.mean[0]
    assert torch.allclose(LatentDataset(out)[9]["mean"], expected, atol=1e-6)


def test_a_cache_is_written_only_into_an_empty_folder_or_its_own(vae_dir, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("a user's file")
    with pytest.raises(CacheFolderConflict, match=r"holds files that are not a latent cache's \(notes.txt\)"):
        build_cache(config(vae_dir, out, overwrite=True))
    assert (out / "notes.txt").read_text() == "a user's file" and not list(out.glob("shard_*"))
    busy = hold_folder(tmp_path / "busy", "latent cache build")
    with pytest.raises(FolderInUse, match="in use by another latent cache build"):
        build_cache(config(vae_dir, tmp_path / "busy"))
    busy.release()


def test_a_vae_giving_non_finite_latents_writes_no_shard(vae_dir, tmp_path):
    vae = load_autoencoder(vae_dir)
    with torch.no_grad():
        next(vae.parameters()).fill_(float("nan"))
    vae.save_pretrained(tmp_path / "nan-vae")
    with pytest.raises(NonFiniteLatents, match="encodes 4 clip\\(s\\) of shard_00000.safetensors to non-finite"):
        build_cache(config(str(tmp_path / "nan-vae"), tmp_path / "cache"))
    assert not list((tmp_path / "cache").glob("shard_*")) and not (tmp_path / "cache" / "manifest.json").exists()


def test_a_cache_of_data_moved_elsewhere_is_the_same_cache(vae_dir, tmp_path, test_data_dir):
    for name in ("a", "b"):
        (tmp_path / name / "cls").mkdir(parents=True)
        shutil.copy(test_data_dir / "carphone.mp4", tmp_path / name / "cls" / "clip.mp4")
    data = DataConfig(name="folder", root=str(tmp_path / "a"), num_frames=5, resolution=16, clip_sampling="center")
    manifest = json.loads(build_cache(LatentCacheConfig(vae=vae_dir, output_dir=str(tmp_path / "cache"), data=data))
                          .read_text())
    moved = DataConfig(**{**data.__dict__, "root": str(tmp_path / "b")})
    check_cache(manifest, vae_dir, {"root": moved.root, "num_frames": 5})  # the data lies elsewhere: same cache
    again = LatentCacheConfig(vae=vae_dir, output_dir=str(tmp_path / "cache"), data=moved)
    assert build_cache(again).is_file()  # recognised as finished, not refused
    (tmp_path / "b" / "cls" / "clip.mp4").rename(tmp_path / "b" / "cls" / "renamed.mp4")
    with pytest.raises(CacheFolderConflict, match="clip_list_sha256"):
        build_cache(again)
