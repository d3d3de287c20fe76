"""Encode a video data set once with a trained (or imported) VAE into memory-mapped safetensors shards.

    python cache_latents.py vae=runs/x/vae/vae output_dir=runs/x/latents [data.name=ucf101 data.root=...]
    accelerate launch cache_latents.py ...      # several processes, each encodes its share of shards

Any VAE `vae.load_autoencoder` loads works: a bundled model's folder or a diffusers AutoencoderKL (per frame).
Layout of `output_dir`: `shard_00000.safetensors` ... (the raw posterior `mean`, optionally `std`, and `label`
per clip), `cache.json` (the cache's identity, written first; see `cache_folder.py`) and `manifest.json` (the
VAE's config and weights hash, the data settings). The latent statistics are the VAE's own (`latents_mean/std`
in its config). Shards are written atomically, so a re-run after a kill skips every finished shard and redoes
only the missing ones - and only for a build of the same identity: a re-run with another VAE or other settings
is refused (`overwrite=true` rebuilds). The manifest is written last, so a cache without one is unfinished.
Clip `i` of pass `r` is cut with seed `data.seed + r`, so every shard's content is fixed by the config: an
interrupted-and-resumed cache equals an uninterrupted one. No shard holds a non-finite number.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
from accelerate import Accelerator
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from vae import VideoAutoencoder, load_autoencoder, model_name, vae_folder

from ..common.cli import parse_cli
from ..common.config import to_dict
from ..common.errors import ConfigError, MissingFileError, UserError, exit_on_user_error
from ..common.files import atomic_write, write_json
from ..common.locks import hold_folder
from ..data import DataConfig, build_dataset
from ..data.clip_dataset import collate_clips
from .accelerator import decide_on_main
from .cache_folder import MANIFEST, clip_list_sha256, identity_sha256, prepare_cache_folder, shard_identity

CLIP_KEYS = ("name", "split", "fold", "num_frames", "frame_interval", "resolution")
LOCATION_KEYS = ("root", "path")  # where the clips lie: a cache stays valid when the data moves


@dataclass
class LatentCacheConfig:
    vae: str = "runs/default/vae/vae"  # a saved VAE folder (see vae.load_autoencoder)
    output_dir: str = "runs/default/latents"
    data: DataConfig = field(default_factory=DataConfig)
    passes: int = 1  # clips cut per video: >1 stores several random clips / flips of each (augmentation)
    shard_size: int = 256  # clips per shard
    batch_size: int = 8
    num_workers: int = 0
    store_std: bool = True  # keep the posterior std so DiT training can sample latents (augmentation)
    chunk_size: Optional[int] = None  # causal-cache chunked encoding (latent frames per chunk)
    mixed_precision: str = "no"  # no | bf16 | fp16
    overwrite: bool = False  # rebuild from scratch a cache of another VAE or other settings in output_dir


def weights_sha256(vae_dir: str | Path) -> str:
    """Hash of the VAE's weight files (or of the one released checkpoint file, e.g. an IV-VAE .pth or a WF-VAE
    .ckpt): the identity a cache is checked against."""
    digest = hashlib.sha256()
    path = Path(vae_dir)
    if path.is_dir() and not (path / "config.json").is_file() and (path / "vae").is_dir():
        path = vae_folder(path)  # a diffusers pipeline folder: its VAE's weights, not the whole pipeline's
    files = [path] if path.is_file() else sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    if not files:
        raise MissingFileError(f"no VAE weights (*.safetensors) in {vae_dir}: expected a save_pretrained folder "
                               f"or a released checkpoint file")
    for file in files:
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def clip_settings(data: DataConfig) -> dict:
    """The data settings that decide what a cached latent is; a cache is only valid for these. Where the data
    lies (root, Hub path) is not among them: a cache stays valid on another machine."""
    settings = {key: getattr(data, key) for key in CLIP_KEYS}
    if data.name == "synthetic":
        settings.update(num_samples=data.num_samples, synthetic_classes=data.synthetic_classes, seed=data.seed,
                        synthetic_detail=data.synthetic_detail)
    if data.name == "hf":
        settings.update(video_column=data.video_column)
    return settings


class NonFiniteLatents(UserError):
    """A VAE that encodes clips to NaN or infinite latents."""


def cache_identity(cfg: LatentCacheConfig, vae_sha256: str, dataset) -> dict:
    """Everything that decides the cache's bytes (see cache_folder.py)."""
    return {"vae_sha256": vae_sha256, "data": clip_settings(cfg.data), "clip_list_sha256": clip_list_sha256(dataset),
            "passes": cfg.passes, "shard_size": cfg.shard_size, "store_std": cfg.store_std,
            "chunk_size": cfg.chunk_size, "mixed_precision": cfg.mixed_precision}


def _shard_path(out: Path, shard: int) -> Path:
    return out / f"shard_{shard:05d}.safetensors"


def _encode_shard(vae: VideoAutoencoder, dataset, indices: list[int], cfg: LatentCacheConfig, accelerator: Accelerator,
                  path: Path, identity: str) -> None:
    loader = DataLoader(Subset(dataset, indices), batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                        collate_fn=collate_clips)
    means, stds, labels, names, failures = [], [], [], [], []
    with torch.no_grad(), accelerator.autocast():
        for batch in loader:
            names += list(batch["path"])
            failures += batch["read_failures"]
            video = batch["video"].to(accelerator.device)  # (B, 3, T, H, W)
            posterior = vae.encode(video, chunk_size=cfg.chunk_size).latent_dist
            means.append(posterior.mean.float().cpu())  # (B, d, T', h, w)
            stds.append(posterior.std.float().cpu())
            labels.append(batch["label"].long())
    tensors = {"mean": torch.cat(means).contiguous(), "label": torch.cat(labels)}
    if cfg.store_std:
        tensors["std"] = torch.cat(stds).contiguous()
    finite = torch.stack([torch.isfinite(t).flatten(1).all(1) for k, t in tensors.items() if k != "label"]).all(0)
    if not bool(finite.all()):
        bad = [names[i] for i in (~finite).nonzero().flatten().tolist()]
        raise NonFiniteLatents(f"the VAE at {cfg.vae} encodes {len(bad)} clip(s) of {path.name} to non-finite latents "
                               f"({', '.join(bad[:3])}): nothing of that shard was written; is the VAE a diverged one?")
    metadata = {"clips": str(len(names)), "cache": identity, "read_failures": json.dumps(failures)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _load_vae(cfg: LatentCacheConfig, device: torch.device) -> VideoAutoencoder:
    try:
        vae = load_autoencoder(cfg.vae)
        vae.check_num_frames(cfg.data.num_frames)
        vae.check_frame_size(cfg.data.resolution, cfg.data.resolution)
    except FileNotFoundError as err:
        raise MissingFileError(f"vae={cfg.vae}: {err}") from None
    except ValueError as err:
        raise ConfigError(f"data settings for the VAE at {cfg.vae}: {err}") from None
    return vae.to(device).eval()


def _passes(cfg: LatentCacheConfig) -> list:
    """The data set once per pass. "random" clips would make a shard's content depend on when it was encoded,
    so they are drawn from (seed + pass, index) instead."""
    if cfg.data.streaming:
        raise ConfigError("cache_latents.py indexes the data set to split it into shards: set data.streaming=false "
                          "(streaming is for train_vae.py)")
    sampling = "seeded" if cfg.data.clip_sampling == "random" else cfg.data.clip_sampling
    return [build_dataset(dataclasses.replace(cfg.data, seed=cfg.data.seed + r, clip_sampling=sampling))
            for r in range(cfg.passes)]


def build_cache(cfg: LatentCacheConfig, accelerator: Optional[Accelerator] = None) -> Path:
    """Encode (the missing shards of) the data set; returns the manifest path."""
    accelerator = accelerator or Accelerator(mixed_precision=cfg.mixed_precision)
    out = Path(cfg.output_dir)
    vae_hash = weights_sha256(cfg.vae)
    vae = _load_vae(cfg, accelerator.device)
    with accelerator.main_process_first():
        passes = _passes(cfg)
    dataset = torch.utils.data.ConcatDataset(passes)
    identity = cache_identity(cfg, vae_hash, passes[0])
    held = []

    def claim() -> None:
        held.append(hold_folder(out, "latent cache build"))
        prepare_cache_folder(out, identity, cfg.overwrite)

    try:
        decide_on_main(accelerator, claim)
        _encode_missing(vae, dataset, cfg, accelerator, identity_sha256(identity))
        if accelerator.is_main_process:
            _write_manifest(cfg, vae, vae_hash, passes, identity)
        accelerator.wait_for_everyone()
    finally:
        for lock in held:
            lock.release()
    return out / MANIFEST


def _encode_missing(vae: VideoAutoencoder, dataset, cfg: LatentCacheConfig, accelerator: Accelerator,
                    identity: str) -> None:
    """Encode this process's shards that are not there yet (every process; ends when all have)."""
    out = Path(cfg.output_dir)
    shards = [list(range(s, min(s + cfg.shard_size, len(dataset)))) for s in range(0, len(dataset), cfg.shard_size)]
    mine = [s for s in range(len(shards)) if s % accelerator.num_processes == accelerator.process_index]
    todo = [s for s in mine if shard_identity(_shard_path(out, s)) != identity]
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc="caching latents", unit="shard",
               disable=not accelerator.is_local_main_process)
    for s in todo:
        _encode_shard(vae, dataset, shards[s], cfg, accelerator, _shard_path(out, s), identity)
        bar.update()
    bar.close()
    accelerator.wait_for_everyone()


def _write_manifest(cfg: LatentCacheConfig, vae: VideoAutoencoder, vae_hash: str, passes: list, identity: dict) -> None:
    """The manifest, last: a cache without one is unfinished. Paths are recorded for people, never compared."""
    out = Path(cfg.output_dir)
    paths = [_shard_path(out, s) for s in range(math.ceil(sum(len(p) for p in passes) / cfg.shard_size))]
    metadata = [_shard_metadata(path) for path in paths]
    clips, failed = sum(int(m["clips"]) for m in metadata), sum((json.loads(m["read_failures"]) for m in metadata), [])
    write_json(out / MANIFEST, {
        "vae": {"path": str(Path(cfg.vae).resolve()), "sha256": vae_hash, "class": model_name(vae),
                "config": dict(vae.config)},
        "source": {"root": str(Path(cfg.data.root).resolve()) if cfg.data.root else "", "path": cfg.data.path},
        "identity": identity, "cache_sha256": identity_sha256(identity),
        "data": clip_settings(cfg.data), "passes": cfg.passes, "clips": clips,
        "num_classes": passes[0].num_classes, "class_names": list(passes[0].class_names),
        "latent_shape": list(_latent_shape(paths[0])), "store_std": cfg.store_std,
        "shards": [p.name for p in paths], "skipped": passes[0].skip_summary(), "read_failures": failed,
        "config": to_dict(cfg),
    })


def _shard_metadata(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as shard:
        return shard.metadata()


def _latent_shape(path: Path) -> tuple[int, ...]:
    with safe_open(str(path), framework="pt") as shard:
        return tuple(shard.get_slice("mean").get_shape()[1:])


class LatentDataset(torch.utils.data.Dataset):
    """The cached latents: items {"mean": (d, T', h, w), "std": same or absent, "label": int}, memory-mapped."""

    def __init__(self, cache_dir: str | Path):
        self.root = Path(cache_dir)
        manifest = self.root / MANIFEST
        if not manifest.is_file():
            raise MissingFileError(f"{manifest} not found: {self.root} is not a finished latent cache "
                                   f"(run `python cache_latents.py` to build or finish it)")
        self.manifest = json.loads(manifest.read_text())
        self.shards = [self.root / name for name in self.manifest["shards"]]
        self.offsets, self.labels = [0], []  # labels read once: a slice read per item costs ~15 us
        for path in self.shards:
            with safe_open(str(path), framework="pt") as shard:
                self.labels += shard.get_tensor("label").tolist()
            self.offsets.append(len(self.labels))
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
        item = {"mean": shard.get_slice("mean")[row], "label": self.labels[index]}
        if self.manifest["store_std"]:
            item["std"] = shard.get_slice("std")[row]
        return item


class CacheMismatch(UserError, ValueError):
    """A latent cache made by another VAE or with other clip settings than the run asks for."""


def check_cache(manifest: dict, vae_dir: str | Path, expected: dict) -> None:
    """Refuse a cache made by other VAE weights than `vae_dir`'s, or whose clip settings differ from `expected`
    (DataConfig keys a run asks for; the others are the cache's own). Where the data lies is not checked, and a
    setting the cache does not record is decided when it is built, not by the run that reads it."""
    if manifest["vae"]["sha256"] != weights_sha256(vae_dir):
        raise CacheMismatch(
            f"the latent cache was made by the VAE at {manifest['vae']['path']} (sha256 "
            f"{manifest['vae']['sha256'][:12]}...), not by {vae_dir}: leave out vae= to use the cache's own, or "
            f"build a cache with this VAE (in another folder, or overwrite=true to replace it)")
    recorded = manifest["data"]
    decided = [key for key in expected if key not in recorded and key not in LOCATION_KEYS]
    if decided:
        raise CacheMismatch(f"data.{decided[0]} is set when a latent cache is built (cache_latents.py), not by the "
                            f"run that reads it; this cache records {', '.join(recorded)}")
    diffs = {k: (recorded[k], v) for k, v in expected.items() if k in recorded and recorded[k] != v}
    if diffs:
        listed = ", ".join(f"{k}: cache {a!r} vs run {b!r}" for k, (a, b) in diffs.items())
        raise CacheMismatch(f"the latent cache was made with other clip settings ({listed}); leave them out to "
                            f"take the cache's, or build a cache with these (overwrite=true replaces it)")


def main(argv: Optional[Sequence[str]] = None, prog: str = "cache_latents.py") -> Path:
    with exit_on_user_error(prog):
        cfg = parse_cli(LatentCacheConfig, argv, "Encode a video data set into a latent cache with a trained VAE.")
        path = build_cache(cfg)
    print(f"latent cache: {path}")
    return path


if __name__ == "__main__":
    main()
