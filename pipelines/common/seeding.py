"""Randomness that needs no state to checkpoint: generators keyed by (seed, *keys), e.g. (seed, epoch, index)
for a data item or (seed, rank, micro-step) for a training step's noise, and the global RNG re-seeded the same
way around a step, so an interrupted and resumed run draws exactly what an uninterrupted one does, in any
worker or process."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch


def keyed_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed that depends only on (seed, *keys), well mixed even for neighbouring keys."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(1, dtype=np.uint64)[0]
    return int(state) & 0x7FFF_FFFF_FFFF_FFFF


def keyed_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator seeded by (seed, *keys)."""
    return torch.Generator().manual_seed(keyed_seed(seed, *keys))


@contextmanager
def keyed_cpu_rng(seed: int, *keys: int) -> Iterator[None]:
    """Inside, torch's global CPU RNG starts from keyed_seed(seed, *keys); outside, it is as it was. The CPU
    generator alone, and directly: `torch.manual_seed` would also re-seed every accelerator's generator (a side
    effect `fork_rng(devices=[])` does not undo) and costs ~0.1 ms a call, 40x this, once per data item."""
    generator = torch.default_generator
    state = generator.get_state()
    generator.manual_seed(keyed_seed(seed, *keys))
    try:
        yield
    finally:
        generator.set_state(state)


@contextmanager
def keyed_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Inside, torch's global RNG (CPU and `device`) starts from `seed`; outside, it is as it was. Layers that draw
    from it (dropout) then give the same draws in an interrupted and an uninterrupted run."""
    accelerators = [device.index or 0] if device.type != "cpu" else []
    with torch.random.fork_rng(devices=accelerators, device_type=device.type if accelerators else "cuda"):
        torch.manual_seed(seed)
        yield
