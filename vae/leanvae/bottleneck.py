"""The compressed-sensing latent bottleneck: a learnable measurement and ISTA-Net+ restoration.

Encoding measures each 512-d token p as y = Phi p (the posterior mean; the log-variance comes from a
separate linear map). Decoding restores a token from its d measurements by unrolled ISTA-Net+: start at
x = Q y, then K phases of a gradient step on |Phi x - y|^2 followed by a learned sparsifying transform,
soft-thresholding and its learned inverse, added back as a residual.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..causal import Cache
from .layers import NAFStack

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


class ISTAPhase(nn.Module):
    """One unrolled ISTA-Net+ iteration with learnable step size w and threshold theta."""

    def __init__(self, dim: int, depth: int):
        super().__init__()
        self.step = nn.Parameter(torch.ones(()))
        self.threshold = nn.Parameter(torch.full((), 0.01))
        self.forward_transform = NAFStack(dim, depth, residual=False)
        self.backward_transform = NAFStack(dim, depth, residual=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor, phi: torch.Tensor, cache: Cache = None) -> torch.Tensor:
        r = x - self.step * ((x @ phi.T - y) @ phi)  # (B, T, H, W, D): gradient step on the measurement error
        f = self.forward_transform(r, cache)  # (B, T, H, W, D)
        f = torch.sign(f) * torch.relu(f.abs() - self.threshold)  # soft-threshold: sparsity prior
        return r + self.backward_transform(f, cache)  # (B, T, H, W, D)


class CompressedSensingBottleneck(nn.Module):
    def __init__(self, dim: int, latent_channels: int, phases: int = 2, depth: int = 2):
        super().__init__()
        self.phi = nn.Parameter(torch.randn(latent_channels, dim) / dim**0.5)  # N(0, 1/dim)
        # Phi's rows start near-orthonormal (norm^2 ~ 1), so Phi^T is close to its pseudo-inverse.
        self.q = nn.Parameter(self.phi.detach().T.clone())  # (D, d)
        self.to_logvar = nn.Linear(dim, latent_channels)
        self.phases = nn.ModuleList([ISTAPhase(dim, depth) for _ in range(phases)])

    def measure(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, H, W, D) tokens -> posterior mean and log-variance, each (B, T, H, W, d)."""
        mean = tokens @ self.phi.T  # (B, T, H, W, d)
        logvar = self.to_logvar(tokens).clamp(LOGVAR_MIN, LOGVAR_MAX)  # (B, T, H, W, d)
        return mean, logvar

    def restore(self, y: torch.Tensor, cache: Cache = None) -> torch.Tensor:
        """(B, T, H, W, d) measurements -> (B, T, H, W, D) tokens."""
        x = y @ self.q.T  # (B, T, H, W, D)
        for phase in self.phases:
            x = phase(x, y, self.phi, cache)
        return x
