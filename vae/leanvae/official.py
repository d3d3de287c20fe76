"""Loading the released LeanVAE weights (westlake-repl/LeanVAE: LeanVAE-dim4.ckpt, LeanVAE-dim16.ckpt).

A released file is `{"args": ..., "state_dict": ...}` with the official module names; a training checkpoint of
the official Lightning module holds the same tensors under `autoencoder.`, beside loss modules that are skipped.
The official model differs from ours by three linear conventions, folded into the patch projections here so the
imported model computes the official function on our [-1, 1] videos:

- its videos are in [-0.5, 0.5];
- its Haar coefficients are scaled by 2 (images) and 2 sqrt 2 (videos), ours are orthonormal;
- its 2-D Haar lists the bands LL, (height high), (width high), HH: our bands 1 and 2 the other way round.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Sequence, Union

import torch

from ..torch_files import load_tensors

WHERE = "https://huggingface.co/Yumic/LeanVAE (LeanVAE-dim4.ckpt / LeanVAE-dim16.ckpt)"
PARTS = ("encoder.", "decoder.", "latent_bottleneck.", "std_layer.")  # the autoencoder's; the rest is losses
STACKS = {"encoder.low_layer": "enc_lc", "encoder.high_layer": "enc_hc", "encoder.fusion_layer": "enc_fusion",
          "decoder.fusion_layer": "dec_fusion", "decoder.low_layer": "dec_lc", "decoder.high_layer": "dec_hc"}
PATCHES = {"encoder.image_low_proj.1": "embed.image_lc", "encoder.image_high_proj.1": "embed.image_hc",
           "encoder.video_low_proj.1": "embed.video_lc", "encoder.video_high_proj.1": "embed.video_hc",
           "decoder.image_low_proj.0": "unembed.image_lc", "decoder.image_high_proj.0": "unembed.image_hc",
           "decoder.video_low_proj.0": "unembed.video_lc", "decoder.video_high_proj.0": "unembed.video_hc"}
FEED_FORWARD = {"0": "norm", "1": "proj_in", "4": "proj_out"}  # official nn.Sequential indices
IMAGE_BAND = 3 * 4 * 4  # features of one band of an image patch (colours x 4 x 4)


def official_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The autoencoder's tensors, official names, from a released or a Lightning training checkpoint."""
    if not path.is_file():
        raise FileNotFoundError(f"no LeanVAE checkpoint at {path}: download one from {WHERE}")
    state = load_tensors(path, WHERE)
    state = state.get("state_dict", state)
    state = {key.removeprefix("module.").removeprefix("autoencoder."): value for key, value in state.items()}
    state = {key: value for key, value in state.items() if key.startswith(PARTS)}
    if "latent_bottleneck.phi" not in state:
        raise ValueError(f"{path} is not a LeanVAE checkpoint: no tensor latent_bottleneck.phi "
                         f"(a WF-VAE .ckpt needs its config.json beside it)")
    return state


def _count(state: dict, pattern: str) -> int:
    return len({m.group(1) for key in state if (m := re.match(pattern, key))})


def size_from_tensors(state: dict[str, torch.Tensor]) -> dict:
    """Our constructor arguments for the official model these tensors belong to."""
    return dict(latent_channels=state["latent_bottleneck.phi"].shape[0],
                lc_dim=state["encoder.image_low_proj.1.weight"].shape[0],
                hc_dim=state["encoder.image_high_proj.1.weight"].shape[0],
                branch_layers=_count(state, r"encoder\.low_layer\.dconv_layer\.(\d+)\."),
                fusion_layers=_count(state, r"encoder\.fusion_layer\.dconv_layer\.(\d+)\."),
                ista_phases=_count(state, r"latent_bottleneck\.forward_l\.(\d+)\."),
                ista_depth=_count(state, r"latent_bottleneck\.forward_l\.0\.dconv_layer\.(\d+)\."))


def _stack(official: str) -> str:
    if official in STACKS:
        return STACKS[official]
    kind, phase = re.fullmatch(r"latent_bottleneck\.(forward|backward)_l\.(\d+)", official).groups()
    return f"bottleneck.phases.{phase}.{kind}_transform"


def our_name(key: str) -> str:
    """Our parameter name for an official one."""
    if m := re.fullmatch(r"(.+)\.dconv_layer\.(\d+)\.ds_conv\.(weight|bias)", key):
        return f"{_stack(m.group(1))}.{m.group(2)}.mix.conv.{m.group(3)}"
    if m := re.fullmatch(r"(.+)\.ffd_layer\.(\d+)\.(\d)\.(weight|bias)", key):
        return f"{_stack(m.group(1))}.{m.group(2)}.ff.{FEED_FORWARD[m.group(3)]}.{m.group(4)}"
    if m := re.fullmatch(r"latent_bottleneck\.(weights|threshold)\.(\d+)", key):
        return f"bottleneck.phases.{m.group(2)}.{'step' if m.group(1) == 'weights' else 'threshold'}"
    if m := re.fullmatch(r"(.+_proj\.\d)\.(weight|bias)", key):
        return f"{PATCHES[m.group(1)]}.{m.group(2)}"
    names = {"latent_bottleneck.phi": "bottleneck.phi", "latent_bottleneck.Q": "bottleneck.q",
             "std_layer.weight": "bottleneck.to_logvar.weight", "std_layer.bias": "bottleneck.to_logvar.bias"}
    if key not in names:
        raise ValueError(f"unexpected tensor {key!r} in a LeanVAE checkpoint")
    return names[key]


def _swap_image_bands(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Exchange the first two bands (of three) of an image high-band projection along `dim`."""
    lh, hl, hh = t.split(IMAGE_BAND, dim=dim)
    return torch.cat([hl, lh, hh], dim=dim)


def our_value(name: str, value: torch.Tensor) -> torch.Tensor:
    """The official tensor in our conventions (module docstring): range and Haar scale in the video patch
    projections (an image's factors cancel), band order in the image high-band ones."""
    if name.startswith("embed.video_") and name.endswith("weight"):
        return value * math.sqrt(2)  # official coefficients of x / 2, times 2 sqrt 2
    if name.startswith("unembed.video_"):
        return value / math.sqrt(2)  # official pixels / (2 sqrt 2), times 2
    if name == "embed.image_hc.weight":
        return _swap_image_bands(value, dim=1)
    if name.startswith("unembed.image_hc"):
        return _swap_image_bands(value, dim=0)
    if name.endswith(".threshold"):
        return value.reshape(())
    return value


def load_official(model_class, path: Union[str, Path], latents_mean: Union[float, Sequence[float]] = 0.0,
                  latents_std: Union[float, Sequence[float]] = 1.0):
    """A `model_class` (LeanVAE) holding the released weights at `path`, in eval mode."""
    state = official_state_dict(Path(path))
    model = model_class(**size_from_tensors(state), latents_mean=latents_mean, latents_std=latents_std)
    ours = {}
    for key, value in state.items():
        name = our_name(key)
        ours[name] = our_value(name, value)
    missing, unexpected = model.load_state_dict(ours, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} does not fit a LeanVAE of its size: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return model.eval()
