"""What a latent cache folder holds, and whether a build may write into it.

A cache's identity is everything that decides its bytes: the VAE's weights hash, the clip settings, the list of
clips (relative names, frame counts, labels), passes, shard size, whether stds are kept, the chunking and the
precision. A build writes it to `<output_dir>/cache.json` before its first shard, and every shard carries its
hash in its metadata. A re-run into the same folder continues only a cache of the same identity; anything else
is refused with the keys that differ, or, with `overwrite=true`, deleted first - but only files a cache build
made (shards carrying a build's metadata, the manifest, the identity), never anything else in the folder.

Paths (the data root, the VAE folder) are recorded but not part of the identity, so a cache moved to another
machine, or a data set mounted elsewhere, is still recognised.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from safetensors import safe_open

from ..common.errors import UserError
from ..common.files import read_json, remove, write_json
from ..common.locks import LOCK_NAME
from .run_folder import differences

IDENTITY = "cache.json"
MANIFEST = "manifest.json"
SHARD = re.compile(r"shard_\d{5}\.safetensors")


class CacheFolderConflict(UserError):
    """A cache folder that holds another cache, or files no cache build made."""


def identity_sha256(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def clip_list_sha256(dataset) -> str:
    """A digest of the clips a data set yields: names relative to its root, frame counts, intervals, labels."""
    digest = hashlib.sha256(f"{len(dataset)}\n".encode())
    root = str(getattr(dataset, "root", ""))
    for sample in getattr(dataset, "samples", []):  # a generated data set is fixed by its settings alone
        name = os.path.relpath(sample.path, root) if os.path.isabs(sample.path) else sample.path.removeprefix(root)
        digest.update(f"{name}|{sample.num_frames}|{sample.frame_interval}|{sample.label}\n".encode())
    return digest.hexdigest()


def shard_identity(path: Path) -> str | None:
    """The identity hash a shard was written under ("" for a shard of an older build), None if not a shard."""
    try:
        with safe_open(str(path), framework="pt") as shard:
            metadata = shard.metadata() or {}
    except Exception:  # noqa: BLE001 - unreadable: not a shard this project wrote
        return None
    return metadata.get("cache", "") if "clips" in metadata else None


def _foreign(out: Path) -> list[str]:
    """Names in `out` that no cache build writes."""
    return sorted(p.name for p in out.iterdir()
                  if p.name not in (IDENTITY, MANIFEST, LOCK_NAME) and not SHARD.fullmatch(p.name))


def _delete_cache(out: Path) -> None:
    shards = [p for p in out.iterdir() if SHARD.fullmatch(p.name)]
    unknown = [p.name for p in shards if shard_identity(p) is None]
    if unknown:
        raise CacheFolderConflict(f"overwrite=true deletes only what a cache build made, and {out / unknown[0]} is "
                                  f"not a shard of one: remove it yourself or choose another output_dir")
    for path in [*shards, out / MANIFEST, out / IDENTITY]:
        remove(path)


def prepare_cache_folder(out: Path, identity: dict, overwrite: bool) -> None:
    """Make `out` (locked by the caller) ready to hold the cache `identity`, or refuse."""
    foreign = _foreign(out)
    if foreign:
        raise CacheFolderConflict(f"output_dir {out} holds files that are not a latent cache's ({', '.join(foreign[:3])}"
                                  f"{' ...' if len(foreign) > 3 else ''}): choose an empty or new folder")
    earlier = read_json(out / IDENTITY)
    shards = sorted(p for p in out.iterdir() if SHARD.fullmatch(p.name))
    if earlier == identity:
        sha = identity_sha256(identity)
        strays = [p.name for p in shards if shard_identity(p) != sha]
        if strays and not overwrite:
            raise CacheFolderConflict(f"{out / strays[0]} was written by another build than {out / IDENTITY} "
                                      f"describes: rebuild with overwrite=true")
    if overwrite or (earlier == {} and not shards):
        _delete_cache(out)
    elif earlier != identity:
        why = (f"({differences(earlier, identity)}; cache vs this build)" if earlier
               else f"(shards without {IDENTITY}: an older build's)")
        raise CacheFolderConflict(f"output_dir {out} holds another latent cache {why}: overwrite=true rebuilds it "
                                  f"from scratch, or choose another output_dir")
    write_json(out / IDENTITY, identity)
