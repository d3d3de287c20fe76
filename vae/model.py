"""LeanVAE: a lean video VAE built from Haar wavelets, NAF layers and a compressed-sensing bottleneck.

Video (B, 3, 1 + 4k, H, W) in [-1, 1]  <->  latent (B, d, 1 + k, H/8, W/8). No attention, no normalisation
across time, every temporal operator causal: that makes causal-cache chunked encoding and decoding exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput

from .bottleneck import CompressedSensingBottleneck
from .layers import Cache, NAFStack
from .patchify import WaveletPatchEmbed, WaveletPatchUnembed

TIME_STRIDE, SPACE_STRIDE = 4, 8

VAE_PRESETS: dict[str, dict] = {
    # The official LeanVAE sizes (39.8 M parameters).
    "lean-4ch": dict(latent_channels=4),
    "lean-16ch": dict(latent_channels=16),
    # Same structure, narrower: trains on a laptop CPU in minutes (the default of train.sh).
    "lean-small": dict(latent_channels=4, lc_dim=64, hc_dim=128, fusion_layers=2, ista_depth=1),
    # For unit tests.
    "lean-tiny": dict(latent_channels=4, lc_dim=8, hc_dim=16, branch_layers=1, fusion_layers=1, ista_phases=1,
                      ista_depth=1),
}


class DiagonalGaussian(DiagonalGaussianDistribution):
    """diffusers' posterior, with kl()/nll() summed over every non-batch dim (its own sums dims 1-3 only)."""

    def kl(self, other: Optional[DiagonalGaussianDistribution] = None) -> torch.Tensor:
        dims = list(range(1, self.mean.ndim))
        if self.deterministic:
            return self.mean.new_zeros(self.mean.shape[0])
        if other is None:
            return 0.5 * torch.sum(self.mean.pow(2) + self.var - 1.0 - self.logvar, dim=dims)
        return 0.5 * torch.sum(
            (self.mean - other.mean).pow(2) / other.var + self.var / other.var - 1.0 - self.logvar + other.logvar,
            dim=dims,
        )

    def nll(self, sample: torch.Tensor, dims: Optional[list[int]] = None) -> torch.Tensor:
        return super().nll(sample, dims=dims or list(range(1, self.mean.ndim)))


@dataclass
class LeanVAEOutput(BaseOutput):
    sample: torch.Tensor
    latent_dist: DiagonalGaussian


class LeanVAE(ModelMixin, ConfigMixin):
    r"""LeanVAE video autoencoder (diffusers-compatible: `save_pretrained` / `from_pretrained`).

    Args:
        latent_channels: d, channels of the latent (4 or 16 in the official models).
        lc_dim / hc_dim: widths of the low- and high-frequency token branches (128 / 384).
        branch_layers: ResNAF layers on each branch, in the encoder and again in the decoder.
        fusion_layers: ResNAF layers on the concatenated (lc_dim + hc_dim) tokens, each side.
        ista_phases / ista_depth: unrolled ISTA-Net+ phases, and plain NAF layers per transform in each.
        scaling_factor: multiply latents by this before diffusion (diffusers convention).
    """

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
        scaling_factor: float = 1.0,
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
        self.default_chunk_size: Optional[int] = None

    # ------------------------------------------------------------------ chunking switch (like enable_tiling)
    def enable_chunking(self, chunk_size: int = 2) -> None:
        """Make `encode`/`decode` without an explicit `chunk_size` run causal-cache chunked (bounded memory)."""
        self.default_chunk_size = _check_chunk_size(chunk_size)

    def disable_chunking(self) -> None:
        self.default_chunk_size = None

    # ------------------------------------------------------------------ one chunk, channels-last tokens
    def _encode_tokens(self, x: torch.Tensor, first: bool, cache: Cache) -> tuple[torch.Tensor, torch.Tensor]:
        lc, hc = self.embed(x, first)  # (B, t, h, w, lc_dim), (B, t, h, w, hc_dim)
        tokens = torch.cat([self.enc_lc(lc, cache), self.enc_hc(hc, cache)], dim=-1)  # (B, t, h, w, D)
        return self.bottleneck.measure(self.enc_fusion(tokens, cache))  # 2 x (B, t, h, w, d)

    def _decode_tokens(self, z: torch.Tensor, first: bool, cache: Cache) -> torch.Tensor:
        tokens = self.dec_fusion(self.bottleneck.restore(z, cache), cache)  # (B, t, h, w, D)
        lc, hc = tokens.split([self.config.lc_dim, self.config.hc_dim], dim=-1)
        return self.unembed(self.dec_lc(lc, cache), self.dec_hc(hc, cache), first)  # (B, 3, T, H, W)

    # ------------------------------------------------------------------ public API
    def encode(self, x: torch.Tensor, chunk_size: Optional[int] = None, return_dict: bool = True):
        """Video (B, 3, 1 + 4k, H, W) or images (B, 3, H, W) in [-1, 1] -> posterior over latents.

        `chunk_size` counts latent frames: the first chunk is 1 + 4(c - 1) video frames, every later one 4c;
        the result is identical to encoding the whole video at once.
        """
        video, is_image = _as_video(x)
        chunk = _check_chunk_size(chunk_size) if chunk_size is not None else self.default_chunk_size
        latent_frames = 1 + (video.shape[2] - 1) // TIME_STRIDE
        chunk = chunk or latent_frames
        cache = {} if chunk < latent_frames else None  # one chunk: plain zero padding, nothing to carry
        means, logvars = [], []
        for start in range(0, latent_frames, chunk):
            stop = min(start + chunk, latent_frames)
            first_frame = 0 if start == 0 else 1 + TIME_STRIDE * (start - 1)
            last_frame = 1 + TIME_STRIDE * (stop - 1)
            mean, logvar = self._encode_tokens(video[:, :, first_frame:last_frame], start == 0, cache)
            means.append(mean)
            logvars.append(logvar)
        params = torch.cat([torch.cat(means, 1), torch.cat(logvars, 1)], dim=-1)  # (B, T', h, w, 2d)
        params = params.permute(0, 4, 1, 2, 3).contiguous()  # (B, 2d, T', h, w)
        if is_image:
            params = params.squeeze(2)  # (B, 2d, h, w)
        posterior = DiagonalGaussian(params)
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def iter_decode(self, z: torch.Tensor, chunk_size: int = 1) -> Iterator[torch.Tensor]:
        """Yield the video of latent `z` (B, d, T', h, w) chunk by chunk: (B, 3, frames, H, W) pieces.

        Memory is set by `chunk_size` (latent frames per step), not by the video's length, so a long video
        can be streamed to disk. Concatenated, the pieces equal `decode(z).sample` exactly.
        """
        chunk = _check_chunk_size(chunk_size)
        tokens = self._latent_tokens(z)  # (B, T', h, w, d)
        cache = {} if chunk < tokens.shape[1] else None
        for start in range(0, tokens.shape[1], chunk):
            yield self._decode_tokens(tokens[:, start : start + chunk], start == 0, cache)

    def decode(self, z: torch.Tensor, chunk_size: Optional[int] = None, return_dict: bool = True):
        """Latent (B, d, T', h, w) (or (B, d, h, w) for images) -> video (B, 3, 1 + 4(T'-1), 8h, 8w)."""
        is_image = z.ndim == 4
        z5 = z.unsqueeze(2) if is_image else z
        chunk = _check_chunk_size(chunk_size) if chunk_size is not None else self.default_chunk_size
        video = torch.cat(list(self.iter_decode(z5, chunk or max(z5.shape[2], 1))), dim=2)  # (B, 3, T, H, W)
        if is_image:
            video = video.squeeze(2)  # (B, 3, H, W)
        return DecoderOutput(sample=video) if return_dict else (video,)

    def forward(
        self,
        sample: torch.Tensor,
        sample_posterior: bool = True,
        generator: Optional[torch.Generator] = None,
        return_dict: bool = True,
    ):
        """Encode, sample (or take the mean), decode. Returns the reconstruction and the posterior."""
        posterior = self.encode(sample).latent_dist
        z = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
        recon = self.decode(z).sample
        return LeanVAEOutput(sample=recon, latent_dist=posterior) if return_dict else (recon, posterior)

    def _latent_tokens(self, z: torch.Tensor) -> torch.Tensor:
        d = self.config.latent_channels
        if z.ndim != 5 or z.shape[1] != d:
            raise ValueError(
                f"LeanVAE.decode expects latents (B, {d}, T', h, w) (or (B, {d}, h, w) for images), "
                f"got shape {tuple(z.shape)}"
            )
        return z.permute(0, 2, 3, 4, 1)  # (B, T', h, w, d)


def _check_chunk_size(chunk_size) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size counts latent frames and must be a positive integer, got {chunk_size!r}")
    return chunk_size


def _as_video(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Validate input pixels; images become 1-frame videos. Returns (B, 3, T, H, W) and whether it was 4-D."""
    if x.ndim not in (4, 5) or x.shape[1] != 3:
        raise ValueError(
            "LeanVAE.encode expects a video (B, 3, T, H, W) or images (B, 3, H, W) with values in [-1, 1], "
            f"got shape {tuple(x.shape)}"
        )
    is_image = x.ndim == 4
    video = x.unsqueeze(2) if is_image else x
    t, h, w = video.shape[2:]
    if (t - 1) % TIME_STRIDE:
        below = 1 + TIME_STRIDE * ((t - 1) // TIME_STRIDE)
        raise ValueError(
            f"LeanVAE needs 1 + 4k frames (1, 5, 9, 13, 17, ...): the first frame is coded alone, the rest in "
            f"groups of 4. Got {t} frames; use {below} or {below + TIME_STRIDE}."
        )
    if h % SPACE_STRIDE or w % SPACE_STRIDE:
        raise ValueError(f"LeanVAE needs height and width divisible by 8, got {h}x{w}")
    return video, is_image
