"""`VideoAutoencoder`: the contract every video VAE of the project keeps, and the parts of it written once.

    posterior = vae.encode(video, chunk_size=None).latent_dist     # video (B, 3, 1 + r k, H, W) in [-1, 1]
    video = vae.decode(z, chunk_size=None).sample                  # z (B, d, 1 + k, H / s, W / s)
    for piece in vae.iter_decode(z, chunk_size=1): ...             # stream any length, bounded memory

r = `temporal_compression_ratio`, s = `spatial_compression_ratio`, d = `latent_channels`. A video's first
frame is coded alone (an image is a 1-frame video, or a 4-D tensor), the rest in groups of r frames. `chunk_size`
counts latent frames: the causal-cache chunked loop below feeds a model whole groups and gives output equal to
whole-video inference. A model supplies `_encode_chunk` and `_decode_chunk`; it keeps what a chunk needs from
the previous one in the `cache` dict it is handed (see `vae/causal.py`).

Latent normalisation (the diffusers Wan convention): `latents_mean` / `latents_std` in the config, per channel
or one scalar; the diffusion model sees `(z - mean) / std`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch
from diffusers.configuration_utils import ConfigMixin
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from diffusers.utils.accelerate_utils import apply_forward_hook

from .causal import Cache
from .posterior import DiagonalGaussian, with_latent_noise


@dataclass
class AutoencoderOutput(BaseOutput):
    sample: torch.Tensor
    # A default, so that a dict of the fields rebuilds it (BaseOutput's rule): accelerate's mixed precision does so
    # to cast the outputs back to float32.
    latent_dist: Optional[DiagonalGaussian] = None


class frame_rule:
    """A method bound to the class when called on it (`LeanVAE.check_num_frames(17)`, before a model exists) and to
    the instance when called on one, whose ratios may come from its config (a wrapped diffusers VAE)."""

    def __init__(self, method):
        self.method = method
        functools.update_wrapper(self, method)

    def __get__(self, instance, owner):
        return functools.partial(self.method, owner if instance is None else instance)


def model_name(model) -> str:
    """What errors call a model (or model class): its class, or for a wrapper the class it wraps."""
    return getattr(model, "wrapped_class", None) or (model if isinstance(model, type) else type(model)).__name__


def check_chunk_size(chunk_size) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size counts latent frames and must be a positive integer, got {chunk_size!r}")
    return chunk_size


class VideoAutoencoder(ModelMixin, ConfigMixin):
    """Base of the bundled video VAEs. Subclasses register `latent_channels`, `latents_mean` and `latents_std` in
    their config and implement `_encode_chunk` / `_decode_chunk` (and `get_last_layer` for the adaptive GAN weight)."""

    temporal_compression_ratio: int = 4
    spatial_compression_ratio: int = 8

    def __init__(self):
        super().__init__()
        self.default_chunk_size: Optional[int] = None

    # ------------------------------------------------------------------ what a model supplies
    def _encode_chunk(self, video: torch.Tensor, cache: Cache, first: bool) -> torch.Tensor:
        """Pixels (B, 3, t, H, W) of whole groups (frame 0 alone first if `first`) -> posterior parameters
        (B, 2d, t', h, w): means, then log-variances."""
        raise NotImplementedError

    def _decode_chunk(self, z: torch.Tensor, cache: Cache, first: bool, last: bool) -> torch.Tensor:
        """Latent frames (B, d, t', h, w) -> their pixels (B, 3, t, H, W). `last` tells a model that holds frames
        back (a temporal upsampler that looks ahead) to flush them."""
        raise NotImplementedError

    def get_last_layer(self) -> torch.Tensor:
        """The decoder's output weight: the adaptive GAN weight balances gradients at this tensor."""
        raise NotImplementedError(f"{type(self).__name__} does not name its last layer")

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    # Whether this model's half-precision convolutions run faster with channels-last weights (measured per model).
    half_precision_channels_last: bool = True

    def to_inference_dtype(self, dtype: torch.dtype) -> "VideoAutoencoder":
        """Cast the weights to `dtype` for inference, in place (what `torch_dtype` does in diffusers). In half
        precision, convolution weights are also stored channels-last where the model gains from it: oneDNN and
        cuDNN pick faster bfloat16 kernels for that layout (WF-VAE 1.1x faster on this project's CPU,
        BENCHMARKS.md). Outputs are unchanged up to float rounding."""
        torch.nn.Module.to(self, dtype=dtype)  # not ModelMixin.to: it warns about fp32-pinned modules; none here
        if dtype in (torch.float16, torch.bfloat16) and self.half_precision_channels_last:
            formats = {4: torch.channels_last, 5: torch.channels_last_3d}
            for param in self.parameters():
                if param.dim() in formats:
                    param.data = param.data.contiguous(memory_format=formats[param.dim()])
        return self

    # ------------------------------------------------------------------ frame and size rules
    # Valid videos have 1 + frame_step k frames; None: the temporal ratio (a model that needs an even number of
    # groups, as CogVideoX's decoder does, sets twice it).
    frame_step: Optional[int] = None

    @frame_rule
    def check_num_frames(self, num_frames: int) -> int:
        """`num_frames` if this model can code it (1 + r k frames), else a ValueError naming the nearest valid."""
        r = self.frame_step or self.temporal_compression_ratio
        if num_frames >= 1 and (num_frames - 1) % r == 0:
            return num_frames
        below = 1 + r * (max(num_frames - 1, 0) // r)
        valid = ", ".join(str(1 + i * r) for i in range(5))
        raise ValueError(f"{model_name(self)} needs 1 + {r}k frames ({valid}, ...): the first frame is coded alone, "
                         f"the rest in groups of {r}. Got {num_frames} frames; use {below} or {below + r}.")

    def check_frame_size(self, height: int, width: int) -> None:
        s = self.spatial_compression_ratio
        if height % s or width % s:
            raise ValueError(f"{model_name(self)} needs height and width divisible by {s}, got {height}x{width}")

    @frame_rule
    def latent_num_frames(self, num_frames: int) -> int:
        return 1 + (self.check_num_frames(num_frames) - 1) // self.temporal_compression_ratio

    @frame_rule
    def video_num_frames(self, latent_frames: int) -> int:
        return 1 + self.temporal_compression_ratio * (latent_frames - 1)

    # ------------------------------------------------------------------ latent normalisation
    def _latent_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1) + (1,) * (like.ndim - 2)
        mean = torch.as_tensor(self.config.latents_mean, dtype=like.dtype, device=like.device).view(shape)
        std = torch.as_tensor(self.config.latents_std, dtype=like.dtype, device=like.device).view(shape)
        return mean, std

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """VAE latents -> what the diffusion model is trained on: (z - latents_mean) / latents_std."""
        mean, std = self._latent_stats(z)
        return (z - mean) / std

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._latent_stats(z)
        return z * std + mean

    # ------------------------------------------------------------------ chunking switch (like enable_tiling)
    def enable_chunking(self, chunk_size: int = 2) -> None:
        """Make `encode`/`decode` without an explicit `chunk_size` run causal-cache chunked (bounded memory)."""
        self.default_chunk_size = check_chunk_size(chunk_size)

    def disable_chunking(self) -> None:
        self.default_chunk_size = None

    def _chunk(self, chunk_size: Optional[int], latent_frames: int) -> int:
        chunk = check_chunk_size(chunk_size) if chunk_size is not None else self.default_chunk_size
        return chunk or max(latent_frames, 1)

    def _chunks(self, latent_frames: int, chunk: int) -> list[tuple[int, int]]:
        """The (start, stop) latent-frame ranges coded one after the other: `chunk` at a time. A model whose
        output depends on how it is chunked (some diffusers VAEs) overrides this with the only chunking it has."""
        return [(start, min(start + chunk, latent_frames)) for start in range(0, latent_frames, chunk)]

    # ------------------------------------------------------------------ the public API
    @apply_forward_hook
    def encode(self, x: torch.Tensor, chunk_size: Optional[int] = None, return_dict: bool = True):
        """Video (B, 3, 1 + r k, H, W) or images (B, 3, H, W) in [-1, 1] -> posterior over latents.

        With `chunk_size` c the first chunk is 1 + r(c - 1) frames and every later one r c; the result is
        identical to encoding the whole video at once.
        """
        video, is_image = self._as_video(x)
        r = self.temporal_compression_ratio
        latent_frames = self.latent_num_frames(video.shape[2])
        chunks = self._chunks(latent_frames, self._chunk(chunk_size, latent_frames))
        cache = {} if len(chunks) > 1 else None  # one chunk: plain start padding, nothing to carry
        params = []
        for start, stop in chunks:
            first_frame = 0 if start == 0 else 1 + r * (start - 1)
            params.append(self._encode_chunk(video[:, :, first_frame : 1 + r * (stop - 1)], cache, start == 0))
        params = torch.cat(params, dim=2).contiguous()  # (B, 2d, T', h, w)
        posterior = DiagonalGaussian(params.squeeze(2) if is_image else params)
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def iter_decode(self, z: torch.Tensor, chunk_size: int = 1) -> Iterator[torch.Tensor]:
        """Yield the video of latent `z` (B, d, T', h, w) chunk by chunk: (B, 3, frames, H, W) pieces, in order.

        Memory is set by `chunk_size` (latent frames per step), not by the video's length, so a long video can be
        streamed to disk. Concatenated, the pieces equal `decode(z).sample` exactly.
        """
        self._check_latents(z, video=True)
        latent_frames = z.shape[2]
        chunks = self._chunks(latent_frames, check_chunk_size(chunk_size))
        cache = {} if len(chunks) > 1 else None
        for start, stop in chunks:
            piece = self._decode_chunk(z[:, :, start:stop], cache, start == 0, stop == latent_frames)
            if piece.shape[2]:
                yield piece

    @apply_forward_hook
    def decode(self, z: torch.Tensor, chunk_size: Optional[int] = None, return_dict: bool = True):
        """Latent (B, d, T', h, w) (or (B, d, h, w) for images) -> video (B, 3, 1 + r(T' - 1), s h, s w)."""
        is_image = self._check_latents(z, video=False)
        z5 = z.unsqueeze(2) if is_image else z
        video = torch.cat(list(self.iter_decode(z5, self._chunk(chunk_size, z5.shape[2]))), dim=2)
        video = video.squeeze(2) if is_image else video  # (B, 3, T, H, W) or (B, 3, H, W)
        return DecoderOutput(sample=video) if return_dict else (video,)

    def forward(self, sample: torch.Tensor, sample_posterior: bool = True,
                generator: Optional[torch.Generator] = None, return_dict: bool = True, latent_noise: float = 0.0):
        """Encode, sample (or take the mean), decode, each over the whole clip: chunking bounds inference memory,
        while training back-propagates through the whole clip anyway and runs faster in one call (an ivvae-small
        step 1.2x). `latent_noise`: the decoder's input gets noise of this fraction of each channel's std
        (`posterior.with_latent_noise`). Returns the reconstruction and the posterior."""
        whole = self.latent_num_frames(sample.shape[2]) if sample.ndim == 5 else 1
        posterior = self.encode(sample, chunk_size=whole).latent_dist
        recon = self.decode(self.decoder_input(posterior, sample_posterior, generator, latent_noise),
                            chunk_size=whole).sample
        return AutoencoderOutput(sample=recon, latent_dist=posterior) if return_dict else (recon, posterior)

    @staticmethod
    def decoder_input(posterior: DiagonalGaussian, sample_posterior: bool, generator: Optional[torch.Generator],
                      latent_noise: float) -> torch.Tensor:
        """What `forward` decodes: a posterior sample (or its mean), plus `latent_noise` (`with_latent_noise`)."""
        z = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
        return with_latent_noise(z, latent_noise, generator)

    # ------------------------------------------------------------------ input checks
    def _as_video(self, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """Validate input pixels; images become 1-frame videos. Returns (B, 3, T, H, W) and whether x was 4-D."""
        if x.ndim not in (4, 5) or x.shape[1] != 3:
            raise ValueError(f"{model_name(self)}.encode expects a video (B, 3, T, H, W) or images (B, 3, H, W) "
                             f"with values in [-1, 1], got shape {tuple(x.shape)}")
        video = x.unsqueeze(2) if x.ndim == 4 else x
        self.check_num_frames(video.shape[2])
        self.check_frame_size(*video.shape[3:])
        return video, x.ndim == 4

    def _check_latents(self, z: torch.Tensor, video: bool) -> bool:
        """Raise unless z is (B, d, T', h, w) (or, unless `video`, (B, d, h, w)); returns whether it is 4-D."""
        d = self.latent_channels
        if z.ndim not in ((5,) if video else (4, 5)) or z.shape[1] != d:
            raise ValueError(f"{model_name(self)}.decode expects latents (B, {d}, T', h, w) (or (B, {d}, h, w) "
                             f"for images), got shape {tuple(z.shape)}")
        return z.ndim == 4


def channel_statistics(latents: Sequence[torch.Tensor]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (float64, population) of latents (N, d, ...): a model's `latents_mean/std`."""
    flat = torch.cat([z.detach().double().transpose(0, 1).flatten(1) for z in latents], dim=1)  # (d, N * ...)
    return flat.mean(dim=1).tolist(), flat.std(dim=1, unbiased=False).clamp_min(1e-12).tolist()
