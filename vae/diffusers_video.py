"""`DiffusersVideoVAE`: the video VAEs users arrive with - diffusers' `AutoencoderKLWan` (Wan 2.1 / 2.2, Qwen-Image,
Cosmos-Predict2.5), `AutoencoderKLCogVideoX`, `AutoencoderKLHunyuanVideo` and `AutoencoderKLLTXVideo` - behind the
`VideoAutoencoder` contract, so they can be cached, trained on, sampled through and compared like the bundled VAEs.

    vae = load_autoencoder("/models/Wan2.1-T2V-1.3B-Diffusers")   # a pipeline folder (its vae/) or a VAE folder
    vae = DiffusersVideoVAE.from_diffusers(AutoencoderKLWan.from_pretrained(...))

Latents and pixels are the diffusers model's own: `encode(x).latent_dist.mean` equals the model's
`encode(x).latent_dist.mean`, `decode(z).sample` its `decode(z).sample`. What each keeps of the contract's chunked
coding (a latent chunk by chunk, with a cache, equal to coding it whole):

| class | frames | chunked encode / decode |
|---|---|---|
| Wan | 1 + 4k | any `chunk_size`: the model's own causal cache (two frames per convolution), fed the same 1 + 4 + 4 ... frame groups and single latent frames as its own `encode` / `decode` |
| CogVideoX | 1 + 8k | the model's own frame batches only (9 frames / 3 latent frames, then 8 / 2 at a time): its group norms average over every frame of a batch, so another chunking would change the output. `chunk_size` does not change them; memory is bounded by them. (Its decoder keeps a batch's first frame only when the batch has an odd number of latent frames, so an even number would not decode back to 1 + 4k frames: hence 1 + 8k.) |
| HunyuanVideo | 1 + 4k | none of the contract's: its mid-block attention sees every frame (causally). diffusers codes a video of more than 16 frames in overlapping 16-frame windows, blended (its default `use_framewise_encoding` / `_decoding`): bounded memory, approximately the whole-video result; the wrapper keeps that default |
| LTX-Video | 1 + 8k | none: its decoder is not causal, so a video is coded whole |

Their own memory savers stay theirs: `model.vae.enable_tiling()` (spatial tiles, blended, so approximate) bounds
memory for any of them, and LTX-Video's `use_framewise_encoding` / `_decoding` windows it in time as HunyuanVideo's.

Latent normalisation (`latents_mean` / `latents_std`, what the DiT sees is `(z - mean) / std`): Wan's from its
config; CogVideoX and HunyuanVideo scale by `scaling_factor` (mean 0, std 1 / scaling_factor); LTX-Video by its
`latents_mean` / `latents_std` buffers and `scaling_factor`, as its pipeline does.
"""

from __future__ import annotations

import json
from typing import Any, Sequence, Union

import torch
from diffusers import AutoencoderKLCogVideoX, AutoencoderKLHunyuanVideo, AutoencoderKLLTXVideo, AutoencoderKLWan
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, patchify, unpatchify
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  diffusers' pipeline loader looks it up here

from .autoencoder import VideoAutoencoder
from .causal import Cache

VIDEO_VAES = {cls.__name__: cls for cls in (AutoencoderKLWan, AutoencoderKLCogVideoX, AutoencoderKLHunyuanVideo,
                                            AutoencoderKLLTXVideo)}
WAN_GROUP = 4  # diffusers' Wan encode loop feeds its encoder 4 frames at a time, whatever the model's ratio


def ratios(vae) -> tuple[int, int]:
    """(temporal, spatial) compression of a diffusers video VAE, from its structure."""
    config = vae.config
    if isinstance(vae, AutoencoderKLWan):  # its scale_factor_* config keys are not read by the model itself
        return 2 ** sum(config.temperal_downsample), 2 ** (len(config.dim_mult) - 1) * (config.patch_size or 1)
    if isinstance(vae, AutoencoderKLCogVideoX):
        return int(config.temporal_compression_ratio), 2 ** (len(config.block_out_channels) - 1)
    return int(vae.temporal_compression_ratio), int(vae.spatial_compression_ratio)  # set by Hunyuan's / LTX's init


def latent_statistics(vae) -> tuple[Union[float, list[float]], Union[float, list[float]]]:
    """(latents_mean, latents_std) the model's own pipelines normalise with."""
    config = vae.config
    if isinstance(vae, AutoencoderKLWan):
        return list(config.latents_mean), list(config.latents_std)
    if isinstance(vae, AutoencoderKLLTXVideo):  # its pipeline: (z - mean) * scaling_factor / std
        return vae.latents_mean.double().tolist(), (vae.latents_std.double() / config.scaling_factor).tolist()
    return 0.0, 1.0 / float(config.scaling_factor)


class DiffusersVideoVAE(VideoAutoencoder):
    """Wraps a diffusers video VAE of class `vae_class` built from `vae_config`. Saved and loaded like any bundled
    VAE (`save_pretrained`, `load_autoencoder`), so a cache or a DiT trained on it records which VAE it was."""

    half_precision_channels_last = False  # not measured for these models: keep diffusers' own layout

    @register_to_config
    def __init__(self, vae_class: str, vae_config: dict[str, Any],
                 latents_mean: Union[float, Sequence[float]] = 0.0, latents_std: Union[float, Sequence[float]] = 1.0):
        super().__init__()
        if vae_class not in VIDEO_VAES:
            raise ValueError(f"unknown diffusers video VAE {vae_class!r}; wrapped are {', '.join(VIDEO_VAES)}")
        self.vae = VIDEO_VAES[vae_class].from_config(vae_config)
        self.wrapped_class = vae_class
        # Wan's cache holds one entry per causal convolution, addressed by call order: counted once, not per chunk.
        self._wan_cache_sizes = {part: sum(isinstance(m, WanCausalConv3d) for m in getattr(self.vae, part).modules())
                                 for part in ("encoder", "decoder")} if isinstance(self.vae, AutoencoderKLWan) else {}
        self.temporal_compression_ratio, self.spatial_compression_ratio = ratios(self.vae)
        if isinstance(self.vae, AutoencoderKLCogVideoX):
            self.frame_step = 2 * self.temporal_compression_ratio
        if isinstance(self.vae, AutoencoderKLWan) and self.temporal_compression_ratio != WAN_GROUP:
            raise ValueError(f"AutoencoderKLWan with temporal compression {self.temporal_compression_ratio}: diffusers "
                             f"codes Wan in groups of {WAN_GROUP} frames, so only 4x temporal compression works")
        for name, value in (("latents_mean", latents_mean), ("latents_std", latents_std)):
            if not isinstance(value, (int, float)) and len(value) != self.latent_channels:
                raise ValueError(f"{name} has {len(value)} values for {self.latent_channels} latent channels")

    @classmethod
    def from_diffusers(cls, vae) -> "DiffusersVideoVAE":
        """Wrap a loaded diffusers video VAE (its weights are copied, upcast to float32)."""
        # Through JSON, so the config in memory equals the one a save and load gives (tuples become lists).
        config = json.loads(json.dumps({k: v for k, v in vae.config.items() if not k.startswith("_")}))
        mean, std = latent_statistics(vae)
        model = cls(vae_class=type(vae).__name__, vae_config=config, latents_mean=mean, latents_std=std)
        model.vae.load_state_dict(vae.state_dict())
        return model

    @property
    def latent_channels(self) -> int:
        return self.vae.config.z_dim if isinstance(self.vae, AutoencoderKLWan) else self.vae.config.latent_channels

    # ------------------------------------------------------------------ the chunks each model can keep
    def _chunks(self, latent_frames: int, chunk: int) -> list[tuple[int, int]]:
        if isinstance(self.vae, AutoencoderKLWan):
            return super()._chunks(latent_frames, chunk)
        if isinstance(self.vae, AutoencoderKLCogVideoX):
            return self._cogvideox_batches(latent_frames)
        return [(0, latent_frames)]

    def _cogvideox_batches(self, latent_frames: int) -> list[tuple[int, int]]:
        """diffusers' CogVideoX batches, in latent frames, for encoding and decoding alike: 2 latent frames (8 video
        frames) at a time, the odd one in the first batch."""
        if latent_frames % 2 == 0:
            raise ValueError(f"AutoencoderKLCogVideoX decodes an odd number of latent frames (1 + 8k video frames), "
                             f"got {latent_frames}")
        size = self.vae.num_latent_frames_batch_size
        stops = [min(size + 1, latent_frames), *range(size + 1 + size, latent_frames + 1, size)]
        return list(zip([0, *stops[:-1]], stops))

    # ------------------------------------------------------------------ coding
    def _encode_chunk(self, video: torch.Tensor, cache: Cache, first: bool) -> torch.Tensor:
        cache = {} if cache is None else cache
        vae = self.vae
        if isinstance(vae, AutoencoderKLWan):
            frames = patchify(video, vae.config.patch_size) if vae.config.patch_size else video
            rest = frames[:, :, 1:] if first else frames
            groups = [frames[:, :, :1]] * first + list(rest.split(WAN_GROUP, dim=2) if rest.shape[2] else [])
            feats = cache.setdefault("encoder", [None] * self._wan_cache_sizes["encoder"])
            out = torch.cat([vae.encoder(group, feat_cache=feats, feat_idx=[0]) for group in groups], dim=2)
            return vae.quant_conv(out)  # (B, 2d, t', h, w)
        if isinstance(vae, AutoencoderKLCogVideoX):
            out, cache["encoder"] = vae.encoder(video, conv_cache=cache.get("encoder"))
            return vae.quant_conv(out) if vae.quant_conv is not None else out
        return vae.encode(video).latent_dist.parameters  # the whole video (Hunyuan, LTX)

    def _decode_chunk(self, z: torch.Tensor, cache: Cache, first: bool, last: bool) -> torch.Tensor:
        cache = {} if cache is None else cache
        vae = self.vae
        if isinstance(vae, AutoencoderKLWan):
            x = vae.post_quant_conv(z)
            feats = cache.setdefault("decoder", [None] * self._wan_cache_sizes["decoder"])
            frames = [vae.decoder(x[:, :, i : i + 1], feat_cache=feats, feat_idx=[0], first_chunk=first and i == 0)
                      for i in range(x.shape[2])]  # one latent frame at a time, as diffusers' Wan decode
            out = torch.cat(frames, dim=2)
            out = unpatchify(out, vae.config.patch_size) if vae.config.patch_size else out
            return out.clamp(-1.0, 1.0)  # (B, 3, t, H, W), clamped as the model's own decode
        if isinstance(vae, AutoencoderKLCogVideoX):
            x = vae.post_quant_conv(z) if vae.post_quant_conv is not None else z
            out, cache["decoder"] = vae.decoder(x, conv_cache=cache.get("decoder"))
            return out
        if isinstance(vae, AutoencoderKLLTXVideo) and vae.config.timestep_conditioning:
            # Its pipeline's default decode_timestep = 0 (no noise mixed into z): the decoder at timestep 0. A
            # decoder with `decoder_inject_noise` still adds noise of a learned scale, from the global generator.
            return vae.decode(z, temb=torch.zeros(z.shape[0], device=z.device, dtype=z.dtype)).sample
        return vae.decode(z).sample

