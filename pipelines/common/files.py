"""Atomic writes: a file or folder is written under a temporary name beside its target and renamed into place,
so a reader never sees half of it, whatever kills the writer. Temporary names start with "." and end in ".tmp",
which no reader of the project matches (checkpoints, shards, exports, manifests, videos); a run that owns a
folder sweeps the ones a killed run left there (`sweep_temporaries`).

Before the rename every file written is flushed to disk (fsync) and made readable as a normal file is (0644
under the usual umask: safetensors writes 0600); after it the folder holding the new name is flushed too, so
a power cut leaves the old version or the new one, never an empty file under the final name.

Hand-written rather than a library's because the guarantee needs the temporary file on the target's own file
system (a rename there is atomic), and folders (checkpoints, `save_pretrained` exports) need it too.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

TEMPORARY_GLOB = ".*.tmp"


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what `open(..., "w")` would have given


def temporary_path(path: str | Path, per_process: bool = True) -> Path:
    """Where `path` is written before it is renamed into place. `per_process=False` gives every process of a
    distributed run the same name (for a folder they fill together); otherwise two writers never share one."""
    path = Path(path)
    return path.with_name(f".{path.name}{f'.{os.getpid()}' if per_process else ''}.tmp")


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def sweep_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporaries (`.<name>[.<pid>].tmp`) that killed writers left directly in `folder`; call it
    only while holding the folder (a live writer's temporaries look the same). Returns what was removed."""
    found = sorted(Path(folder).glob(TEMPORARY_GLOB)) if Path(folder).is_dir() else []
    for path in found:
        remove(path)
    return found


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _settle(tmp: Path) -> None:
    """Give every file under `tmp` the normal mode and flush it (and its folders) to disk."""
    files = [tmp] if not tmp.is_dir() else [p for p in tmp.rglob("*") if p.is_file() and not p.is_symlink()]
    for file in files:
        os.chmod(file, FILE_MODE)
        _fsync(file)
    if tmp.is_dir():
        for folder in [tmp, *(p for p in tmp.rglob("*") if p.is_dir() and not p.is_symlink())]:
            _fsync(folder)


def commit(tmp: Path, path: str | Path) -> Path:
    """Rename the finished `tmp` onto `path`, durably. A folder replaces an existing one by a swap: the old one
    is moved aside, the new one renamed in, the old one deleted."""
    path = Path(path)
    _settle(tmp)
    if tmp.is_dir() and path.exists():
        old = temporary_path(path.with_name(path.name + ".old"))
        os.replace(path, old)
        os.replace(tmp, path)
        remove(old)
    else:
        os.replace(tmp, path)
    _fsync(path.parent)
    return path


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call `write(tmp)` to create the file or folder at a temporary path, then rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        write(tmp)
        return commit(tmp, path)
    finally:
        if tmp.exists():
            remove(tmp)


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | Path, payload: Any) -> Path:
    return write_text(path, json.dumps(payload, indent=2, default=str))


def read_json(path: str | Path) -> dict:
    """The JSON object at `path`, or {} when there is none yet."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}


def export_pretrained(model, path: str | Path) -> Path:
    """`model.save_pretrained` (a diffusers model or pipeline) into `path`, atomically."""
    return atomic_write(path, model.save_pretrained)
