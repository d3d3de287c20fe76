"""Shared test setup: make the repository importable when pytest runs without the project installed."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Test models are tiny: one thread avoids thread start-up and contention costs and keeps results the same
# on any machine. Subprocesses the tests launch use the default.
torch.set_num_threads(1)


@pytest.fixture
def test_data_dir() -> Path:
    """tests/data: the small real clips (bigbuckbunny.mp4, carphone.mp4) shipped with the repository."""
    return ROOT / "tests" / "data"
