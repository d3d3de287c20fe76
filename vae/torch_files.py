"""Reading released `.ckpt` / `.pth` / `.pt` weight files: tensors only, whatever the file holds.

`torch.load(weights_only=True)` refuses a file that needs any other object, but its refusal is a long message
that suggests loading with `weights_only=False` - the one thing never to do with a downloaded file. This turns
it into one line that names what the file wanted and where such files should come from.
"""

from __future__ import annotations

import pickle
from pathlib import Path


def load_tensors(path: str | Path, source: str = "") -> dict:
    """The state dict at `path`, loaded with `weights_only=True`; ValueError (one line) for anything else."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:
            names = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(path)) or "unknown"
        except Exception:  # noqa: BLE001 - the names only decorate the refusal
            names = "unknown"
        where = f"; the released weights come from {source}" if source else ""
        raise ValueError(f"{path} holds pickled objects other than tensors ({names}): refusing to load it{where}"
                         ) from None
