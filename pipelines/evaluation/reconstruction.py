"""Reconstruction quality of a video autoencoder: PSNR, SSIM, batched reconstruction and side-by-side videos.

Videos are (B, 3, T, H, W) in [-1, 1], the project's convention; both metrics are computed on the [0, 1]
scale (data range 1), per clip, after clamping the reconstruction to the valid range.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import tensor_to_frames, write_video

SSIM_WINDOW, SSIM_SIGMA = 11, 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _unit(video: torch.Tensor) -> torch.Tensor:
    # float64: SSIM's variances are differences of near-equal moments, too close for float32 on flat areas
    return (video.double().clamp(-1, 1) + 1) / 2


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.ndim != 5:
        raise ValueError(f"expected two videos of the same shape (B, C, T, H, W), got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")


def video_psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-clip PSNR in dB, (B,): 10 log10(1 / MSE) over all pixels of a clip; identical clips give inf."""
    _check_pair(x, y)
    mse = (_unit(x) - _unit(y)).pow(2).flatten(1).mean(dim=1)  # (B,)
    return (10 * torch.log10(1.0 / mse)).float()


def _gaussian_window(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-coords.pow(2) / (2 * sigma**2))
    return g / g.sum()  # (size,)


def video_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-clip SSIM, (B,): Wang et al. (2004) with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01,
    K2 = 0.03, over 'valid' window positions of each frame and colour channel, averaged over all of them."""
    _check_pair(x, y)
    b, c, t, h, w = x.shape
    if min(h, w) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {h}x{w}")
    frames_x = _unit(x).transpose(1, 2).reshape(b * t * c, 1, h, w)  # (B*T*C, 1, H, W)
    frames_y = _unit(y).transpose(1, 2).reshape(b * t * c, 1, h, w)  # (B*T*C, 1, H, W)
    g = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA, x.device)

    def blur(image: torch.Tensor) -> torch.Tensor:  # separable Gaussian filter, valid positions only
        return F.conv2d(F.conv2d(image, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))

    mu_x, mu_y = blur(frames_x), blur(frames_y)  # (N, 1, H-10, W-10)
    var_x = blur(frames_x * frames_x) - mu_x.pow(2)
    var_y = blur(frames_y * frames_y) - mu_y.pow(2)
    cov = blur(frames_x * frames_y) - mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.pow(2) + mu_y.pow(2) + c1) * (var_x + var_y + c2))
    return ssim_map.reshape(b, -1).mean(dim=1).float()  # (B,)


@torch.no_grad()
def round_trip(model, clips: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """The VAE's reconstruction of (B, 3, T, H, W) clips: encode to the posterior mean, decode (`chunk_size`
    latent frames at a time: bounded memory, the same output), clamp to [-1, 1]; float32 on the model's device."""
    latent = model.encode(clips).latent_dist.mode()  # (B, d, T', h, w)
    return model.decode(latent, chunk_size=chunk_size).sample.float().clamp(-1, 1)  # (B, 3, T, H, W)


def reconstruct(model, videos: torch.Tensor, batch_size: int = 4) -> torch.Tensor:
    """`round_trip`, `batch_size` clips at a time on the model's device; float32 on the device of `videos`."""
    param = next(model.parameters())
    return torch.cat([round_trip(model, videos[i:i + batch_size].to(param.device, param.dtype)).to(videos.device)
                      for i in range(0, videos.shape[0], batch_size)])  # (N, 3, T, H, W)


def reconstruction_metrics(originals: torch.Tensor, recons: torch.Tensor) -> dict[str, float]:
    """Mean per-clip PSNR (dB) and SSIM."""
    return {"psnr": float(video_psnr(originals, recons).mean()), "ssim": float(video_ssim(originals, recons).mean())}


def write_comparison(path: str | Path, originals: torch.Tensor, recons: torch.Tensor, fps: float = 8.0) -> Path:
    """One mp4: a row per clip, each row original | reconstruction."""
    _check_pair(originals, recons)
    rows = torch.cat([originals.float().cpu(), recons.float().cpu()], dim=-1)  # (N, 3, T, H, 2W)
    grid = torch.cat(list(rows), dim=-2)  # (3, T, N*H, 2W)
    return write_video(path, tensor_to_frames(grid), fps)
