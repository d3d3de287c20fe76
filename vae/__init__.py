"""Video VAEs behind one contract (`VideoAutoencoder`): LeanVAE, WF-VAE, IV-VAE, and any diffusers image VAE per
frame.

Shared parts live here (causal cache, Haar wavelets, posterior, losses, discriminator, LPIPS); each model has
its own subpackage. Build a preset with `build_autoencoder`, load any saved one with `load_autoencoder`.
"""

from .autoencoder import AutoencoderOutput, VideoAutoencoder, channel_statistics
from .ivvae import IVVAE, IVImageVAE
from .leanvae import LeanVAE
from .per_frame import PerFrameVAE
from .posterior import DiagonalGaussian
from .registry import BUNDLED_MODELS, VAE_PRESETS, VAEPreset, build_autoencoder, get_preset, load_autoencoder
from .wfvae import WFVAE

__all__ = [
    "BUNDLED_MODELS",
    "VAE_PRESETS",
    "AutoencoderOutput",
    "DiagonalGaussian",
    "IVImageVAE",
    "IVVAE",
    "LeanVAE",
    "PerFrameVAE",
    "VAEPreset",
    "VideoAutoencoder",
    "WFVAE",
    "build_autoencoder",
    "channel_statistics",
    "get_preset",
    "load_autoencoder",
]
