"""Encode a video data set once with a trained LeanVAE into memory-mapped safetensors shards.

    python -m pipelines.latent_cache vae=runs/x/vae output_dir=runs/x/latents [data.name=ucf101 data.root=...]
    accelerate launch -m pipelines.latent_cache ...      # several processes, each encodes its share of shards

Layout of `output_dir`: `shard_00000.safetensors` ... (posterior `mean`, optionally `std`, and `label` per
clip) and `manifest.json` (the VAE's config and weights hash, the data settings, latent statistics and the
scaling factor derived from them). Shards are written atomically (temp file + rename), so a re-run after a
kill skips every finished shard and redoes only the missing ones; the manifest is written last, so a cache
without one is unfinished. Clip `i` of pass `r` is cut with seed `data.seed + r`, so every shard's content is
fixed by the config: an interrupted-and-resumed cache equals an uninterrupted one.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
from accelerate import Accelerator
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from vae import LeanVAE

from .config import load_config, to_dict
from .data import DataConfig, build_dataset, validate_num_frames_for_vae

MANIFEST = "manifest.json"
CLIP_KEYS = ("name", "root", "split", "fold", "num_frames", "frame_interval", "resolution")


@dataclass
class LatentCacheConfig:
    vae: str = "runs/default/vae"  # a LeanVAE folder (save_pretrained)
    output_dir: str = "runs/default/latents"
    data: DataConfig = field(default_factory=DataConfig)
    passes: int = 1  # clips cut per video: >1 stores several random clips / flips of each (augmentation)
    shard_size: int = 256  # clips per shard
    batch_size: int = 8
    num_workers: int = 0
    store_std: bool = True  # keep the posterior std so DiT training can sample latents (augmentation)
    chunk_size: Optional[int] = None  # causal-cache chunked encoding (latent frames per chunk)
    mixed_precision: str = "no"  # no | bf16 | fp16


def weights_sha256(vae_dir: str | Path) -> str:
    """Hash of the VAE's weight files: the identity a cache is checked against."""
    digest = hashlib.sha256()
    files = sorted(Path(vae_dir).glob("*.safetensors")) or sorted(Path(vae_dir).glob("*.bin"))
    if not files:
        raise FileNotFoundError(f"no VAE weights (*.safetensors) in {vae_dir}: expected a LeanVAE.save_pretrained folder")
    for file in files:
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def clip_settings(data: DataConfig) -> dict:
    """The data settings that decide what a cached latent is; a cache is only valid for these."""
    settings = {key: getattr(data, key) for key in CLIP_KEYS}
    settings["root"] = str(Path(settings["root"]).resolve()) if settings["root"] else ""
    if data.name == "synthetic":
        settings.update(num_samples=data.num_samples, synthetic_classes=data.synthetic_classes, seed=data.seed)
    return settings


def _shard_path(out: Path, shard: int) -> Path:
    return out / f"shard_{shard:05d}.safetensors"


def _encode_shard(vae: LeanVAE, dataset, indices: list[int], cfg: LatentCacheConfig, accelerator: Accelerator,
                  path: Path) -> None:
    loader = DataLoader(Subset(dataset, indices), batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    means, stds, labels = [], [], []
    with torch.no_grad(), accelerator.autocast():
        for batch in loader:
            video = batch["video"].to(accelerator.device)  # (B, 3, T, H, W)
            posterior = vae.encode(video, chunk_size=cfg.chunk_size).latent_dist
            means.append(posterior.mean.float().cpu())  # (B, d, T', h, w)
            stds.append(posterior.std.float().cpu())
            labels.append(batch["label"].long())
    tensors = {"mean": torch.cat(means).contiguous(), "label": torch.cat(labels)}
    if cfg.store_std:
        tensors["std"] = torch.cat(stds).contiguous()
    tmp = path.with_name(f".tmp-{path.name}")
    save_file(tensors, str(tmp), metadata={"clips": str(len(indices))})
    os.replace(tmp, path)  # a kill before this line leaves only a .tmp file, which is ignored and redone


def _statistics(paths: Sequence[Path]) -> dict:
    """Per-channel and global mean / std of the cached posterior means, in float64."""
    total, total_sq, count = 0.0, 0.0, 0
    channel_sum = channel_sq = None
    for path in paths:
        with safe_open(str(path), framework="pt") as shard:
            mean = shard.get_tensor("mean").double()  # (N, d, T', h, w)
        per_channel = mean.transpose(0, 1).flatten(1)  # (d, N*T'*h*w)
        channel_sum = per_channel.sum(1) if channel_sum is None else channel_sum + per_channel.sum(1)
        channel_sq = per_channel.pow(2).sum(1) if channel_sq is None else channel_sq + per_channel.pow(2).sum(1)
        total, total_sq, count = total + float(mean.sum()), total_sq + float(mean.pow(2).sum()), count + mean.numel()
    mu = total / count
    std = max(total_sq / count - mu**2, 1e-12) ** 0.5
    per_n = count / channel_sum.numel()
    channel_mu = channel_sum / per_n
    channel_std = (channel_sq / per_n - channel_mu.pow(2)).clamp_min(1e-12).sqrt()
    return {"mean": mu, "std": std, "channel_mean": channel_mu.tolist(), "channel_std": channel_std.tolist(),
            "scaling_factor": 1.0 / std}


def build_cache(cfg: LatentCacheConfig, accelerator: Optional[Accelerator] = None) -> Path:
    """Encode (the missing shards of) the data set; returns the manifest path."""
    accelerator = accelerator or Accelerator(mixed_precision=cfg.mixed_precision)
    out = Path(cfg.output_dir)
    vae_hash = weights_sha256(cfg.vae)
    vae = LeanVAE.from_pretrained(cfg.vae).to(accelerator.device).eval()
    validate_num_frames_for_vae(cfg.data.num_frames)
    # "random" clips would make a shard's content depend on when it was encoded: draw them from (seed, index).
    sampling = "seeded" if cfg.data.clip_sampling == "random" else cfg.data.clip_sampling
    passes = []
    with accelerator.main_process_first():
        for r in range(cfg.passes):
            passes.append(build_dataset(dataclasses.replace(cfg.data, seed=cfg.data.seed + r, clip_sampling=sampling)))
    dataset = torch.utils.data.ConcatDataset(passes)
    clips = len(dataset)
    shards = [list(range(s, min(s + cfg.shard_size, clips))) for s in range(0, clips, cfg.shard_size)]
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    mine = [s for s in range(len(shards)) if s % accelerator.num_processes == accelerator.process_index]
    todo = [s for s in mine if not _shard_path(out, s).is_file()]
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc="caching latents", unit="shard",
               disable=not accelerator.is_local_main_process)
    for s in todo:
        _encode_shard(vae, dataset, shards[s], cfg, accelerator, _shard_path(out, s))
        bar.update()
    bar.close()
    accelerator.wait_for_everyone()
    manifest_path = out / MANIFEST
    if accelerator.is_main_process:
        paths = [_shard_path(out, s) for s in range(len(shards))]
        manifest = {
            "vae": {"path": str(Path(cfg.vae).resolve()), "sha256": vae_hash, "config": dict(vae.config)},
            "data": clip_settings(cfg.data),
            "passes": cfg.passes,
            "clips": clips,
            "num_classes": passes[0].num_classes,
            "class_names": list(passes[0].class_names),
            "latent_shape": list(_latent_shape(paths[0])),
            "store_std": cfg.store_std,
            "shards": [p.name for p in paths],
            "stats": _statistics(paths),
            "skipped": passes[0].skip_summary(),
            "config": to_dict(cfg),
        }
        tmp = manifest_path.with_name(f".tmp-{MANIFEST}")
        tmp.write_text(json.dumps(manifest, indent=2))
        os.replace(tmp, manifest_path)
    accelerator.wait_for_everyone()
    return manifest_path


def _latent_shape(path: Path) -> tuple[int, ...]:
    with safe_open(str(path), framework="pt") as shard:
        return tuple(shard.get_slice("mean").get_shape()[1:])


class LatentDataset(torch.utils.data.Dataset):
    """The cached latents: items {"mean": (d, T', h, w), "std": same or absent, "label": int}, memory-mapped."""

    def __init__(self, cache_dir: str | Path):
        self.root = Path(cache_dir)
        manifest = self.root / MANIFEST
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest} not found: {self.root} is not a finished latent cache "
                                    f"(run `python -m pipelines.latent_cache` to build or finish it)")
        self.manifest = json.loads(manifest.read_text())
        self.shards = [self.root / name for name in self.manifest["shards"]]
        self.offsets = [0]
        for path in self.shards:
            with safe_open(str(path), framework="pt") as shard:
                self.offsets.append(self.offsets[-1] + shard.get_slice("label").get_shape()[0])
        self._open: dict[int, object] = {}

    def __len__(self) -> int:
        return self.offsets[-1]

    def _shard(self, s: int):
        if s not in self._open:  # opened lazily per process: handles are not shared with DataLoader workers
            self._open[s] = safe_open(str(self.shards[s]), framework="pt")
        return self._open[s]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a latent cache of {len(self)} clips")
        s = bisect.bisect_right(self.offsets, index) - 1
        row = index - self.offsets[s]
        shard = self._shard(s)
        item = {"mean": shard.get_slice("mean")[row], "label": int(shard.get_slice("label")[row])}
        if self.manifest["store_std"]:
            item["std"] = shard.get_slice("std")[row]
        return item


class CacheMismatch(ValueError):
    """A latent cache made by another VAE or with other clip settings than the run asks for."""


def check_cache(manifest: dict, vae_dir: str | Path, data: DataConfig) -> None:
    """Refuse a cache whose VAE weights or clip settings differ from what the run is configured with."""
    expected = weights_sha256(vae_dir)
    if manifest["vae"]["sha256"] != expected:
        raise CacheMismatch(
            f"the latent cache was made by the VAE at {manifest['vae']['path']} (sha256 "
            f"{manifest['vae']['sha256'][:12]}...), not by {vae_dir} ({expected[:12]}...): rebuild the cache with "
            f"this VAE or point the run at the VAE that made it")
    wanted = clip_settings(data)
    diffs = {k: (manifest["data"].get(k), v) for k, v in wanted.items() if manifest["data"].get(k) != v}
    if diffs:
        listed = ", ".join(f"{k}: cache {a!r} vs run {b!r}" for k, (a, b) in diffs.items())
        raise CacheMismatch(f"the latent cache was made with other clip settings ({listed}); rebuild it or "
                            f"change the run's data settings to match")


def main(argv: Optional[Sequence[str]] = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Encode a video data set into a latent cache with a trained VAE.")
    parser.add_argument("--config", type=Path, default=None, help="YAML with the keys of LatentCacheConfig")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    cfg = load_config(LatentCacheConfig, args.config, args.overrides)
    path = build_cache(cfg)
    print(f"latent cache: {path}")


if __name__ == "__main__":
    main()
