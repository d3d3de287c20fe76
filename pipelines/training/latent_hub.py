"""Latent caches as Hugging Face `datasets`: export a finished cache to share it, train from a shared one.

    python export_latents.py cache_dir=runs/default/latents output_dir=runs/default/latents_hf
    python export_latents.py ... push_to_hub=<user>/<name>        # then share it on the Hub
    python train_dit.py cache_dir=runs/default/latents_hf ...      # or cache_dir=<user>/<name>

One row per clip: "mean" (and "std") float32 (d, T', h, w) and "label". The cache's manifest (the VAE's
weights hash and config with its latent statistics, the clip settings, the classes) travels with it, as
`manifest.json` beside the data and in the data set's description, so `train_dit.py` refuses an exported
cache made by another VAE or with other clip settings exactly as it refuses a local one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from ..common.cli import parse_cli
from ..common.errors import ConfigError, MissingFileError, UserError, exit_on_user_error
from ..common.files import atomic_write
from .latent_cache import MANIFEST, LatentDataset, NonFiniteLatents

HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


@dataclass
class LatentExportConfig:
    cache_dir: str = "runs/default/latents"  # a finished latent cache (cache_latents.py)
    output_dir: str = "runs/default/latents_hf"  # the `save_to_disk` folder written
    push_to_hub: Optional[str] = None  # a Hub data set id to upload to as well (needs `huggingface-cli login`)
    private: bool = True  # for push_to_hub


def is_exported(path: str | Path) -> bool:
    """Whether `path` is a `save_to_disk` folder (what `export_latents` writes) rather than a cache's shards."""
    return Path(path, "state.json").is_file() or Path(path, "dataset_dict.json").is_file()


class ExportConflict(UserError):
    """An export pointed at its own cache, or at a folder that is not an earlier export of that cache."""


def check_export_target(cache_dir: str | Path, output_dir: str | Path, manifest: dict) -> None:
    """Refuse to write where the export would replace anything but an earlier export of this same cache."""
    out, source = Path(output_dir).resolve(), Path(cache_dir).resolve()
    if out == source or source in out.parents or out in source.parents:
        raise ExportConflict(f"output_dir={output_dir} is the cache at {cache_dir}, lies inside it or holds it: "
                             f"export to a folder of its own")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        earlier = json.loads((out / MANIFEST).read_text()) if is_exported(out) and (out / MANIFEST).is_file() else None
        if earlier != manifest:
            what = "an export of another cache" if earlier is not None else "not an export of a latent cache"
            raise ExportConflict(f"output_dir={output_dir} is not empty and {what}: the export replaces only its "
                                 f"own earlier export; choose a new or empty folder")


def export_latents(cfg: LatentExportConfig) -> Path:
    """Write the cache at `cfg.cache_dir` as a `datasets` folder (and push it); returns the folder."""
    import datasets

    cache = LatentDataset(cfg.cache_dir)
    manifest, shape = cache.manifest, tuple(cache.manifest["latent_shape"])
    check_export_target(cfg.cache_dir, cfg.output_dir, manifest)
    columns = {"mean": datasets.Array4D(shape, "float32"), "label": datasets.Value("int64")}
    if manifest["store_std"]:
        columns["std"] = datasets.Array4D(shape, "float32")

    def rows():
        for i in tqdm(range(len(cache)), desc="exporting latents", unit="clip"):
            item = cache[i]
            if not all(bool(torch.isfinite(item[key]).all()) for key in ("mean", "std") if key in item):
                raise NonFiniteLatents(f"clip {i} of the cache at {cfg.cache_dir} holds non-finite latents: "
                                       f"rebuild the cache (cache_latents.py overwrite=true)")
            yield {key: item[key].numpy() if torch.is_tensor(item[key]) else item[key] for key in columns}

    info = datasets.DatasetInfo(description=json.dumps(manifest))
    ds = datasets.Dataset.from_generator(rows, features=datasets.Features(columns), info=info)

    def write(tmp: Path) -> None:
        ds.save_to_disk(str(tmp))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))

    out = atomic_write(cfg.output_dir, write)
    if cfg.push_to_hub:
        from huggingface_hub import HfApi

        ds.push_to_hub(cfg.push_to_hub, private=cfg.private)
        HfApi().upload_file(path_or_fileobj=str(out / MANIFEST), path_in_repo=MANIFEST, repo_id=cfg.push_to_hub,
                            repo_type="dataset")
    return out


class HubLatentDataset(torch.utils.data.Dataset):
    """An exported latent cache (a `save_to_disk` folder or a Hub id), with `LatentDataset`'s items and manifest."""

    def __init__(self, source: str):
        import datasets

        self.root = source
        try:
            if is_exported(source):
                ds = datasets.load_from_disk(source)
                manifest = json.loads(ds.info.description or Path(source, MANIFEST).read_text())
            else:
                ds = datasets.load_dataset(source, split="train")
                manifest = json.loads(Path(_hub_file(source, MANIFEST)).read_text())
        except (FileNotFoundError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as err:
            raise MissingFileError(f"cache_dir={source}: neither a latent cache folder nor an exported one, and no "
                                   f"Hub data set of that id could be read ({err})") from None
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"]
        self.manifest, self.ds = manifest, ds.with_format("torch")
        if set(self.ds.column_names) < {"mean", "label"}:
            raise ConfigError(f"cache_dir={source} is not an exported latent cache: its columns are "
                              f"{', '.join(self.ds.column_names)}, expected mean, label (and std)")

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a latent cache of {len(self)} clips")
        row = self.ds[index]
        item = {"mean": row["mean"], "label": int(row["label"])}
        if "std" in row:
            item["std"] = row["std"]
        return item


def _hub_file(repo_id: str, name: str) -> str:
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id=repo_id, filename=name, repo_type="dataset")


def open_latents(cache_dir: str | Path):
    """The latent cache at `cache_dir`: the shards of `cache_latents.py`, an exported folder, or a Hub id."""
    source = str(cache_dir)
    if is_exported(source) or (not Path(source).exists() and HUB_ID.fullmatch(source)):
        return HubLatentDataset(source)
    return LatentDataset(source)


def main(argv: Optional[Sequence[str]] = None, prog: str = "export_latents.py") -> Path:
    with exit_on_user_error(prog):
        cfg = parse_cli(LatentExportConfig, argv, "Export a latent cache as a Hugging Face datasets folder.")
        out = export_latents(cfg)
    print(f"exported latent cache: {out}" + (f" (pushed to {cfg.push_to_hub})" if cfg.push_to_hub else ""))
    return out
