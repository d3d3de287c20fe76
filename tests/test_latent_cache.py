"""The latent cache: contents, resume after a kill, mismatch refusal."""

import json

import pytest
import torch

from pipelines.data import DataConfig, build_dataset
from pipelines.training import latent_cache
from pipelines.training.latent_cache import CacheMismatch, LatentCacheConfig, LatentDataset, build_cache, check_cache
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
        calls.append(args[-1].name)
        if len(calls) == 3:
            args[-1].with_name(f".{args[-1].name}.tmp").write_bytes(b"half a shard")
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
    full, resumed = LatentDataset(tmp_path / "full"), LatentDataset(tmp_path / "killed")
    for i in range(len(full)):
        assert torch.equal(full[i]["mean"], resumed[i]["mean"])


def test_mismatched_cache_is_refused(vae_dir, tmp_path):
    manifest = json.loads(build_cache(config(vae_dir, tmp_path / "cache")).read_text())
    check_cache(manifest, vae_dir, DATA)  # the matching run is accepted
    with pytest.raises(CacheMismatch, match="made by the VAE"):
        check_cache(manifest, save_vae(tmp_path / "other", seed=1), DATA)
    with pytest.raises(CacheMismatch, match="num_frames: cache 9 vs run 13"):
        check_cache(manifest, vae_dir, DataConfig(**{**DATA.__dict__, "num_frames": 13}))


def test_command_line_errors_are_one_line(vae_dir, tmp_path, capsys):
    common = [f"output_dir={tmp_path / 'cache'}", "data.num_samples=4", "data.resolution=16"]
    with pytest.raises(SystemExit) as exit_info:
        latent_cache.main([f"vae={tmp_path / 'no-vae'}", *common])
    assert exit_info.value.code == 2 and "no VAE weights" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        latent_cache.main([f"vae={vae_dir}", *common, "data.num_frames=8"])
    assert exit_info.value.code == 2 and "use 5 or 9" in capsys.readouterr().err
