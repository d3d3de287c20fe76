"""The posterior every video VAE here returns: a diagonal Gaussian over latents of any rank."""

from __future__ import annotations

from typing import Optional

import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution


class DiagonalGaussian(DiagonalGaussianDistribution):
    """diffusers' posterior, with kl()/nll() summed over every non-batch dim (its own sums dims 1-3 only,
    which is wrong for 5-D video latents). Built from (B, 2d, ...) parameters: means, then log-variances."""

    def kl(self, other: Optional[DiagonalGaussianDistribution] = None) -> torch.Tensor:
        dims = list(range(1, self.mean.ndim))
        if self.deterministic:
            return self.mean.new_zeros(self.mean.shape[0])
        if other is None:
            return 0.5 * torch.sum(self.mean.pow(2) + self.var - 1.0 - self.logvar, dim=dims)
        return 0.5 * torch.sum(
            (self.mean - other.mean).pow(2) / other.var + self.var / other.var - 1.0 - self.logvar + other.logvar,
            dim=dims,
        )

    def nll(self, sample: torch.Tensor, dims: Optional[list[int]] = None) -> torch.Tensor:
        return super().nll(sample, dims=dims or list(range(1, self.mean.ndim)))
