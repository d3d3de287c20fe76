"""What reproducing the published results costs on GPUs, counted from the real models.

    python bench/recipe_cost.py                    # every DiT recipe x VAE, then the VAE recipes, at MFU 40%
    python bench/recipe_cost.py --mfu 0.3 --videos sky=2392

For each DiT benchmark recipe (configs/dit/latte-xl2-*.yaml: Latte-XL/2 on UCF-101 or SkyTimelapse, videos
alone or with 8 images each, at the recipe's steps and batch x 8 GPUs) on each VAE's latents (LeanVAE-4ch /
16ch, WF-VAE-L-16ch, IV-VAE-z16, SD-VAE per frame at Latte's 16 frames), prints the FLOPs of one training
step traced on the meta device (`pipelines.training.recipe_cost`), the whole run's, the latent cache's (every
video encoded once), and the GPU-hours on H100 / H200 / A100 at --mfu of the dense bfloat16 peak. Then the same
for training each VAE by its recipe (configs/vae/*.yaml; the autoencoder's FLOPs, without LPIPS and the GAN).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.training.recipe_cost import (DATASET_VIDEOS, GPU_PEAKS, RECIPE_GPUS, SD_VAE, RecipeCost,  # noqa: E402
                                            dit_recipe_cost, vae_recipe_cost)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DIT_RECIPES = ["latte-xl2-ucf101", "latte-xl2-ucf101-img", "latte-xl2-sky", "latte-xl2-sky-img"]
VAES = ["lean-4ch", "lean-16ch", "wfvae-l-16ch", "ivvae-z16", SD_VAE]
VAE_RECIPES = ["leanvae-4ch", "leanvae-16ch", "wfvae-l-16ch", "ivvae-z16"]


def row(cost: RecipeCost, mfu: float) -> str:
    hours = " | ".join(f"{cost.gpu_hours(gpu, mfu):,.0f}" for gpu in GPU_PEAKS)
    days = cost.gpu_hours("H100", mfu) / RECIPE_GPUS / 24
    latent = "x".join(map(str, cost.latent))
    return (f"| {Path(cost.recipe).stem} | {cost.vae} | {latent} | {cost.steps:,} x {cost.batch} | "
            f"{cost.step_flops / 1e12:,.1f} | {cost.train_flops / 1e18:,.2f} | {cost.cache_flops / 1e15:,.1f} | "
            f"{hours} | {days:.2f} |")


def header(first: str) -> str:
    gpus = " | ".join(f"{gpu} h" for gpu in GPU_PEAKS)
    return (f"| {first} | VAE | latent CxFxHxW | steps x clips | TFLOP / step | EFLOP run | PFLOP cache | {gpus} | "
            f"days on {RECIPE_GPUS} H100 |\n|" + "---|" * (9 + len(GPU_PEAKS) - 1))


def parse_videos(pairs: list[str]) -> dict[str, int]:
    videos = dict(DATASET_VIDEOS)
    for pair in pairs:
        name, _, count = pair.partition("=")
        if name not in videos or not count.isdigit():
            raise ValueError(f"--videos takes NAME=COUNT with NAME in {', '.join(videos)}, got {pair!r}")
        videos[name] = int(count)
    return videos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mfu", type=float, default=0.4, help="model FLOP utilisation assumed on the GPUs")
    parser.add_argument("--videos", nargs="*", default=[], help="videos per data set, e.g. sky=2392")
    args = parser.parse_args()
    if not 0 < args.mfu <= 1:
        parser.error(f"--mfu must be in (0, 1], got {args.mfu}")
    try:
        videos = parse_videos(args.videos)
    except ValueError as err:
        parser.error(str(err))
    print(f"MFU {args.mfu:.0%} of the dense bfloat16 peak ("
          + ", ".join(f"{gpu} {peak / 1e12:.0f} TFLOP/s" for gpu, peak in GPU_PEAKS.items())
          + "); data sets: " + ", ".join(f"{name} {count:,} videos" for name, count in videos.items()) + "\n")
    print(header("DiT recipe"))
    for recipe in DIT_RECIPES:
        for vae in VAES:
            print(row(dit_recipe_cost(str(CONFIGS / "dit" / f"{recipe}.yaml"), vae, videos), args.mfu), flush=True)
    print("\n" + header("VAE recipe"))
    for recipe in VAE_RECIPES:
        print(row(vae_recipe_cost(str(CONFIGS / "vae" / f"{recipe}.yaml")), args.mfu), flush=True)


if __name__ == "__main__":
    main()
