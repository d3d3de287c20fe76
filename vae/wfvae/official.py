"""Loading the released WF-VAE weights: a `save_pretrained` folder of the official `WFVAEModel` (config.json +
diffusion_pytorch_model.safetensors, e.g. chestnutlzj/WF-VAE-L-16Chn) or an Open-Sora-Plan / training `.ckpt`
(its EMA weights preferred, as the official loader does). Module names match, so the state dict loads as is;
the 3-D Haar filters keep the released value 0.3536.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Union

import torch
from safetensors.torch import load_file

from ..torch_files import load_tensors

OFFICIAL_CLASS = "WFVAEModel"
OFFICIAL_CONSTANT = 0.3536
WEIGHTS = "diffusion_pytorch_model.safetensors"


def official_files(path: Union[str, Path]) -> tuple[Path, Path]:
    """(config.json, weights) of a released folder, a .ckpt file beside its config.json, or a folder with a .ckpt."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    config = folder / "config.json"
    if path.is_file():
        weights = path
    elif (folder / WEIGHTS).is_file():
        weights = folder / WEIGHTS
    else:
        ckpts = sorted(folder.glob("*.ckpt"))
        if not ckpts:
            raise FileNotFoundError(f"no WF-VAE weights in {folder}: expected {WEIGHTS} or a .ckpt file")
        weights = ckpts[-1]
    if not config.is_file():
        raise FileNotFoundError(f"no config.json beside {weights}: the released WF-VAE folder has one "
                                f"(e.g. huggingface.co/chestnutlzj/WF-VAE-L-16Chn)")
    return config, weights


def official_state_dict(weights: Path) -> dict[str, torch.Tensor]:
    """The autoencoder's tensors from a released safetensors file or a training checkpoint."""
    if weights.suffix == ".safetensors":
        return load_file(str(weights))
    state = load_tensors(weights)
    if state.get("ema_state_dict"):
        return {key.removeprefix("module."): value for key, value in state["ema_state_dict"].items()}
    state = state.get("state_dict", state)
    return state.get("gen_model", state)


def model_arguments(config: dict, accepted: set[str]) -> dict:
    """Our constructor arguments for an official config: its keys as they are, the released Haar constant, and
    the latent normalisation from `shift` / `scale` when they hold one value per latent channel."""
    arguments = {key: value for key, value in config.items() if key in accepted}
    arguments["haar_constant"] = OFFICIAL_CONSTANT
    shift, scale, channels = config.get("shift"), config.get("scale"), config.get("latent_dim")
    if shift and scale and len(shift) == len(scale) == channels:
        arguments.update(latents_mean=list(shift), latents_std=[1.0 / s for s in scale])
    return arguments


def load_official(model_class, path: Union[str, Path]):
    """A `model_class` (WFVAE) holding the released weights at `path`, in eval mode."""
    config_path, weights = official_files(path)
    config = json.loads(config_path.read_text())
    if config.get("_class_name", OFFICIAL_CLASS) != OFFICIAL_CLASS:
        raise ValueError(f"{config_path} describes a {config['_class_name']!r}, not the official {OFFICIAL_CLASS}")
    accepted = set(inspect.signature(model_class.__init__).parameters) - {"self"}
    model = model_class(**model_arguments(config, accepted))
    missing, unexpected = model.load_state_dict(official_state_dict(weights), strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights} does not fit the WF-VAE of {config_path}: missing {missing[:5]}"
                         f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                         f"{'...' if len(unexpected) > 5 else ''}")
    return model.eval()
