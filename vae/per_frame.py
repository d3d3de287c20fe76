"""`PerFrameVAE`: an image VAE (a diffusers `AutoencoderKL`, e.g. the SD-VAE of the original Latte) applied to
every frame of a video on its own, behind the `VideoAutoencoder` contract: temporal ratio 1, so T frames give T
latent frames and any T is valid. Frames are folded into the batch; no frame sees another, so chunking is exact
with nothing to cache.
"""

from __future__ import annotations

import json
from typing import Any, Sequence, Union

import torch
from diffusers import AutoencoderKL
from diffusers.configuration_utils import register_to_config
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  diffusers' pipeline loader looks it up here

from .autoencoder import VideoAutoencoder
from .causal import Cache


class PerFrameVAE(VideoAutoencoder):
    """Wraps an `AutoencoderKL` built from `image_vae_config`. Saved and loaded like any bundled VAE; make
    one from a trained image VAE with `PerFrameVAE.from_image_vae(vae)`, which turns its `scaling_factor` and
    `shift_factor` into the latent normalisation (mean = shift, std = 1 / scale)."""

    temporal_compression_ratio = 1

    @register_to_config
    def __init__(self, image_vae_config: dict[str, Any], latents_mean: Union[float, Sequence[float]] = 0.0,
                 latents_std: Union[float, Sequence[float]] = 1.0):
        super().__init__()
        self.image_vae = AutoencoderKL.from_config(image_vae_config)

    @classmethod
    def from_image_vae(cls, vae: AutoencoderKL) -> "PerFrameVAE":
        # Through JSON, so the config in memory equals the one a save and load gives (tuples become lists).
        config = json.loads(json.dumps({k: v for k, v in vae.config.items() if not k.startswith("_")}))
        model = cls(image_vae_config=config, latents_mean=float(vae.config.shift_factor or 0.0),
                    latents_std=1.0 / float(vae.config.scaling_factor))
        model.image_vae.load_state_dict(vae.state_dict())  # into float32 weights: a half-precision VAE is upcast
        return model

    @property
    def spatial_compression_ratio(self) -> int:
        return 2 ** (len(self.image_vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return self.image_vae.config.latent_channels

    def _encode_chunk(self, video: torch.Tensor, cache: Cache, first: bool) -> torch.Tensor:
        b, t = video.shape[0], video.shape[2]
        frames = video.transpose(1, 2).flatten(0, 1)  # (B*T, 3, H, W)
        params = self.image_vae.encode(frames).latent_dist.parameters  # (B*T, 2d, h, w)
        return params.unflatten(0, (b, t)).transpose(1, 2)  # (B, 2d, T, h, w)

    def _decode_chunk(self, z: torch.Tensor, cache: Cache, first: bool, last: bool) -> torch.Tensor:
        b, t = z.shape[0], z.shape[2]
        frames = self.image_vae.decode(z.transpose(1, 2).flatten(0, 1)).sample  # (B*T, 3, H, W)
        return frames.unflatten(0, (b, t)).transpose(1, 2)  # (B, 3, T, H, W)

    def get_last_layer(self) -> torch.Tensor:
        return self.image_vae.decoder.conv_out.weight
