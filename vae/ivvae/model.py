"""IV-VAE (ali-vilab, CVPR 2025): keyframe-based temporal compression (KTC) and group causal convolution.

Video (B, 3, 1 + 4k, H, W) in [-1, 1]  <->  latent (B, z_dim, 1 + k, H/8, W/8). Every feature map has a keyframe
half, computed frame by frame and subsampled to the first frame of each group, and a temporal half, computed by
group causal convolutions; the latent's first z_dim / 2 channels come from the keyframe half, the rest from the
temporal half. The decoder writes RGB from both halves: the first frame of every group is the keyframe half's, the
other three the temporal half's. Causal between groups, so chunked coding equals whole-video coding.

`IVImageVAE` is the keyframe half alone, an image VAE (frames coded independently): the paper initialises the
video VAE's keyframe half from such a model with half the latent channels (`IVVAE.init_keyframes_from`).
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  diffusers' pipeline loader looks it up here

from ..autoencoder import VideoAutoencoder
from ..causal import Cache
from ..init import SILU_GAIN, convolutions, posterior_head_, unit_, zero_
from .block_means import start_as_block_means
from .blocks import ResidualBlock
from .layers import PAC, Attention, KTCConv
from .networks import Decoder, Encoder
from .official import load_official

IVVAE_PRESETS: dict[str, dict] = {
    # The released models (ivvae_z{4,8,16}_dim64.pth, ivvae_z16_dim96.pth) with their latent scale and shift.
    "ivvae-z4": dict(z_dim=4, dim=64, latents_mean=0.1250, latents_std=1 / 1.3196),
    "ivvae-z8": dict(z_dim=8, dim=64, latents_mean=-0.0322, latents_std=1 / 1.0940),
    "ivvae-z16": dict(z_dim=16, dim=64, latents_mean=-0.1553, latents_std=1 / 0.9697),
    "ivvae-z16-dim96": dict(z_dim=16, dim=96, latents_mean=-0.0483, latents_std=1 / 0.7619),
    # The same structure, narrow: trains on a laptop CPU in minutes; and one for unit tests.
    "ivvae-small": dict(z_dim=8, dim=8, num_res_blocks=1),
    "ivvae-tiny": dict(z_dim=4, dim=4, num_res_blocks=1),
}
# Their keyframe image VAEs: the keyframe half alone with half the latent channels (the paper's initialisation).
IVVAE_IMAGE_PRESETS: dict[str, dict] = {
    f"{name}-keyframes": {k: v for k, v in {**kwargs, "z_dim": kwargs["z_dim"] // 2}.items() if not k.startswith("latents")}
    for name, kwargs in IVVAE_PRESETS.items()
}


class _IVAutoencoder(VideoAutoencoder):
    """What the video and the keyframe model share: construction from the config and the latent layer."""

    temporal = True
    # Weights stay in the default layout: the activations are made channels-last where they enter the networks
    # (`layers.channels_last`), which is what oneDNN's convolutions key on.
    half_precision_channels_last = False

    @register_to_config
    def __init__(self, z_dim: int = 16, dim: int = 64, dim_mult: Sequence[int] = (1, 2, 4, 4),
                 num_res_blocks: int = 2, dropout: float = 0.0,
                 latents_mean: Union[float, Sequence[float]] = 0.0, latents_std: Union[float, Sequence[float]] = 1.0):
        super().__init__()
        if len(dim_mult) != 4:
            raise ValueError(f"IV-VAE has four stages (dim_mult of length 4), got dim_mult={list(dim_mult)}")
        halves = 2 if self.temporal else 1
        if z_dim % halves:
            raise ValueError(f"z_dim must be even (half keyframe, half temporal channels), got {z_dim}")
        z, out_3d = z_dim // halves, (z_dim // halves if self.temporal else 0)
        self.encoder = Encoder(dim, z, dim_mult, num_res_blocks, dropout, self.temporal)
        self.conv1 = KTCConv(halves * 2 * z, 2 * z, 2 * out_3d, 1)  # -> [mean, log-variance] of each half
        self.conv2 = KTCConv(halves * z, z, out_3d, 1)
        self.decoder = Decoder(dim, z, dim_mult, num_res_blocks, dropout, self.temporal)
        self.initialize_weights()
        if self.temporal:
            # Inference one latent frame at a time, as the official code does: exact, bounded memory, and faster
            # than whole-video calls on CPU (its small activations stay in cache; bench/vae_speed.py).
            self.enable_chunking(1)

    def initialize_weights(self) -> None:
        """The rules of `vae/init.py` (the official code leaves PyTorch's defaults, which collapse the posterior):
        unit-scale convolutions (SiLU gain after norm + SiLU), residual branches and attention outputs from zero,
        the posterior head's log-variance rows from zero, RMS-norm gains one; then three channels of each half start
        as the block-mean autoencoder (`block_means.py`)."""
        for conv in convolutions(self):
            unit_(conv)
        for module in self.modules():
            if isinstance(module, ResidualBlock):  # also ResidualBlock2d: [norm, SiLU, conv, norm, SiLU, drop, conv]
                for conv in convolutions(module.residual[2]):
                    unit_(conv, SILU_GAIN)
                for conv in convolutions(module.residual[6]):
                    zero_(conv)
            elif isinstance(module, PAC):  # the encoder head's atrous branches read SiLU(norm(x))
                for conv in convolutions(module):
                    if conv is not module.PAC_conv.conv:
                        unit_(conv, SILU_GAIN)
            elif isinstance(module, Attention):
                zero_(module.proj)
        for conv in convolutions(self.decoder.head[-1]):
            unit_(conv, SILU_GAIN)
        z = self.config.z_dim // (2 if self.temporal else 1)
        for conv in convolutions(self.conv1):  # each writes [means | log-variances] of its half
            posterior_head_(conv, slice(z, 2 * z))
        start_as_block_means(self)

    @property
    def latent_channels(self) -> int:
        return self.config.z_dim

    def get_last_layer(self) -> torch.Tensor:
        head = self.decoder.head[-1]  # the temporal head writes three frames of every four
        return (head.conv_3d if head.conv_3d is not None else head.conv_2d).weight


class IVVAE(_IVAutoencoder):
    r"""IV-VAE video autoencoder; defaults are the released ivvae_z16_dim64's structure."""

    temporal_compression_ratio = 4
    spatial_compression_ratio = 8

    def _encode_chunk(self, video: torch.Tensor, cache: Cache, first: bool) -> torch.Tensor:
        params = self.conv1(self.encoder(video, cache, first))  # (B, 4z, t', h, w): [mean, logvar] per half
        mean_2d, logvar_2d, mean_3d, logvar_3d = params.chunk(4, dim=1)
        return torch.cat([mean_2d, mean_3d, logvar_2d, logvar_3d], dim=1)  # (B, 2 z_dim, t', h, w)

    def _decode_chunk(self, z: torch.Tensor, cache: Cache, first: bool, last: bool) -> torch.Tensor:
        rgb = self.decoder(self.conv2(z), cache, first)  # (B, 6, t, H, W): keyframe RGB, temporal RGB
        keyframe, temporal = rgb.chunk(2, dim=1)
        frame = torch.arange(rgb.shape[2], device=rgb.device)
        is_keyframe = (frame - int(first)) % self.temporal_compression_ratio == 0  # a group's first frame
        if first:
            is_keyframe[0] = True
        return torch.where(is_keyframe.view(1, 1, -1, 1, 1), keyframe, temporal)

    @classmethod
    def from_official_checkpoint(cls, path, latents_mean=None, latents_std=None) -> "IVVAE":
        """A released `.pth` (ivvae_z{4,8,16}_dim64.pth, ivvae_z16_dim96.pth): the size is read from the tensors'
        shapes; a released size gets its published scale / shift as latent statistics unless given here."""
        return load_official(cls, path, IVVAE_PRESETS, latents_mean, latents_std)

    @torch.no_grad()
    def init_keyframes_from(self, image_vae: "IVImageVAE") -> None:
        """Initialise the keyframe half from a keyframe image VAE (the paper's initialisation): its weights into
        the keyframe half, and zero weights from the temporal half into the keyframe half. Afterwards this model's
        keyframe latents (first z_dim / 2 channels) and keyframe frames equal the image VAE's on each keyframe."""
        if not isinstance(image_vae, IVImageVAE):
            raise ValueError(f"the keyframe initialisation needs an IVImageVAE, got a {type(image_vae).__name__}")
        expected = dict(self.config, z_dim=self.config.z_dim // 2)
        for key in ("z_dim", "dim", "dim_mult", "num_res_blocks"):
            if list(_as_list(image_vae.config[key])) != list(_as_list(expected[key])):
                raise ValueError(f"the keyframe image VAE must have {key}={expected[key]} for this IV-VAE, "
                                 f"got {image_vae.config[key]}")
        ours = self.state_dict()
        for key, theirs in image_vae.state_dict().items():
            rows = ours[key][: theirs.shape[0]]  # what writes the keyframe half (norm gains: of the keyframe half)
            if theirs.ndim > 1 and not key.endswith("gamma"):  # a convolution: nothing may read the temporal half
                rows.zero_()
                rows[:, : theirs.shape[1]].copy_(theirs)
            else:
                rows.copy_(theirs)


class IVImageVAE(_IVAutoencoder):
    r"""The keyframe half of IV-VAE alone: an image VAE with z_dim latent channels, coding every frame of a
    video independently (temporal ratio 1)."""

    temporal = False
    temporal_compression_ratio = 1
    spatial_compression_ratio = 8

    def _encode_chunk(self, video: torch.Tensor, cache: Cache, first: bool) -> torch.Tensor:
        b, t = video.shape[0], video.shape[2]
        images = video.transpose(1, 2).flatten(0, 1).unsqueeze(2)  # (B T, 3, 1, H, W)
        params = self.conv1(self.encoder(images))  # (B T, 2 z_dim, 1, h, w)
        return params.squeeze(2).unflatten(0, (b, t)).transpose(1, 2)  # (B, 2 z_dim, T, h, w)

    def _decode_chunk(self, z: torch.Tensor, cache: Cache, first: bool, last: bool) -> torch.Tensor:
        b, t = z.shape[0], z.shape[2]
        latents = z.transpose(1, 2).flatten(0, 1).unsqueeze(2)  # (B T, z_dim, 1, h, w)
        rgb = self.decoder(self.conv2(latents))  # (B T, 3, 1, H, W)
        return rgb.squeeze(2).unflatten(0, (b, t)).transpose(1, 2)  # (B, 3, T, H, W)


def _as_list(value):
    return value if isinstance(value, (list, tuple)) else [value]

