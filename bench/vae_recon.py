"""Reconstruction benchmark: a small VAE trained on CPU on the synthetic data set only (the default LeanVAE, or
any VAE config), against a non-learned baseline at the same 4x8x8 compression, on held-out real clips.

    nice python bench/vae_recon.py                          # train configs/vae/default.yaml as is, evaluate
    python bench/vae_recon.py --config configs/vae/wfvae-default.yaml   # WF-VAE's CPU default instead
    python bench/vae_recon.py --eval-only runs/vae/vae      # evaluate a trained model
    python bench/vae_recon.py --max-steps 300 data.num_frames=9   # any train_vae.py override

Real clips: every non-overlapping 17-frame window of tests/data/carphone.mp4 and bigbuckbunny.mp4, short side
resized and centre-cropped to 64x64; no training run reads them. Baseline: the mean of each 4x8x8 block (of
each 1x8x8 block of the first frame), the VAE's latent grid, interpolated back trilinearly: bilinear in
space, linear in time between the blocks' centres (frame 0 at t = 0, block j at t = 4j - 1.5). Prints a
markdown table of PSNR (dB) and SSIM per clip file and overall.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pipelines.data import probe, read_frames
from pipelines.data.clips import frames_to_tensor
from pipelines.evaluation.reconstruction import reconstruct, video_psnr, video_ssim
from pipelines.common.cli import parse_cli
from pipelines.training.vae_trainer import DEFAULT_CONFIG, VAETrainConfig, train
from vae import load_autoencoder

ROOT = Path(__file__).resolve().parents[1]
CLIPS = [ROOT / "tests" / "data" / name for name in ("carphone.mp4", "bigbuckbunny.mp4")]
NUM_FRAMES, RESOLUTION = 17, 64


def real_clips(path: Path) -> torch.Tensor:
    """Every non-overlapping NUM_FRAMES window of a video, as (N, 3, T, 64, 64) in [-1, 1]."""
    count = probe(path).num_frames // NUM_FRAMES
    frames = read_frames(path, range(count * NUM_FRAMES))  # (N*T, H, W, 3)
    return torch.stack([frames_to_tensor(frames[i * NUM_FRAMES:(i + 1) * NUM_FRAMES], RESOLUTION)
                        for i in range(count)])


def block_mean_baseline(video: torch.Tensor, time_block: int = 4, space_block: int = 8) -> torch.Tensor:
    """(B, C, 1 + 4k, H, W) -> the same shape from the means of 4x8x8 blocks (1x8x8 for the first frame)."""
    b, c, t, h, w = video.shape
    first = F.avg_pool2d(video[:, :, 0], space_block).unsqueeze(2)  # (B, C, 1, h, w)
    rest = F.avg_pool3d(video[:, :, 1:], (time_block, space_block, space_block))  # (B, C, k, h, w)
    grid = torch.cat([first, rest], dim=2)  # (B, C, 1 + k, h, w)
    grid = F.interpolate(grid.flatten(1, 2), size=(h, w), mode="bilinear", align_corners=False)
    grid = grid.view(b, c, -1, h, w)  # (B, C, 1 + k, H, W)
    centres = torch.tensor([0.0] + [time_block * j - (time_block - 1) / 2 for j in range(1, grid.shape[2])])
    position = torch.arange(t, dtype=torch.float32).clamp(max=float(centres[-1]))
    upper = torch.searchsorted(centres, position, right=False).clamp(1, len(centres) - 1)  # (T,)
    weight = ((position - centres[upper - 1]) / (centres[upper] - centres[upper - 1])).view(1, 1, t, 1, 1)
    return grid[:, :, upper - 1] * (1 - weight) + grid[:, :, upper] * weight  # (B, C, T, H, W)


def table(rows: list[tuple[str, str, torch.Tensor, torch.Tensor]]) -> str:
    lines = ["| clips | method | PSNR (dB) | SSIM |", "| --- | --- | ---: | ---: |"]
    for name, method, psnr, ssim in rows:
        lines.append(f"| {name} | {method} | {psnr.mean():.2f} | {ssim.mean():.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the VAE training config")
    parser.add_argument("--eval-only", type=Path, help="a saved VAE folder: skip training")
    parser.add_argument("--max-steps", type=int, help="training steps (default: the config's max_steps, 800)")
    parser.add_argument("--output-dir", default="runs/bench_vae_recon")
    parser.add_argument("overrides", nargs="*", help="train_vae.py config overrides, key=value")
    args = parser.parse_args()

    if args.eval_only:
        vae_path, seconds = args.eval_only, 0.0
    else:
        steps = [f"max_steps={args.max_steps}"] if args.max_steps else []
        cfg = parse_cli(VAETrainConfig, [*steps, f"output_dir={args.output_dir}", *args.overrides],
                        default_config=args.config)
        start = time.perf_counter()
        train(cfg)
        seconds = time.perf_counter() - start
        vae_path = Path(args.output_dir) / "vae"
    vae = load_autoencoder(vae_path).eval()
    name = type(vae).__name__

    rows, all_psnr, all_ssim = [], {name: [], "baseline": []}, {name: [], "baseline": []}
    for path in CLIPS:
        clips = real_clips(path)
        for method, recon in ((name, reconstruct(vae, clips)), ("baseline", block_mean_baseline(clips))):
            psnr, ssim = video_psnr(clips, recon), video_ssim(clips, recon)
            rows.append((f"{path.name} ({len(clips)})", method, psnr, ssim))
            all_psnr[method].append(psnr)
            all_ssim[method].append(ssim)
    for method in (name, "baseline"):
        rows.append(("all", method, torch.cat(all_psnr[method]), torch.cat(all_ssim[method])))
    gain = torch.cat(all_psnr[name]).mean() - torch.cat(all_psnr["baseline"]).mean()
    print(f"\n{name} {vae_path} ({sum(p.numel() for p in vae.parameters()) / 1e6:.2f} M parameters, "
          f"{vae.latent_channels} latent channels)" + (f", trained {seconds / 60:.1f} min" if seconds else ""))
    print(f"Held-out real clips: {NUM_FRAMES} frames at {RESOLUTION}x{RESOLUTION}; baseline: 4x8x8 block means, "
          "trilinear upsampling.\n")
    print(table(rows))
    print(f"\n{name} - baseline: {gain:+.2f} dB PSNR (target >= +1.00 dB): {'met' if gain >= 1.0 else 'MISSED'}")


if __name__ == "__main__":
    main()
