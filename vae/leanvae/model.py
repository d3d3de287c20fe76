"""LeanVAE: a lean video VAE built from Haar wavelets, NAF layers and a compressed-sensing bottleneck.

Video (B, 3, 1 + 4k, H, W) in [-1, 1]  <->  latent (B, d, 1 + k, H/8, W/8). No attention, no normalisation
across time, every temporal operator causal: that makes causal-cache chunked encoding and decoding exact.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn as nn
from diffusers.configuration_utils import register_to_config
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  diffusers' pipeline loader looks it up here
from timm.layers import trunc_normal_

from ..autoencoder import VideoAutoencoder
from ..causal import Cache
from ..init import unit_
from .bottleneck import CompressedSensingBottleneck
from .layers import NAFStack
from .official import load_official
from .patchify import WaveletPatchEmbed, WaveletPatchUnembed

LEANVAE_PRESETS: dict[str, dict] = {
    # The official LeanVAE sizes (39.8 M parameters).
    "lean-4ch": dict(latent_channels=4),
    "lean-16ch": dict(latent_channels=16),
    # Same structure, narrower: trains on a laptop CPU in minutes (the default of train.sh).
    "lean-small": dict(latent_channels=4, lc_dim=64, hc_dim=128, fusion_layers=2, ista_depth=1),
    # For unit tests.
    "lean-tiny": dict(latent_channels=4, lc_dim=8, hc_dim=16, branch_layers=1, fusion_layers=1, ista_phases=1,
                      ista_depth=1),
}


class LeanVAE(VideoAutoencoder):
    r"""LeanVAE video autoencoder (diffusers-compatible: `save_pretrained` / `from_pretrained`).

    Args:
        latent_channels: d, channels of the latent (4 or 16 in the official models).
        lc_dim / hc_dim: widths of the low- and high-frequency token branches (128 / 384).
        branch_layers: ResNAF layers on each branch, in the encoder and again in the decoder.
        fusion_layers: ResNAF layers on the concatenated (lc_dim + hc_dim) tokens, each side.
        ista_phases / ista_depth: unrolled ISTA-Net+ phases, and plain NAF layers per transform in each.
        latents_mean / latents_std: latent normalisation for diffusion, per channel or one scalar.
    """

    temporal_compression_ratio = 4
    spatial_compression_ratio = 8

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 4,
        lc_dim: int = 128,
        hc_dim: int = 384,
        branch_layers: int = 2,
        fusion_layers: int = 4,
        ista_phases: int = 2,
        ista_depth: int = 2,
        latents_mean: Union[float, Sequence[float]] = 0.0,
        latents_std: Union[float, Sequence[float]] = 1.0,
    ):
        super().__init__()
        dim = lc_dim + hc_dim
        self.embed = WaveletPatchEmbed(lc_dim, hc_dim)
        self.enc_lc = NAFStack(lc_dim, branch_layers)
        self.enc_hc = NAFStack(hc_dim, branch_layers)
        self.enc_fusion = NAFStack(dim, fusion_layers)
        self.bottleneck = CompressedSensingBottleneck(dim, latent_channels, ista_phases, ista_depth)
        self.dec_fusion = NAFStack(dim, fusion_layers)
        self.dec_lc = NAFStack(lc_dim, branch_layers)
        self.dec_hc = NAFStack(hc_dim, branch_layers)
        self.unembed = WaveletPatchUnembed(lc_dim, hc_dim)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """The official initialisation: linear layers trunc-normal (std 0.02), convolutions xavier-uniform, biases
        zero, LayerNorm gains one; the bottleneck sets its own (Phi ~ N(0, 1/D), Q = Phi^T, ISTA step 1 and
        threshold 0.01), as does the official code. One change: the patch embedding is unit-scale (`vae/init.py`),
        so tokens, and the latent means measured from them, start at the input's scale (0.54 spread on random
        video) instead of 0.2 beside a posterior std of 1. Held-out real clips after the CPU default's 800 steps:
        21.29 dB; the official initialisation as is 21.33 dB, PyTorch's defaults (before) 21.17 dB."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=0.02)
            elif isinstance(module, nn.Conv3d):
                nn.init.xavier_uniform_(module.weight)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
            if isinstance(module, (nn.Linear, nn.Conv3d, nn.LayerNorm)) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for layer in self.embed.children():
            unit_(layer)

    def _encode_chunk(self, video: torch.Tensor, cache: Cache, first: bool) -> torch.Tensor:
        lc, hc = self.embed(video, first)  # (B, t, h, w, lc_dim), (B, t, h, w, hc_dim)
        tokens = torch.cat([self.enc_lc(lc, cache), self.enc_hc(hc, cache)], dim=-1)  # (B, t, h, w, D)
        mean, logvar = self.bottleneck.measure(self.enc_fusion(tokens, cache))  # 2 x (B, t, h, w, d)
        return torch.cat([mean, logvar], dim=-1).permute(0, 4, 1, 2, 3)  # (B, 2d, t, h, w)

    def _decode_chunk(self, z: torch.Tensor, cache: Cache, first: bool, last: bool) -> torch.Tensor:
        tokens = self.bottleneck.restore(z.permute(0, 2, 3, 4, 1), cache)  # (B, t, h, w, D)
        lc, hc = self.dec_fusion(tokens, cache).split([self.config.lc_dim, self.config.hc_dim], dim=-1)
        return self.unembed(self.dec_lc(lc, cache), self.dec_hc(hc, cache), first)  # (B, 3, T, H, W)

    def get_last_layer(self) -> torch.Tensor:
        return self.unembed.video_hc.weight  # the map to most of the output's wavelet coefficients

    @classmethod
    def from_official_checkpoint(cls, path, latents_mean: Union[float, Sequence[float]] = 0.0,
                                 latents_std: Union[float, Sequence[float]] = 1.0) -> "LeanVAE":
        """The released weights (`LeanVAE-dim4.ckpt`, `LeanVAE-dim16.ckpt`, or an official Lightning training
        checkpoint); the size is read from the tensors. On a video x in [-1, 1] the model gives the official
        latents of x / 2 and decodes to twice the official video (the official range is [-0.5, 0.5])."""
        return load_official(cls, path, latents_mean, latents_std)
