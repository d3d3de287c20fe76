"""WF-VAE (PKU-YuanGroup; the VAE of Open-Sora-Plan v1.3): a video VAE whose wavelet "energy flow" feeds the
low-frequency sub-bands of the input straight to the deep layers and predicts them back on the decoder side.

Video (B, 3, 1 + 4k, H, W) in [-1, 1]  <->  latent (B, d, 1 + k, H/8, W/8); an image is a 1-frame video. Every
temporal operator is causal except the linear temporal upsampler, which the causal cache holds one frame back,
so chunked encoding and decoding equal whole-video inference for every chunk size. Config names are the
released `config.json`'s (typos included), so a released folder maps onto this class without guessing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
from diffusers.configuration_utils import register_to_config
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  diffusers' pipeline loader looks it up here

from ..autoencoder import AutoencoderOutput, VideoAutoencoder
from ..causal import Cache
from ..posterior import DiagonalGaussian
from ..init import SILU_GAIN, convolutions, kernel_centre, posterior_head_, reset_norms_, route_, unit_, zero_
from .blocks import NORM_TYPES, CachedConv3d, FrameAttention, ResnetBlock2D, ResnetBlock3D
from .decoder import Decoder
from .encoder import Encoder
from .official import load_official
from .wavelets import EXACT_CONSTANT

# The blocks of the released 4x8x8 model, by the names its config gives them: the only ones built here.
RELEASED_BLOCKS = dict(attention_type="AttnBlock3DFix", l1_dowmsample_block="Downsample",
                       l1_downsample_wavelet="HaarWaveletTransform2D", l2_dowmsample_block="Spatial2xTime2x3DDownsample",
                       l2_downsample_wavelet="HaarWaveletTransform3D", l1_upsample_block="Upsample",
                       l1_upsample_wavelet="InverseHaarWaveletTransform2D", l2_upsample_block="Spatial2xTime2x3DUpsample",
                       l2_upsample_wavelet="InverseHaarWaveletTransform3D")

WFVAE_PRESETS: dict[str, dict] = {
    # The paper's S / M / L (base 128 / 160 / 192, energy flow 128) and the released L with 16 channels.
    "wfvae-s-4ch": dict(latent_dim=4, base_channels=128),
    "wfvae-m-4ch": dict(latent_dim=4, base_channels=160),
    "wfvae-l-4ch": dict(latent_dim=4, base_channels=192),
    "wfvae-l-16ch": dict(latent_dim=16, base_channels=192),
    # Open-Sora-Plan v1.3's S: 8 channels, encoder flow 64, two residual blocks per decoder connection.
    "wfvae-s-8ch": dict(latent_dim=8, base_channels=128, encoder_energy_flow_hidden_size=64, connect_res_layer_num=2),
    # The same structure, narrow: trains on a laptop CPU in minutes; and one for unit tests. The small one's decoder
    # flow is twice its base width, with three residual blocks per connection (S-8ch has two): the flow predicts
    # the low bands from the latent, at latent resolution (cheap), and at base width with one block it passes a
    # DiT's latent errors through as blocky colour errors (BENCHMARKS.md, "A wider decoder flow for WF-VAE's CPU
    # preset").
    "wfvae-small": dict(latent_dim=4, base_channels=16, encoder_energy_flow_hidden_size=16,
                        decoder_energy_flow_hidden_size=32, connect_res_layer_num=3),
    "wfvae-tiny": dict(latent_dim=4, base_channels=8, encoder_num_resblocks=1, decoder_num_resblocks=1,
                       encoder_energy_flow_hidden_size=8, decoder_energy_flow_hidden_size=8),
}


@dataclass
class WFVAEOutput(AutoencoderOutput):
    """Also the energy-flow sub-bands, encoder and decoder side, which the WL loss compares."""

    subbands: Optional[dict[str, torch.Tensor]] = None


class WFVAE(VideoAutoencoder):
    r"""WF-VAE video autoencoder. Defaults are the released WF-VAE-L-16Chn's config; `haar_constant` is the 3-D
    Haar filters' value (exact by default; 0.3536 in the released weights, set when importing them)."""

    temporal_compression_ratio = 4
    spatial_compression_ratio = 8

    @register_to_config
    def __init__(
        self,
        latent_dim: int = 16,
        base_channels: int = 192,
        encoder_num_resblocks: int = 2,
        encoder_energy_flow_hidden_size: int = 128,
        decoder_num_resblocks: int = 2,
        decoder_energy_flow_hidden_size: int = 128,
        attention_type: str = "AttnBlock3DFix",
        use_attention: bool = True,
        dropout: float = 0.0,
        norm_type: str = "layernorm",
        t_interpolation: str = "trilinear",
        connect_res_layer_num: int = 1,
        scale: Optional[Sequence[float]] = None,
        shift: Optional[Sequence[float]] = None,
        l1_dowmsample_block: str = "Downsample",
        l1_downsample_wavelet: str = "HaarWaveletTransform2D",
        l2_dowmsample_block: str = "Spatial2xTime2x3DDownsample",
        l2_downsample_wavelet: str = "HaarWaveletTransform3D",
        l1_upsample_block: str = "Upsample",
        l1_upsample_wavelet: str = "InverseHaarWaveletTransform2D",
        l2_upsample_block: str = "Spatial2xTime2x3DUpsample",
        l2_upsample_wavelet: str = "InverseHaarWaveletTransform3D",
        haar_constant: float = EXACT_CONSTANT,
        latents_mean: Union[float, Sequence[float]] = 0.0,
        latents_std: Union[float, Sequence[float]] = 1.0,
    ):
        super().__init__()
        _check_config(locals())
        self.encoder = Encoder(latent_dim, base_channels, encoder_num_resblocks, encoder_energy_flow_hidden_size,
                               norm_type, dropout, use_attention, haar_constant)
        self.decoder = Decoder(latent_dim, base_channels, decoder_num_resblocks, decoder_energy_flow_hidden_size,
                               norm_type, dropout, use_attention, t_interpolation, connect_res_layer_num, haar_constant)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """The rules of `vae/init.py` (the official code leaves PyTorch's defaults): unit-scale convolutions (SiLU
        gain after norm + SiLU), residual branches and attention outputs from zero, the posterior head's
        log-variance rows from zero, norm gains one; then the energy-flow path starts as the block-mean
        autoencoder (`_start_as_block_means`). The Haar filters are fixed and stay as they are."""
        for conv in convolutions(self):
            if conv.weight.requires_grad:
                unit_(conv)
        for module in self.modules():
            if isinstance(module, (ResnetBlock2D, ResnetBlock3D)):
                unit_(_conv(module.conv1), SILU_GAIN)
                zero_(_conv(module.conv2))
            elif isinstance(module, FrameAttention):
                zero_(_conv(module.proj_out))
        reset_norms_(self)
        d = self.config.latent_dim
        posterior_head_(_conv(self.encoder.conv_out), slice(d, 2 * d), SILU_GAIN)
        self._start_as_block_means()

    @torch.no_grad()
    def _start_as_block_means(self, scale: float = 2.0, anchor: float = 16.0) -> None:
        """LeanVAE learns fast because its bottleneck starts as a linear autoencoder. WF-VAE's energy flow can start
        as one too, the 4x8x8 block-mean autoencoder (the baseline of `bench/vae_recon.py`):

        - encoder: the deepest Haar low band (16 x the block means) -> flow channels 0-2 (the block means) -> the
          first residual block's shortcut writes them as a +/- pair of channels, which SiLU(LayerNorm(.)) passes
          almost linearly (silu(a) - silu(-a) = a), while two constant channels of +/-`anchor` hold the
          LayerNorm's scale nearly fixed -> latent means 0-2 = `scale` x the block means;
        - decoder: latents 0-2 -> the flow channels -> that low band exactly, every detail output (the level-1
          flow, the output convolution) from zero, so it starts by decoding the blocks.

        On the held-out real clips a model built so reconstructs 18.8 dB before any step (the exact block means
        give 19.0, the unit-scale init alone 9.0) and, after the CPU default's 800 steps, 21.71 dB where the same
        recipe without it reached 20.40 (BENCHMARKS.md)."""
        cfg, enc, dec = self.config, self.encoder, self.decoder
        narrow = min(cfg.latent_dim, cfg.encoder_energy_flow_hidden_size, cfg.decoder_energy_flow_hidden_size) < 3
        if narrow or not hasattr(enc.mid[0], "nin_shortcut"):  # no shortcut when the flow is 2 x base wide
            return
        base, rgb, c = cfg.base_channels, torch.arange(3), cfg.haar_constant
        gain = (8 * c) * 2 * (8 * c)  # the deepest low band over the block mean: 3-D, 2-D, 3-D Haar (16 if exact)
        _pick(enc.connect_l2, rgb, rgb, 1 / gain)
        shortcut = _conv(enc.mid[0].nin_shortcut)
        _pick(shortcut, rgb, 2 * base + rgb, 1.0)  # the flow's channels follow down2's 2 base
        _pick(shortcut, 3 + rgb, 2 * base + rgb, -1.0)
        shortcut.weight[6:8] = 0
        shortcut.bias[6:8] = torch.tensor([anchor, -anchor])
        sigma = math.sqrt(1 + 2 * anchor**2 / shortcut.out_channels)  # the LayerNorm's scale, the others ~unit
        head = _conv(enc.conv_out)
        _pick(head, rgb, rgb, scale * sigma)
        head.weight[rgb, 3 + rgb, -1, 1, 1] = -scale * sigma  # the pair's other half, at the same tap
        _pick(_conv(dec.conv_in), rgb, rgb, 1.0)
        _pick(_conv(dec.mid[-1].nin_shortcut), 4 * base + rgb, rgb, 1.0)  # the flow is the last channels
        zero_(dec.connect_l2[-1])
        _pick(dec.connect_l2[-1], rgb, rgb, gain / scale)
        zero_(dec.connect_l1[-1])
        zero_(dec.conv_out)

    @property
    def latent_channels(self) -> int:
        return self.config.latent_dim

    def _encode_chunk(self, video: torch.Tensor, cache: Cache, first: bool) -> torch.Tensor:
        self._check_chunking(cache)
        return self.encoder(video, cache)[0]  # (B, 2d, t', h, w)

    def _decode_chunk(self, z: torch.Tensor, cache: Cache, first: bool, last: bool) -> torch.Tensor:
        self._check_chunking(cache)
        if cache is not None:
            cache["last"] = last  # the temporal upsampler flushes its held frame on the video's last chunk
        return self.decoder(z, cache)[0]  # (B, 3, frames, H, W)

    def _check_chunking(self, cache: Cache) -> None:
        if cache is not None and self.config.norm_type == "groupnorm":
            raise ValueError("norm_type='groupnorm' normalises over frames, so chunked inference would differ from "
                             "whole-video inference; decode whole videos (chunk_size=None) or use 'layernorm'")

    def forward(self, sample: torch.Tensor, sample_posterior: bool = True,
                generator: Optional[torch.Generator] = None, return_dict: bool = True, latent_noise: float = 0.0):
        """Encode, sample (or take the mean), decode, all at once (`latent_noise` as in `VideoAutoencoder`); also
        returns the energy-flow sub-bands of both sides (`subbands`: enc_l1, dec_l1, enc_l2, dec_l2) for the WL
        loss."""
        video, _ = self._as_video(sample)
        params, (enc_l1, enc_l2) = self.encoder(video)
        posterior = DiagonalGaussian(params)
        recon, (dec_l1, dec_l2) = self.decoder(self.decoder_input(posterior, sample_posterior, generator, latent_noise))
        subbands = {"enc_l1": enc_l1, "dec_l1": dec_l1, "enc_l2": enc_l2, "dec_l2": dec_l2}
        if sample.ndim == 4:
            recon = recon.squeeze(2)
            posterior = DiagonalGaussian(params.squeeze(2))
        out = WFVAEOutput(sample=recon, latent_dist=posterior, subbands=subbands)
        return out if return_dict else (recon, posterior)

    def get_last_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.weight

    @classmethod
    def from_official_checkpoint(cls, path) -> "WFVAE":
        """The released weights: an official `WFVAEModel` folder (config.json + safetensors) or a `.ckpt` beside
        its config.json (EMA weights preferred); the outputs equal the official code's."""
        return load_official(cls, path)


def _check_config(values: dict) -> None:
    for key, released in RELEASED_BLOCKS.items():
        if values[key] != released:
            raise ValueError(f"{key}={values[key]!r} is not built here: the 4x8x8 WF-VAE uses {released!r}")
    if values["norm_type"] not in NORM_TYPES:
        raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {values['norm_type']!r}")
    if values["t_interpolation"] not in ("trilinear", "nearest"):
        raise ValueError(f"t_interpolation must be 'trilinear' or 'nearest', got {values['t_interpolation']!r}")


def _pick(layer: nn.Module, rows: torch.Tensor, columns: torch.Tensor, value: float) -> None:
    """`route_` at the kernel's current frame (a causal kernel's last tap) and spatial centre."""
    tap = kernel_centre(layer)
    if len(tap) == 3:
        tap = (layer.weight.shape[2] - 1, *tap[1:])
    route_(layer, rows, columns, value, [tap])


def _conv(layer):
    """The convolution inside a `CachedConv3d`, or the layer itself."""
    return layer.conv if isinstance(layer, CachedConv3d) else layer
