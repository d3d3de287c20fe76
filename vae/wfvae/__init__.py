"""WF-VAE (wavelet energy-flow video VAE) and its presets."""

from .model import WFVAE, WFVAE_PRESETS

__all__ = ["WFVAE", "WFVAE_PRESETS"]
