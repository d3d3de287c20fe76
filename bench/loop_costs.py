"""What the default run spends outside its models' training steps, before and after this project's choices:
seeding a data item, the optimizer step, drawing a synthetic clip, and the DiT's sampling step in each precision.

    python bench/loop_costs.py                # median of 20 (clips: of 100 draws)

Rows, each measured side by side in one process:
- an item's keyed seed: `torch.manual_seed` inside `fork_rng` (what `EpochSeededDataset` did) against
  `keyed_cpu_rng` (the CPU generator alone), per item; the DiT's batch of 32 latents pays it 32 times a step.
- AdamW: torch's default per-tensor loop against the fused kernel (`pipelines.training.optim.adamw`), for each
  default model.
- a synthetic clip (17 x 64 x 64), plain (the DiT's data) and textured (the VAE's), as `SyntheticVideoDataset`
  draws them.
- Latte-T/2's sampling forward at the evaluation's batch (32 videos, guided: 64), float32 against bfloat16
  (`precision=bf16`, what `precision=auto` picks where a bfloat16 matmul pays).
Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from dit import DIT_PRESETS, LatteDiT
from pipelines.common.seeding import keyed_cpu_rng, keyed_seed
from pipelines.data.synthetic import SyntheticVideoDataset
from pipelines.training.optim import adamw
from vae import build_autoencoder


def median_ms(op: Callable[[], object], repeats: int) -> float:
    op()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        op()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def seeding_rows(repeats: int) -> list[tuple[str, float | None, float]]:
    def before():
        for index in range(100):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(keyed_seed(0, 0, index))

    def after():
        for index in range(100):
            with keyed_cpu_rng(0, 0, index):
                pass

    return [("an item's keyed seed (ms per 100 items)", median_ms(before, repeats), median_ms(after, repeats))]


def optimizer_rows(repeats: int) -> list[tuple[str, float | None, float]]:
    models = {name: build_autoencoder(name) for name in ("lean-small", "wfvae-small", "ivvae-small")}
    models["Latte-T/2"] = LatteDiT(**DIT_PRESETS["Latte-T/2"], in_channels=4, num_frames=5, sample_size=8,
                                   num_classes=16)
    rows = []
    for name, model in models.items():
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        loop = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=False)
        fused = adamw(model, 1e-4, 0.01)
        tensors = sum(1 for _ in model.parameters())
        rows.append((f"AdamW step, {name} ({tensors} tensors; ms)", median_ms(loop.step, repeats),
                     median_ms(fused.step, repeats)))
    return rows


def clip_rows(repeats: int) -> list[tuple[str, float | None, float]]:
    rows = []
    for detail, name in ((0.0, "plain"), (1.0, "textured")):
        data = SyntheticVideoDataset(100, detail=detail)
        per_clip = median_ms(lambda: [data[i] for i in range(100)], max(repeats // 10, 1)) / 100
        rows.append((f"a synthetic clip, {name} (ms)", None, per_clip))  # no before: bit-exact rewrite
    return rows


def sampling_rows(repeats: int) -> list[tuple[str, float | None, float]]:
    torch.manual_seed(0)
    model = LatteDiT(**DIT_PRESETS["Latte-T/2"], in_channels=4, num_frames=5, sample_size=8, num_classes=16).eval()
    x, t, y = torch.randn(64, 4, 5, 8, 8), torch.full((64,), 500.0), torch.arange(64) % 17
    times = {}
    with torch.no_grad():
        for dtype in (torch.float32, torch.bfloat16):
            torch.nn.Module.to(model, dtype=dtype)  # ModelMixin.to warns of fp32-pinned modules; none here
            times[dtype] = median_ms(lambda: model(x.to(dtype), t, class_labels=y), repeats)
    return [("Latte-T/2 sampling forward, batch 64 (ms; after: bfloat16)", times[torch.float32],
             times[torch.bfloat16])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}\n")
    print("| cost | before | now | now / before |\n|---|---:|---:|---:|")
    for rows in (seeding_rows, optimizer_rows, clip_rows, sampling_rows):
        for name, before, now in rows(args.repeats):
            before_text, ratio = ("-", "-") if before is None else (f"{before:.2f}", f"{now / before:.2f}x")
            print(f"| {name} | {before_text} | {now:.2f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
