"""LeanVAE: the lean video VAE (Haar patchifier, NAF layers, ISTA-Net+ compressed-sensing bottleneck)."""

from .model import VAE_PRESETS, DiagonalGaussian, LeanVAE, LeanVAEOutput

__all__ = ["LeanVAE", "VAE_PRESETS", "DiagonalGaussian", "LeanVAEOutput"]
