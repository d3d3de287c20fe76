"""Loading the released IV-VAE weights: the `.pth` state dicts of ali-vilab/iv-vae (ModelScope wpy1999/iv-vae:
ivvae_z4_dim64.pth, ivvae_z8_dim64.pth, ivvae_z16_dim64.pth, ivvae_z16_dim96.pth). Module names match ours, so the
state dict loads as is; the size is read from the tensors' shapes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Union

import torch

from ..torch_files import load_tensors

RELEASED_STRUCTURE = dict(num_res_blocks=2)  # the released models' constructor default
WHERE = "https://modelscope.cn/models/wpy1999/iv-vae (the .pth files of github.com/ali-vilab/iv-vae)"


def official_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"no IV-VAE weights at {path}: download them from {WHERE}")
    state = load_tensors(path, WHERE)
    state = state.get("state_dict", state)
    return {key.removeprefix("module."): value for key, value in state.items()}


def size_from_tensors(state: dict[str, torch.Tensor]) -> dict:
    """z_dim, dim and num_res_blocks of a released state dict (the decoder has 5 n + 8 upsampling layers)."""
    try:
        dim = state["encoder.conv1.conv_2d.weight"].shape[0]
        z_dim = state["conv2.conv_2d.weight"].shape[1]
    except KeyError as missing:
        raise ValueError(f"not an IV-VAE state dict: no tensor {missing}") from None
    layers = {int(m.group(1)) for key in state if (m := re.match(r"decoder\.upsamples\.(\d+)\.", key))}
    return dict(z_dim=z_dim, dim=dim, num_res_blocks=(len(layers) - 8) // 5)


def released_statistics(size: dict, presets: dict[str, dict]) -> dict:
    """The published latent scale / shift (as latents_mean / latents_std) of the released model of this size, or
    the identity for other sizes."""
    for kwargs in presets.values():
        if {**RELEASED_STRUCTURE, **kwargs}.items() >= size.items() and "latents_mean" in kwargs:
            return dict(latents_mean=kwargs["latents_mean"], latents_std=kwargs["latents_std"])
    return dict(latents_mean=0.0, latents_std=1.0)


def load_official(model_class, path: Union[str, Path], presets: dict[str, dict],
                  latents_mean: Optional[float] = None, latents_std: Optional[float] = None):
    """A `model_class` (IVVAE) holding the weights at `path`, in eval mode. A released size gets its preset's
    latent statistics (the published scale / shift) unless they are given."""
    state = official_state_dict(Path(path))
    size = size_from_tensors(state)
    stats = released_statistics(size, presets)
    stats.update({k: v for k, v in dict(latents_mean=latents_mean, latents_std=latents_std).items() if v is not None})
    model = model_class(**size, **stats)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} does not fit an IV-VAE of {size}: missing {missing[:5]}"
                         f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                         f"{'...' if len(unexpected) > 5 else ''}")
    return model.eval()
