"""Why the DiT's short attention runs in float32 on a CPU (`dit.layers.attention`): ATen's fused attention,
forward + backward, in float32 (the bfloat16 inputs cast, as the model does) and bfloat16, at the DiT's shapes.

    python bench/cpu_attention.py                 # the default run's and Latte-S/2's shapes, median of 20
    python bench/cpu_attention.py --repeats 50

Each row is one (groups, heads, length, head dim) shape: the default run's spatial (16 clips x 5 frames, 16
tokens) and temporal (16 clips x 16 positions, 5 frames) attention of Latte-T/2, and Latte-S/2's at 17 frames,
256 px, and a sweep over sequence length and head dim at 4096 tokens (where the cheaper one changes). Run it
on an idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

SHAPES = {
    "Latte-T/2 spatial, default run": (80, 3, 16, 64),
    "Latte-T/2 temporal, default run": (256, 3, 5, 64),
    "Latte-S/2 spatial, 17 frames 256 px": (5, 6, 256, 64),
    "Latte-S/2 temporal, 17 frames 256 px": (256, 6, 5, 64),
    **{f"sweep L={length} d={dim}": (4096 // length, 6, length, dim) for length in (64, 128, 256, 512, 1024)
       for dim in (32, 64)},
}


def step_ms(shape: tuple[int, ...], dtype: torch.dtype, repeats: int) -> float:
    """Forward + backward of bfloat16 q, k, v, attended in `dtype`."""
    q, k, v = (torch.randn(*shape, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    times = []
    for i in range(repeats + 3):
        start = time.perf_counter()
        F.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype)).sum().backward()
        if i >= 3:  # after warm-up
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, forward + backward, median of "
          f"{args.repeats}\n")
    print("| attention | shape (G, H, L, d) | float32 ms | bfloat16 ms | bfloat16 / float32 |\n|---|---|---:|---:|---:|")
    for name, shape in SHAPES.items():
        fp32, bf16 = step_ms(shape, torch.float32, args.repeats), step_ms(shape, torch.bfloat16, args.repeats)
        print(f"| {name} | {shape} | {fp32:.2f} | {bf16:.2f} | {bf16 / fp32:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
