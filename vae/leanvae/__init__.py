"""LeanVAE (Haar patchifier, NAF layers, ISTA-Net+ compressed-sensing bottleneck) and its presets."""

from .model import LEANVAE_PRESETS, LeanVAE

__all__ = ["LEANVAE_PRESETS", "LeanVAE"]
