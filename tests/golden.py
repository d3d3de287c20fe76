"""Reading the golden files that tests/data/make_*_golden.py make from the official code."""

import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file

DATA = Path(__file__).resolve().parent / "data"


def golden(name: str, key: str = "config"):
    """(metadata[key] as JSON, the official state dict, every tensor) of tests/data/<name>.safetensors."""
    path = DATA / f"{name}.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()[key])
    tensors = load_file(str(path))
    state = {k.removeprefix("state."): value for k, value in tensors.items() if k.startswith("state.")}
    return meta, state, tensors
