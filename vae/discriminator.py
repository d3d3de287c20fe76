"""PatchGAN discriminators: per frame in 2-D (pix2pix / taming-transformers layout; LeanVAE's) and over whole
clips in 3-D (WF-VAE's).

A 2-D logit judges one overlapping patch of one frame (70x70 pixels for 3 layers): time is folded into the
batch, so it never sees motion. A 3-D logit judges a patch of a clip in space and time.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config


def init_patchgan(module: nn.Module) -> None:
    """DCGAN / taming init: N(0, 0.02) convs, N(1, 0.02) norm gains; biases start at zero."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.GroupNorm):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _check_groups(widths: list[int], norm_groups: int) -> None:
    for width in widths:
        if width % norm_groups:
            raise ValueError(f"norm_groups={norm_groups} must divide every normalised width {widths}; "
                             "pick a divisor of base_channels")


class NLayerDiscriminator(ModelMixin, ConfigMixin):
    """conv4x4/s2 + LeakyReLU, then `n_layers` conv4x4 + norm + LeakyReLU blocks with doubling widths
    (the last one stride 1), then a conv4x4 to one logit channel.

    Normalisation is GroupNorm, not taming's BatchNorm: GroupNorm statistics are per sample, so a logit
    depends only on its own frame. That makes the output independent of batch composition (batch size 1
    per GPU, real and fake scored in one call, gradient accumulation) and leaves no running-statistics
    buffers to drift apart between DDP replicas or to break bit-exact resumption.
    """

    @register_to_config
    def __init__(self, in_channels: int = 3, base_channels: int = 64, n_layers: int = 3, norm_groups: int = 32):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        widths = [base_channels * min(2**i, 8) for i in range(n_layers + 1)]  # 64, 128, 256, 512
        _check_groups(widths[1:], norm_groups)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, widths[0], kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        ]
        for i in range(1, n_layers + 1):
            stride = 2 if i < n_layers else 1
            layers += [
                # No bias: the following GroupNorm's shift makes it redundant.
                nn.Conv2d(widths[i - 1], widths[i], kernel_size=4, stride=stride, padding=1, bias=False),
                nn.GroupNorm(norm_groups, widths[i]),
                nn.LeakyReLU(0.2),
            ]
        layers.append(nn.Conv2d(widths[-1], 1, kernel_size=4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(init_patchgan)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch logits: (B, C, T, H, W) -> (B, 1, T, h, w) per frame, or (B, C, H, W) -> (B, 1, h, w)."""
        if x.ndim == 4:
            return self.main(x)
        if x.ndim != 5:
            raise ValueError(f"discriminator expects (B, C, H, W) or (B, C, T, H, W), got shape {tuple(x.shape)}")
        b, c, t, h, w = x.shape
        frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # (B*T, C, H, W)
        logits = self.main(frames)  # (B*T, 1, h', w')
        return logits.reshape(b, t, *logits.shape[1:]).permute(0, 2, 1, 3, 4)  # (B, 1, T, h', w')


class NLayerDiscriminator3D(ModelMixin, ConfigMixin):
    """WF-VAE's 3-D PatchGAN: conv3x3x3/s2 + LeakyReLU, then `n_layers` conv3x3x3 + norm + LeakyReLU + dropout
    blocks with doubling widths (strides (2, 2, 2), then (1, 2, 2), the last one 1), then a conv to one logit
    channel: (B, C, T, H, W) -> (B, 1, t, h, w).

    The official model normalises with BatchNorm3d; GroupNorm here, for the reasons of `NLayerDiscriminator`
    (same parameter count). Its dropout draws from torch's RNG, which the training loop seeds per step.
    """

    @register_to_config
    def __init__(self, in_channels: int = 3, base_channels: int = 64, n_layers: int = 4, norm_groups: int = 32,
                 dropout: float = 0.3):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        widths = [base_channels * min(2**i, 8) for i in range(n_layers + 1)]  # 64, 128, 256, 512, 512
        _check_groups(widths[1:], norm_groups)
        layers: list[nn.Module] = [nn.Conv3d(in_channels, widths[0], 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
        for i in range(1, n_layers + 1):
            stride = 1 if i == n_layers else (2 if i == 1 else 1, 2, 2)
            layers += [nn.Conv3d(widths[i - 1], widths[i], 3, stride=stride, padding=1, bias=False),
                       nn.GroupNorm(norm_groups, widths[i]), nn.LeakyReLU(0.2), nn.Dropout(dropout)]
        layers.append(nn.Conv3d(widths[-1], 1, 3, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(init_patchgan)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = x.unsqueeze(2)  # an image: a 1-frame clip
        if x.ndim != 5:
            raise ValueError(f"discriminator expects (B, C, T, H, W) or (B, C, H, W), got shape {tuple(x.shape)}")
        return self.main(x)  # (B, 1, t, h, w)
