"""How fast a device multiplies matrices, and what precision "auto" means on it: bfloat16 where a bfloat16 matmul
runs at least AUTO_BF16_SPEEDUP times a float32 one (this project's CPU: ~4x; recent GPUs: more; CPUs without
bfloat16 units: < 1, where bfloat16 would be slower). One rule for training's `mixed_precision=auto` (autocast)
and sampling's `precision=auto` (the DiT's and the VAE's weights)."""

from __future__ import annotations

import functools
import time
from typing import Callable

import torch

AUTO_BF16_SPEEDUP = 1.5


def best_seconds(op: Callable[[], torch.Tensor], repeats: int) -> float:
    """The best of `repeats` timed calls (after one warm-up)."""
    best = float("inf")
    for i in range(repeats + 1):
        start = time.perf_counter()
        op().sum().item()  # .item() waits for the device, here and (so before `start`) in the previous round
        if i:
            best = min(best, time.perf_counter() - start)
    return best


@functools.lru_cache(maxsize=None)
def matmul_flops_per_second(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048,
                            repeats: int = 3) -> float:
    """The best of `repeats` timed n x n matmuls on `device`, in FLOP/s; measured once per process (a device's
    peak does not change between the runs of one process)."""
    a = b = torch.full((n, n), 0.5, device=device, dtype=dtype)  # the values do not matter; no RNG is touched
    return 2 * n**3 / best_seconds(lambda: a @ b, repeats)


@functools.lru_cache(maxsize=None)
def bf16_speedup(device: torch.device, rounds: int = 10) -> float:
    """How many times faster a 1024 x 1024 bfloat16 matmul runs than a float32 one on `device`: the best of
    `rounds` of each, the two timed alternately, so that a clock still ramping up or a neighbour's burst at
    start-up biases neither (a best of 3 timed one after the other read 1.4x once on a CPU whose figure is 2.0-2.3x,
    and `auto` trained that run in float32). Measured once per process, so its decisions agree."""
    a = torch.full((1024, 1024), 0.5, device=device)  # the values do not matter; no RNG is touched
    b = a.to(torch.bfloat16)
    float32 = bfloat16 = float("inf")
    for _ in range(rounds):
        float32 = min(float32, best_seconds(lambda: a @ a, 1))
        bfloat16 = min(bfloat16, best_seconds(lambda: b @ b, 1))
    return float32 / bfloat16
