"""Does `compile: true` pay on this machine? Eager vs compiled training steps of the CPU defaults' models.

    python bench/compile_speed.py                                   # the DiT, lean-small, wfvae-small, ivvae-small
    python bench/compile_speed.py --models dit --repeats 10

Each model takes the step its trainer takes (forward, loss, backward, a fused AdamW step) on fixed random inputs
of the CPU default's shape: the DiT (configs/dit/default.yaml: Latte-T/2 on 4 x 5 x 8 x 8 latents, batch 16,
rectified flow, bfloat16 autocast where `mixed_precision=auto` picks it) and the VAEs (batch 2 of 17 x 64 x 64
clips, an L1 + KL loss, float32). For each it prints the median step time over --repeats eager and compiled
(inductor, as `compile: true` does through accelerate), the compile time (the two first compiled steps' time
beyond two compiled steps'), and the steps after which compiling pays, beside the steps of the default run. Run it
on an idle machine: the two variants are timed one after the other.

Compile times are cold: inductor's cache goes to a new temporary folder (TORCHINDUCTOR_CACHE_DIR), deleted at
the end. A second run of the same model on the same machine compiles from its cache in seconds (--warm-cache
uses yours and shows that).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Callable

import torch

from dit import DIT_PRESETS, LatteDiT
from dit.objectives import RectifiedFlow
from pipelines.training.accelerator import resolve_mixed_precision
from vae import build_autoencoder
from vae_step import step as vae_loss_step  # bench/, beside this script: the VAE step of bench/vae_step.py

DEFAULT_STEPS = {"dit": 3500, "lean-small": 800, "wfvae-small": 800, "ivvae-small": 150}  # the configs' max_steps


def dit_step(model: torch.nn.Module, bf16: bool) -> Callable[[], None]:
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(16, 4, 5, 8, 8, generator=g), torch.randn(16, 4, 5, 8, 8, generator=g)
    labels = torch.randint(0, 16, (16,), generator=g)
    objective = RectifiedFlow()
    xt, t = objective.noisy(x0, noise, g)

    def step() -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            out = model(xt, t, class_labels=labels).sample
        objective.loss(out, x0, noise, t)["loss"].backward()

    return step


def vae_step(model: torch.nn.Module) -> Callable[[], None]:
    x = torch.rand(2, 3, 17, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return lambda: vae_loss_step(model, x)


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "dit":
        return LatteDiT(**DIT_PRESETS["Latte-T/2"], in_channels=4, num_frames=5, sample_size=8, num_classes=16,
                        class_embed_std=1.0, learn_sigma=False).train()
    return build_autoencoder(name).train()


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(name: str, compiled: bool, repeats: int, bf16: bool) -> tuple[float, float]:
    """(median seconds per step after two warm-up steps, seconds of the two warm-up steps)."""
    model = build(name)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    runnable = torch.compile(model) if compiled else model
    loss_step = dit_step(runnable, bf16) if name == "dit" else vae_step(runnable)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_step()
        optimizer.step()

    warmup = timed(step) + timed(step)  # compiling: forward and backward graphs, then a recompile at most
    return statistics.median(timed(step) for _ in range(repeats)), warmup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_STEPS), choices=list(DEFAULT_STEPS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warm-cache", action="store_true", help="compile with inductor's usual cache")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.warm_cache:
        return report(args)
    with tempfile.TemporaryDirectory(prefix="inductor_cold_") as cold:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cold  # read when inductor first compiles, after this line
        report(args)


def report(args: argparse.Namespace) -> None:
    bf16 = resolve_mixed_precision("auto")[0] == "bf16"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, DiT in "
          f"{'bfloat16 autocast' if bf16 else 'float32'}, median of {args.repeats} steps, "
          f"{'warm' if args.warm_cache else 'cold'} inductor cache\n")
    print("| model | eager s / step | compiled s / step | speed-up | compile s | pays after (steps) | default run's steps |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in args.models:
        eager = measure(name, False, args.repeats, bf16)[0]
        fast, warmup = measure(name, True, args.repeats, bf16)
        compile_seconds = warmup - 2 * fast
        saved = eager - fast
        pays = f"{compile_seconds / saved:.0f}" if saved > 0 else "never"
        print(f"| {name} | {eager:.3f} | {fast:.3f} | {eager / fast:.2f}x | {compile_seconds:.0f} | {pays} | "
              f"{DEFAULT_STEPS[name]} |")


if __name__ == "__main__":
    main()
