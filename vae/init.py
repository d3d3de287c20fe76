"""How a bundled VAE built from scratch starts: the initialisers their `initialize_weights` methods are written with.

PyTorch's default for convolutions and linear layers (kaiming-uniform with a = sqrt(5), a weight std of
1 / sqrt(3 fan_in)) shrinks the signal by about sqrt(3) at every layer. Through IV-VAE's five-layer encoder head
the latent means came out at 0.05 std while the posterior std was 1: a latent that carries almost nothing, which
the decoder learns to ignore and the KL then keeps at the prior (posterior collapse). The rules here keep the
signal at unit scale instead, so the latent means start as spread as the posterior noise is wide:

- a layer's weights are N(0, gain^2 / fan_in) (`unit_`), its bias zero; `SILU_GAIN` for a layer that reads a
  normalised, SiLU-activated input (the norm -> SiLU -> conv pattern of every residual block), 1 otherwise;
- the last layer of a residual branch (and an attention output) starts at zero (`zero_`): every block starts as
  its shortcut, so depth does not change the scale, and the model starts close to a linear autoencoder (which is
  why LeanVAE, whose bottleneck decoder starts at the transpose of its encoder, learns fast);
- a posterior head's mean rows are unit-scale and its log-variance rows start at zero weights and a bias giving a
  posterior std of `POSTERIOR_STD` (`posterior_head_`): means of unit spread, whatever the encoder's features are,
  with narrow noise around them;
- norm gains one, biases zero (`reset_norms_`).

Loading released weights replaces all of it; only a model trained from scratch starts here.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

# 1 / sqrt(E[silu(x)^2]) for x ~ N(0, 1) (E = 0.3559): a layer reading SiLU(norm(x)) then writes unit variance.
SILU_GAIN = 1 / math.sqrt(0.3559)
# Where the posterior std starts, about a tenth of the means' spread: near where the short recipes' small KL
# weights let it end (LeanVAE's default: 0.05 of the spread, WF-VAE's 0.04). Started at 1, IV-VAE ended its 200
# steps still at 0.69 of the spread (15.1 dB on the held-out real clips); from 0.1 at 0.31 (14.9 dB), so the DiT
# learns from latents, not noise. WF-VAE's reconstruction was the same either way (19.39 dB).
POSTERIOR_STD = 0.1
NORMS = (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm2d, nn.BatchNorm3d)


def _fan_in(weight: torch.Tensor) -> int:
    return weight[0].numel()  # input channels (per group) x kernel volume


@torch.no_grad()
def unit_(layer: nn.Module, gain: float = 1.0) -> nn.Module:
    """Weights N(0, gain^2 / fan_in), bias zero: unit-variance inputs give (gain x) unit-variance outputs."""
    layer.weight.normal_(0.0, gain / math.sqrt(_fan_in(layer.weight)))
    if layer.bias is not None:
        layer.bias.zero_()
    return layer


@torch.no_grad()
def zero_(layer: nn.Module) -> nn.Module:
    layer.weight.zero_()
    if layer.bias is not None:
        layer.bias.zero_()
    return layer


@torch.no_grad()
def posterior_head_(layer: nn.Module, logvar_rows: slice, gain: float = 1.0) -> nn.Module:
    """The layer writing [means | log-variances]: unit-scale means; log-variances from zero weights and a bias
    giving every latent the posterior std `POSTERIOR_STD`."""
    unit_(layer, gain)
    layer.weight[logvar_rows].zero_()
    layer.bias[logvar_rows].fill_(2 * math.log(POSTERIOR_STD))
    return layer


@torch.no_grad()
def reset_norms_(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, NORMS) and module.weight is not None:
            module.weight.fill_(1.0)
            module.bias.zero_()


def kernel_centre(layer: nn.Module) -> tuple[int, ...]:
    """The centre position of a convolution's kernel (of a group causal kernel: its "now" tap)."""
    return tuple(k // 2 for k in layer.weight.shape[2:])


@torch.no_grad()
def route_(layer: nn.Module, rows: torch.Tensor, columns: torch.Tensor, value: float, taps=None) -> None:
    """Output channels `rows` of a convolution read only input channels `columns` (one each), `value` times the
    input at each kernel position in `taps` (default: the kernel's centre). How a block-mean start is wired."""
    layer.weight[rows] = 0  # (out, in, *kernel)
    for tap in taps if taps is not None else [kernel_centre(layer)]:
        layer.weight[(rows, columns, *tap)] = value


def convolutions(model: nn.Module) -> list[nn.Module]:
    """Every 2-D and 3-D convolution in `model`, in definition order."""
    return [module for module in model.modules() if isinstance(module, (nn.Conv2d, nn.Conv3d))]
