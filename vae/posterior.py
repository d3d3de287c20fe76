"""The posterior every video VAE here returns: a diagonal Gaussian over latents of any rank."""

from __future__ import annotations

from typing import Optional

import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.utils.torch_utils import randn_tensor


class DiagonalGaussian(DiagonalGaussianDistribution):
    """diffusers' posterior, with kl()/nll() summed over every non-batch dim (its own sums dims 1-3 only,
    which is wrong for 5-D video latents). Built from (B, 2d, ...) parameters: means, then log-variances."""

    def kl(self, other: Optional[DiagonalGaussianDistribution] = None) -> torch.Tensor:
        """KL(self || other), other N(0, I) by default, per sample (B,); in float32, as the training loss sums
        it over every latent element, too many for bfloat16's 8 bits."""
        dims = list(range(1, self.mean.ndim))
        if self.deterministic:
            return self.mean.new_zeros(self.mean.shape[0], dtype=torch.float32)
        mean, logvar = self.mean.float(), self.logvar.float()
        if other is None:
            return 0.5 * torch.sum(mean.pow(2) + logvar.exp() - 1.0 - logvar, dim=dims)
        other_mean, other_logvar = other.mean.float(), other.logvar.float()
        return 0.5 * torch.sum((mean - other_mean).pow(2) / other_logvar.exp() + (logvar - other_logvar).exp()
                               - 1.0 - logvar + other_logvar, dim=dims)

    def nll(self, sample: torch.Tensor, dims: Optional[list[int]] = None) -> torch.Tensor:
        return super().nll(sample, dims=dims or list(range(1, self.mean.ndim)))


def with_latent_noise(z: torch.Tensor, fraction: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """z (B, d, ...) plus Gaussian noise of `fraction` times each latent channel's std over the batch: what a VAE's
    decoder sees in training when it should tolerate the errors a diffusion model makes in its latent (a decoder
    trained only on exact latents can turn small latent errors into blocks of wrong colour). The noise's scale
    is not differentiated; 0 returns z itself."""
    if not fraction:
        return z
    scale = z.detach().std(dim=[0, *range(2, z.ndim)], keepdim=True)  # (1, d, 1, ...)
    return z + fraction * scale * randn_tensor(z.shape, generator=generator, device=z.device, dtype=z.dtype)
