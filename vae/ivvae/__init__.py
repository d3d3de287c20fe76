"""IV-VAE: keyframe-based temporal compression and group causal convolution (ali-vilab, CVPR 2025)."""

from .model import IVVAE_IMAGE_PRESETS, IVVAE_PRESETS, IVImageVAE, IVVAE

__all__ = ["IVVAE", "IVImageVAE", "IVVAE_PRESETS", "IVVAE_IMAGE_PRESETS"]
