"""One writer per folder: a training run, a latent cache build or an export holds a lock on the folder it
writes, so a second command pointed at the same folder is refused at once instead of mixing its files in.

The lock is an OS file lock (filelock's; `flock` on Linux) on `<folder>/.lock`: it goes with the process that
holds it, so a killed run never leaves the folder locked. On a file system without such locks (some network
mounts) filelock falls back to a lock file that a killed run leaves behind; delete it by hand then.
"""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock, Timeout

from .errors import UserError
from .files import sweep_temporaries

LOCK_NAME = ".lock"


class FolderInUse(UserError):
    """Another process holds the folder a command was pointed at."""


def hold_folder(folder: str | Path, what: str) -> FileLock:
    """Lock `folder` (created if missing) for this process, then sweep the temporaries killed writers left in
    it; `what` names the command in the refusal. Release the returned lock when done (or let the process end)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / LOCK_NAME, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise FolderInUse(f"{folder} is in use by another {what} (it holds {folder / LOCK_NAME}): wait for it to "
                          f"finish or choose another folder") from None
    sweep_temporaries(folder)
    return lock
