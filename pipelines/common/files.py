"""Atomic writes: a file or folder is written under a temporary name beside its target and renamed into place,
so a reader never sees half of it, whatever kills the writer. Temporary names start with "." and end in ".tmp",
which no reader of the project matches (checkpoints, shards, exports, manifests, videos).

Hand-written rather than a library's because the guarantee needs the temporary file on the target's own file
system (a rename there is atomic), and folders (checkpoints, `save_pretrained` exports) need it too.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable


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


def commit(tmp: Path, path: str | Path) -> Path:
    """Rename the finished `tmp` onto `path`. A folder replaces an existing one by a swap: the old one is moved
    aside, the new one renamed in, the old one deleted."""
    path = Path(path)
    if tmp.is_dir() and path.exists():
        old = temporary_path(path.with_name(path.name + ".old"))
        os.replace(path, old)
        os.replace(tmp, path)
        remove(old)
    else:
        os.replace(tmp, path)
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
