"""Finding the videos of a data set folder and indexing them (frame counts, fps, failures) once.

Probing every video of a large data set (UCF-101 has 13,320) takes minutes, so the index is cached as JSON,
keyed by the folder and layout. A cheap fingerprint of the folder (names, sizes and mtimes of the video files;
image counts and mtimes of the frame folders) is stored with it: a folder that changed gets a new index.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..common.files import write_text
from .video_io import VideoReadError, is_image_file, is_video_file, probe

INDEX_VERSION = 1


@dataclass(frozen=True)
class Source:
    """A video file or a frame folder found in a data set root, with the stat data its fingerprint uses."""

    path: str  # absolute
    signature: str


@dataclass(frozen=True)
class IndexEntry:
    path: str  # absolute
    num_frames: int
    fps: float


@dataclass
class VideoIndex:
    """Readable videos, plus the unreadable ones as reason -> [(path, message)]; `reused` tells a cache hit."""

    entries: list[IndexEntry]
    failed: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    reused: bool = False


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "leanlatte" / "data_index"


def scan_sources(root: str | Path, videos: bool = True, frame_folders: bool = True) -> list[Source]:
    """All video files and/or frame folders (folders holding images) under `root`, sorted; hidden ones skipped.
    Symbolic links are followed, each real folder once: a link cycle, or two links to one folder, is read once."""
    root = os.path.abspath(root)
    found, seen = [], {_folder_key(root)}
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and _first_visit(os.path.join(folder, d), seen))
        files = [f for f in files if not f.startswith(".")]
        if videos:
            for name in files:
                if is_video_file(name):
                    path = os.path.join(folder, name)
                    stat = os.stat(path)
                    found.append(Source(path, f"{stat.st_size}:{stat.st_mtime_ns}"))
        if frame_folders and folder != root:
            images = sum(1 for f in files if is_image_file(f))
            if images:
                found.append(Source(folder, f"{images}:{os.stat(folder).st_mtime_ns}"))
    return sorted(found, key=lambda s: s.path)


def _folder_key(path: str) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def _first_visit(path: str, seen: set) -> bool:
    key = _folder_key(path)
    if key in seen:
        return False
    seen.add(key)
    return True


def _fingerprint(root: Path, sources: list[Source]) -> str:
    digest = hashlib.sha1()
    for source in sources:
        digest.update(f"{os.path.relpath(source.path, root)}|{source.signature}\n".encode())
    return digest.hexdigest()


def _cache_file(root: Path, layout: str, cache_dir: Path) -> Path:
    key = hashlib.sha1(f"{INDEX_VERSION}|{layout}|{root}".encode()).hexdigest()[:16]
    return cache_dir / f"{layout}-{root.name}-{key}.json"


def _probe_one(path: str):
    try:
        return probe(path), None
    except VideoReadError as err:
        return None, err


def _build(root: Path, sources: list[Source]) -> VideoIndex:
    index = VideoIndex(entries=[])
    workers = min(8, 2 * (os.cpu_count() or 1))  # demuxing is mostly file I/O and releases the GIL
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(_probe_one, [s.path for s in sources])
        bar = tqdm(results, total=len(sources), desc=f"indexing {root}", unit="video", disable=len(sources) < 500)
        for source, (info, error) in zip(sources, bar, strict=True):
            if error is None:
                index.entries.append(IndexEntry(source.path, info.num_frames, info.fps))
            else:
                index.failed.setdefault(error.reason, []).append((source.path, str(error)))
    return index


def _to_json(root: Path, layout: str, fingerprint: str, index: VideoIndex) -> dict:
    return {
        "version": INDEX_VERSION,
        "root": str(root),
        "layout": layout,
        "fingerprint": fingerprint,
        "entries": [[os.path.relpath(e.path, root), e.num_frames, e.fps] for e in index.entries],
        "failed": {r: [[os.path.relpath(p, root), m] for p, m in items] for r, items in index.failed.items()},
    }


def _from_json(root: Path, data: dict) -> VideoIndex:
    entries = [IndexEntry(str(root / rel), int(n), float(fps)) for rel, n, fps in data["entries"]]
    failed = {r: [(str(root / rel), m) for rel, m in items] for r, items in data["failed"].items()}
    return VideoIndex(entries=entries, failed=failed, reused=True)


def load_or_build_index(root: str | Path, sources: list[Source], layout: str,
                        cache_dir: str | Path | None = None) -> VideoIndex:
    """The index of `sources` under `root`: read from the cache when the folder is unchanged, else probed and cached.

    `layout` names the reader ("ucf101", "sky", "folder"), so two readers of one root keep separate indexes.
    `cache_dir` defaults to `default_cache_dir()`. A cache that cannot be written only costs a warning.
    """
    root = Path(os.path.abspath(root))
    cache = _cache_file(root, layout, Path(cache_dir) if cache_dir else default_cache_dir())
    fingerprint = _fingerprint(root, sources)
    try:
        data = json.loads(cache.read_text())
        if data.get("version") == INDEX_VERSION and data.get("fingerprint") == fingerprint:
            return _from_json(root, data)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no cache yet, or an unreadable one: rebuild it
    index = _build(root, sources)
    try:
        write_text(cache, json.dumps(_to_json(root, layout, fingerprint, index)))
    except OSError as err:
        warnings.warn(f"could not write the data set index cache {cache}: {err}", stacklevel=2)
    return index
