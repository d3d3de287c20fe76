"""Video VAEs behind one contract (`VideoAutoencoder`): LeanVAE, WF-VAE, IV-VAE, any diffusers image VAE per
frame, and diffusers' Wan, CogVideoX, HunyuanVideo and LTX-Video VAEs.

Shared parts live here (causal cache, Haar wavelets, posterior, losses, discriminator, LPIPS); each model has
its own subpackage. Build a preset with `build_autoencoder`, load any saved one with `load_autoencoder`.
"""

from .autoencoder import AutoencoderOutput, VideoAutoencoder, channel_statistics, model_name
from .diffusers_video import DiffusersVideoVAE
from .ivvae import IVVAE, IVImageVAE
from .leanvae import LeanVAE
from .per_frame import PerFrameVAE
from .posterior import DiagonalGaussian
from .registry import (BUNDLED_MODELS, VAE_PRESETS, VAEPreset, build_autoencoder, get_preset, load_autoencoder,
                       vae_folder)
from .wfvae import WFVAE

__all__ = [
    "BUNDLED_MODELS",
    "VAE_PRESETS",
    "AutoencoderOutput",
    "DiagonalGaussian",
    "DiffusersVideoVAE",
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
    "model_name",
    "vae_folder",
]
