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


def reset_accelerate_state() -> None:
    """accelerate keeps process-wide singletons (AcceleratorState, GradientState): reset them so the next
    Accelerator built in-process starts from a clean state."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture
def fresh_accelerate_state():
    """A clean accelerate state around a test that builds Accelerators in-process."""
    reset_accelerate_state()
    yield
    reset_accelerate_state()


def killed_after_first_checkpoint(monkeypatch, run_once) -> None:
    """Call `run_once()` (a training run) and kill it right after it writes its first checkpoint, as a job
    stopped mid-run would be; later runs save checkpoints normally again."""
    from pipelines.training.checkpoints import Checkpoints

    save = Checkpoints.save

    def save_then_crash(self, accelerator, step, state):
        save(self, accelerator, step, state)
        raise KeyboardInterrupt(f"simulated kill after step {step}")

    monkeypatch.setattr(Checkpoints, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        run_once()
    monkeypatch.setattr(Checkpoints, "save", save)


@pytest.fixture
def overfit_real_clip(test_data_dir):
    """A function: train a VAE 100 Adam steps (lr 3e-3, L1) on 9 frames of carphone.mp4 at 32x32 and return its
    reconstruction PSNR (dB) before and after."""
    from pipelines.data import read_frames
    from pipelines.data.clips import frames_to_tensor

    x = frames_to_tensor(read_frames(test_data_dir / "carphone.mp4", range(0, 18, 2)), 32).unsqueeze(0)

    def psnr(model) -> float:
        with torch.no_grad():
            recon = model(x, sample_posterior=False).sample.clamp(-1, 1)
        return float(-10 * torch.log10(((recon - x) / 2).pow(2).mean()))

    def train(model) -> tuple[float, float]:
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        start = psnr(model)
        for _ in range(100):
            loss = (model(x, sample_posterior=False).sample - x).abs().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return start, psnr(model)

    return train


def untouched_by_training(model: torch.nn.Module, loss_of) -> list[str]:
    """The trainable parameters of `model` that two Adam steps on `loss_of(model)` leave as they were. Two, not one:
    a residual branch starts at zero (vae/init.py), so its first layer gets its first gradient on the second step
    (Adam, not SGD: that first gradient can be too small for an SGD step to change a float32 gain of 1)."""
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):
        optimizer.zero_grad()
        loss_of(model).backward()
        optimizer.step()
    return [n for n, p in model.named_parameters() if p.requires_grad and torch.equal(p, start[n])]
