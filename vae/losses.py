"""The video VAE training losses: L1 pixel, L1 on Haar sub-bands, LPIPS on a few frames, KL, and a PatchGAN with
hinge loss, LeCAM regularisation and (optionally) taming-transformers' adaptive weight. The defaults are the
official LeanVAE recipe (its paper and code); every bundled VAE trains with them.

Every loss is a plain function; `VAELoss` combines them with the weights of a `LossConfig` (the `loss:`
section of a VAE training config) and also computes the discriminator's loss, whose LeCAM EMA state lives
in the `LeCAM` submodule (checkpoint it: its buffers are the only training state here).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .haar import video_subbands
from .lpips import LPIPS

Discriminator = Callable[[torch.Tensor], torch.Tensor]


REDUCTIONS = ("mean", "frame_sum")
DISCRIMINATORS = ("2d", "3d")


@dataclasses.dataclass
class LossConfig:
    """Loss weights and GAN schedule; defaults are the official LeanVAE recipe (configs/vae/wfvae-*.yaml set
    WF-VAE's: frame sums, LPIPS on every frame, the WL loss, a 3-D discriminator with the adaptive weight)."""

    reduction: str = "mean"  # mean: element means (LeanVAE); frame_sum: per-frame pixel sums, averaged (WF-VAE)
    pixel_weight: float = 4.0
    wavelet_low_weight: float = 0.2  # lowest band (LL of frame 0, LLL of the rest)
    wavelet_high_weight: float = 0.4  # all other bands
    lpips_weight: float = 4.0  # 0 turns LPIPS off (no VGG weights needed)
    lpips_frames: int = 5  # evenly spaced frames per clip that LPIPS sees
    lpips_vgg_path: str | None = None  # default: torch hub cache, vgg16-397923af.pth
    lpips_lin_path: str | None = None  # default: installed lpips package, else torch hub cache
    kl_weight: float = 1e-7
    subband_weight: float = 0.0  # WF-VAE's WL loss: L1 between encoder and decoder energy-flow sub-bands (0.1)
    disc_weight: float = 0.2  # generator-side GAN weight once the GAN is on
    adaptive_disc_weight: bool = False  # multiply it by |grad rec| / |grad GAN| at the decoder's last layer
    adaptive_weight_max: float = 1e4  # clamp of that ratio
    disc_start: int = 600_000  # first step at which the GAN terms are used and the discriminator trains
    disc_type: str = "2d"  # 2d: per-frame PatchGAN (LeanVAE); 3d: PatchGAN over whole clips (WF-VAE)
    disc_channels: int = 64  # discriminator architecture, read by the training script
    disc_layers: int = 3
    disc_dropout: float = 0.0  # after each normalised layer of the 3-D discriminator (WF-VAE: 0.3)
    lecam_weight: float = 0.005
    lecam_decay: float = 0.99

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name.endswith("_weight") and value < 0:
                raise ValueError(f"loss.{field.name} must be >= 0, got {value}")
        if self.lpips_frames < 1:
            raise ValueError(f"loss.lpips_frames must be >= 1, got {self.lpips_frames}")
        if self.disc_start < 0:
            raise ValueError(f"loss.disc_start must be >= 0, got {self.disc_start}")
        if not 0.0 <= self.lecam_decay < 1.0:
            raise ValueError(f"loss.lecam_decay must be in [0, 1), got {self.lecam_decay}")
        if not 0.0 <= self.disc_dropout < 1.0:
            raise ValueError(f"loss.disc_dropout must be in [0, 1), got {self.disc_dropout}")
        for key, allowed in (("reduction", REDUCTIONS), ("disc_type", DISCRIMINATORS)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"loss.{key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")


def pixel_l1(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over all elements."""
    return F.l1_loss(recon.float(), x.float())


def wavelet_l1(
    x: torch.Tensor, recon: torch.Tensor, low_weight: float = 0.2, high_weight: float = 0.4
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L1 between the one-level Haar sub-bands of two (B, 3, 1 + 2k, H, W) videos.

    Bands come from `video_subbands` (frame 0 in 2-D, the rest in 3-D), scaled to unnormalised Haar sums
    (each coefficient is a +-1 sum over its 2x2 or 2x2x2 block), the scaling of the official LeanVAE code,
    so the recipe's weights keep their meaning. `low` = mean |diff| over the 2-D LL band + mean over the
    3-D LLL band; `high` = the same over all other bands. Returns (low_weight*low + high_weight*high,
    low, high).
    """
    image, video = video_subbands(x.float())
    image_r, video_r = video_subbands(recon.float())
    image_diff = (image_r - image).abs() * 2.0  # (B, 4, 3, H/2, W/2); orthonormal -> sum scale: x sqrt(4)
    low = image_diff[:, 0].mean()
    high = image_diff[:, 1:].mean()
    if video is not None:
        video_diff = (video_r - video).abs() * math.sqrt(8.0)  # (B, 8, 3, (T-1)/2, H/2, W/2)
        low = low + video_diff[:, 0].mean()
        high = high + video_diff[:, 1:].mean()
    return low_weight * low + high_weight * high, low, high


def subband_l1(subbands: dict[str, torch.Tensor]) -> torch.Tensor:
    """WF-VAE's WL loss: |W2 - W2'| + |W3 - W3'| summed over every element, divided by the batch size, between
    the encoder's energy-flow sub-bands and the decoder's predictions (W2' after its deeper flow was added)."""
    batch = subbands["enc_l1"].shape[0]
    return sum((subbands[f"enc_{level}"].float() - subbands[f"dec_{level}"].float()).abs().sum()
               for level in ("l1", "l2")) / batch


def lpips_frame_indices(num_frames: int, count: int) -> list[int]:
    """`count` evenly spaced frame indices including the first and last frame (all frames if fewer)."""
    if num_frames < 1 or count < 1:
        raise ValueError(f"need num_frames >= 1 and count >= 1, got {num_frames} and {count}")
    if count >= num_frames:
        return list(range(num_frames))
    if count == 1:
        return [0]
    # round(i * (T - 1) / (count - 1)), half up, in integers
    return [(2 * i * (num_frames - 1) + count - 1) // (2 * (count - 1)) for i in range(count)]


def video_lpips(lpips: LPIPS, x: torch.Tensor, recon: torch.Tensor, count: int) -> torch.Tensor:
    """Mean LPIPS over `count` evenly spaced frames of each (B, 3, T, H, W) clip."""
    b, c, t, h, w = x.shape
    index = torch.tensor(lpips_frame_indices(t, count), device=x.device)
    frames = x.index_select(2, index).transpose(1, 2).reshape(-1, c, h, w)  # (B*n, 3, H, W)
    frames_r = recon.index_select(2, index).transpose(1, 2).reshape(-1, c, h, w)  # (B*n, 3, H, W)
    return lpips(frames, frames_r).mean()


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """0.5 * (E[relu(1 - D(real))] + E[relu(1 + D(fake))])."""
    return 0.5 * (F.relu(1.0 - logits_real.float()).mean() + F.relu(1.0 + logits_fake.float()).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """-E[D(fake)]."""
    return -logits_fake.float().mean()


def _mean_over_processes(t: torch.Tensor) -> torch.Tensor:
    """Mean of `t` over all elements and, under torch.distributed, over all processes."""
    mean = t.detach().float().mean()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(mean)  # SUM: gloo has no AVG
        mean = mean / dist.get_world_size()
    return mean


class LeCAM(nn.Module):
    """LeCAM regulariser (Tseng et al. 2021): EMAs of the mean real and fake logits anchor the
    discriminator, penalising real logits above the fake EMA and fake logits below the real EMA.

    The EMAs are buffers so they are saved and restored with checkpoints. Batch means are averaged over
    processes first, so every data-parallel replica holds the same EMA.
    """

    def __init__(self, decay: float = 0.99):
        super().__init__()
        self.decay = decay
        self.register_buffer("ema_real", torch.zeros((), dtype=torch.float32))
        self.register_buffer("ema_fake", torch.zeros((), dtype=torch.float32))

    @torch.no_grad()
    def update(self, logits_real: torch.Tensor, logits_fake: torch.Tensor) -> None:
        self.ema_real.lerp_(_mean_over_processes(logits_real), 1.0 - self.decay)
        self.ema_fake.lerp_(_mean_over_processes(logits_fake), 1.0 - self.decay)

    def forward(self, logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
        """Update the EMAs with this batch, then return the penalty (EMAs treated as constants)."""
        self.update(logits_real, logits_fake)
        return (
            F.relu(logits_real.float() - self.ema_fake).pow(2).mean()
            + F.relu(self.ema_real - logits_fake.float()).pow(2).mean()
        )


def _as_video(x: torch.Tensor) -> torch.Tensor:
    if x.ndim == 4:
        return x.unsqueeze(2)  # (B, C, 1, H, W)
    if x.ndim != 5:
        raise ValueError(f"expected a video (B, C, T, H, W) or image (B, C, H, W), got shape {tuple(x.shape)}")
    return x


def adaptive_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor,
                    max_weight: float = 1e4) -> torch.Tensor:
    """taming-transformers' GAN balance: |d rec / d W| / (|d gan / d W| + 1e-6) at the decoder's last weight W,
    clamped to [0, max_weight] and detached, so neither term's gradient swamps the other's at the output."""
    (rec_grad,) = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    (gan_grad,) = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)
    return (rec_grad.float().norm() / (gan_grad.float().norm() + 1e-6)).clamp(0.0, max_weight).detach()


class VAELoss(nn.Module):
    """All VAE losses with the weights of a `LossConfig`.

    `forward` gives the autoencoder's loss; `discriminator_loss` the discriminator's (train it only while
    `gan_active(step)`). LPIPS is built from the configured weight files when `lpips_weight > 0` (raising
    `LPIPSWeightsMissing` if they are absent) unless an `LPIPS` module is passed in.
    """

    def __init__(self, config: LossConfig, lpips: LPIPS | None = None):
        super().__init__()
        self.config = config
        if config.lpips_weight > 0 and lpips is None:
            lpips = LPIPS(config.lpips_vgg_path, config.lpips_lin_path)
        self.lpips = lpips if config.lpips_weight > 0 else None
        self.lecam = LeCAM(config.lecam_decay)

    def gan_active(self, step: int) -> bool:
        return self.config.disc_weight > 0 and step >= self.config.disc_start

    def forward(self, x: torch.Tensor, recon: torch.Tensor, posterior: Any, step: int,
                discriminator: Discriminator | None = None, last_layer: torch.Tensor | None = None,
                subbands: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total generator loss and the unweighted terms (detached) for logging.

        x, recon: (B, 3, T, H, W) or (B, 3, H, W) in [-1, 1]; posterior: the model's `latent_dist` (a
        `DiagonalGaussian`). Once `gan_active(step)` the discriminator is needed (gradients then also reach its
        parameters, so zero them before its own update), and with `adaptive_disc_weight` the decoder's `last_layer` weight too; the WL
        loss needs the model's energy-flow `subbands` (WF-VAE's output).
        """
        if x.shape != recon.shape:
            raise ValueError(f"input and reconstruction shapes differ: {tuple(x.shape)} vs {tuple(recon.shape)}")
        cfg = self.config
        x, recon = _as_video(x), _as_video(recon)
        logs: dict[str, torch.Tensor] = {}
        rec = self._reconstruction(x, recon, logs)
        logs["kl"] = posterior.kl().mean()  # summed over the latent, averaged over the batch
        total = rec + cfg.kl_weight * logs["kl"]
        if cfg.subband_weight > 0:
            if subbands is None:
                raise ValueError("loss.subband_weight > 0 needs the model's energy-flow sub-bands (a WF-VAE)")
            logs["subband"] = subband_l1(subbands)
            total = total + cfg.subband_weight * logs["subband"]
        if self.gan_active(step):
            total = total + self._generator_gan(recon, rec, discriminator, last_layer, logs, step)
        logs["total"] = total
        return total, {k: v.detach() for k, v in logs.items()}

    def _reconstruction(self, x: torch.Tensor, recon: torch.Tensor, logs: dict) -> torch.Tensor:
        """The weighted pixel, wavelet and LPIPS terms: element means, or for `frame_sum` per-frame sums."""
        cfg = self.config
        logs["pixel"] = pixel_l1(x, recon)
        wavelet, logs["wavelet_low"], logs["wavelet_high"] = wavelet_l1(
            x, recon, cfg.wavelet_low_weight, cfg.wavelet_high_weight
        )
        rec = cfg.pixel_weight * logs["pixel"] + wavelet
        if self.lpips is not None:
            logs["lpips"] = video_lpips(self.lpips, x, recon, cfg.lpips_frames)
            rec = rec + cfg.lpips_weight * logs["lpips"]
        return rec * x[0, :, 0].numel() if cfg.reduction == "frame_sum" else rec  # x C*H*W: sums per frame

    def _generator_gan(self, recon: torch.Tensor, rec: torch.Tensor, discriminator: Discriminator | None,
                       last_layer: torch.Tensor | None, logs: dict, step: int) -> torch.Tensor:
        cfg = self.config
        if discriminator is None:
            raise ValueError(f"step {step} >= loss.disc_start={cfg.disc_start}: the GAN loss needs the discriminator")
        logs["gan"] = hinge_g_loss(discriminator(recon))
        if not cfg.adaptive_disc_weight:
            return cfg.disc_weight * logs["gan"]
        if last_layer is None:
            raise ValueError("loss.adaptive_disc_weight needs the decoder's last layer (vae.get_last_layer())")
        logs["gan_weight"] = cfg.disc_weight * adaptive_weight(rec, logs["gan"], last_layer, cfg.adaptive_weight_max)
        return logs["gan_weight"] * logs["gan"]

    def discriminator_loss(
        self, x: torch.Tensor, recon: torch.Tensor, discriminator: Discriminator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Hinge loss + lecam_weight * LeCAM on real `x` and detached `recon`; updates the LeCAM EMAs."""
        x, recon = _as_video(x), _as_video(recon)
        b = x.shape[0]
        # One call for real and fake: a single DDP forward, and per-sample norms make it equal to two calls.
        logits = discriminator(torch.cat([x.detach(), recon.detach()]))  # (2B, 1, T, h, w)
        logits_real, logits_fake = logits[:b], logits[b:]
        logs = {
            "disc_hinge": hinge_d_loss(logits_real, logits_fake),
            "logits_real": logits_real.detach().float().mean(),
            "logits_fake": logits_fake.detach().float().mean(),
        }
        total = logs["disc_hinge"]
        if self.config.lecam_weight > 0:
            logs["lecam"] = self.lecam(logits_real, logits_fake)
            total = total + self.config.lecam_weight * logs["lecam"]
        logs["disc_total"] = total
        return total, {k: v.detach() for k, v in logs.items()}
