"""Training-step time of the bundled VAEs side by side: what a CPU default pays per step.

    python bench/vae_step.py                                  # lean-small, wfvae-small, ivvae-small
    python bench/vae_step.py --presets ivvae-small lean-small --batch 2 --frames 17 --size 64 --repeats 5
    python bench/vae_step.py --bf16                           # both precisions, each preset's float32 and bf16 rows

One step = the trainer's forward (`model(x)`: encode, posterior sample, decode, the whole clip at once), an L1 +
KL loss and backward, in float32 on random video, random init (`--bf16`: also in bfloat16 autocast, the
trainer's `mixed_precision: bf16`, weights float32). Prints parameters, floating-point operations per
step (torch's FlopCounterMode, grouped convolutions' backward counted right: `monitor.flop_counter`), the median
step time over --repeats after two warm-up steps, achieved GFLOP/s, and each step time as a multiple of the
first preset's. Run it on an idle machine: the presets are timed one
after the other in the same process.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pipelines.training.monitor import flop_counter
from vae import build_autoencoder


def step(model: torch.nn.Module, x: torch.Tensor) -> None:
    out = model(x)
    ((out.sample - x).abs().mean() + 1e-5 * out.latent_dist.kl().mean()).backward()


def measure(preset: str, x: torch.Tensor, repeats: int, bf16: bool = False) -> dict:
    torch.manual_seed(0)
    model = build_autoencoder(preset).train()
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        with flop_counter() as counter:
            step(model, x)
        step(model, x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step(model, x)
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"preset": preset + (" bf16" if bf16 else ""), "params": sum(p.numel() for p in model.parameters()) / 1e6,
            "gflop": counter.get_total_flops() / 1e9, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["lean-small", "wfvae-small", "ivvae-small"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bf16", action="store_true", help="also time each preset in bfloat16 autocast")
    args = parser.parse_args()
    x = torch.rand(args.batch, 3, args.frames, args.size, args.size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    rows = [measure(preset, x, args.repeats, bf16) for preset in args.presets for bf16 in (False, True)[:1 + args.bf16]]
    print(f"batch {args.batch} x 3 x {args.frames} x {args.size} x {args.size}, {torch.get_num_threads()} "
          f"threads, median of {args.repeats}\n")
    print("| preset | params (M) | GFLOP / step | s / step | GFLOP/s | x first |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['preset']} | {row['params']:.2f} | {row['gflop']:.1f} | {row['seconds']:.3f} | "
              f"{row['gflop'] / row['seconds']:.0f} | {row['seconds'] / rows[0]['seconds']:.1f} |")


if __name__ == "__main__":
    main()
