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


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps process-wide singletons (AcceleratorState, GradientState): reset them around a test
    that builds Accelerators in-process, so each run starts from a clean state."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
