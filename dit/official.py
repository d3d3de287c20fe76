"""Loading the released Latte weights: Vchitect/Latte's checkpoints (ucf101.pt, skytimelapse.pt, ffs.pt,
taichi.pt; SD-VAE latents) and LeanVAE's (ucf-dim4.pt, sky-dim4.pt, ucf-dim16.pt, sky-dim16.pt). A checkpoint is
`{"ema": ..., "model": ...}` (EMA preferred, as the official `find_model`) or a bare state dict.

The official model is the same function as `LatteDiT` with `gelu="tanh"`; the tensors differ in layout only:
its patch embedding is a stride-p Conv2d (ours the same map as a Linear), its final layer writes (p, q, c) per
token (ours (c, p, q)), its timestep MLP is a Sequential, and it stores the fixed sin-cos embeddings, which are
checked against ours instead of loaded.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Union

import torch

from vae.torch_files import load_tensors

from .presets import DIT_PRESETS

WHERE = ("https://github.com/Vchitect/Latte (ucf101.pt, skytimelapse.pt, ...) or "
         "https://huggingface.co/Yumic/LeanVAE (ucf-dim4.pt, sky-dim4.pt, ...)")
HEADS = {preset["hidden_size"]: preset["num_heads"] for preset in DIT_PRESETS.values()}
NAMES = {"x_embedder.proj.bias": "x_embedder.bias", "t_embedder.mlp.0.weight": "t_embedder.linear_1.weight",
         "t_embedder.mlp.0.bias": "t_embedder.linear_1.bias", "t_embedder.mlp.2.weight": "t_embedder.linear_2.weight",
         "t_embedder.mlp.2.bias": "t_embedder.linear_2.bias"}
FIXED = ("pos_embed", "temp_embed")


def official_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"no Latte checkpoint at {path}: download one from {WHERE}")
    state = load_tensors(path, WHERE)
    state = state.get("ema") or state.get("model") or state
    state = {key.removeprefix("module."): value for key, value in state.items()}
    if "x_embedder.proj.weight" not in state:
        raise ValueError(f"{path} is not a Latte checkpoint: no tensor x_embedder.proj.weight")
    return state


def config_from_tensors(state: dict[str, torch.Tensor], overrides: dict) -> dict:
    """`LatteDiT` arguments for the official model these tensors belong to, then `overrides`."""
    hidden, channels, patch, _ = state["x_embedder.proj.weight"].shape
    out_features = state["final_layer.linear.weight"].shape[0]
    table = state.get("y_embedder.embedding_table.weight")
    config = dict(in_channels=channels, patch_size=patch, hidden_size=hidden,
                  depth=len({m.group(1) for key in state if (m := re.match(r"blocks\.(\d+)\.", key))}),
                  num_frames=state["temp_embed"].shape[1],
                  sample_size=round(state["pos_embed"].shape[1] ** 0.5) * patch,
                  learn_sigma=out_features == 2 * channels * patch * patch,
                  num_classes=0 if table is None else table.shape[0] - 1, gelu="tanh")
    if "num_heads" not in overrides:
        if hidden not in HEADS:
            raise ValueError(f"no Latte preset has width {hidden}: pass num_heads")
        config["num_heads"] = HEADS[hidden]
    return {**config, **overrides}


def our_state_dict(state: dict[str, torch.Tensor], out_channels: int, patch: int) -> dict[str, torch.Tensor]:
    """The official tensors under our names and layouts (module docstring); the fixed embeddings left out."""
    ours = {}
    for key, value in state.items():
        if key in FIXED:
            continue
        if key == "x_embedder.proj.weight":
            ours["x_embedder.weight"] = value.flatten(1)  # (D, C, p, q) -> (D, C p q)
        elif key.startswith("final_layer.linear."):  # outputs (p, q, c) -> (c, p, q)
            ours[key] = value.unflatten(0, (patch, patch, out_channels)).movedim(2, 0).flatten(0, 2)
        else:
            ours[NAMES.get(key, key)] = value
    return ours


def load_official(model_class, path: Union[str, Path], **overrides):
    """A `model_class` (LatteDiT) holding the released weights at `path`, in eval mode."""
    state = official_state_dict(Path(path))
    model = model_class(**config_from_tensors(state, overrides))
    for name in FIXED:  # (1, N, D) / (1, F, D) in the official model
        ours = getattr(model, name).reshape(state[name].shape)
        if not torch.allclose(ours, state[name].float(), atol=1e-5):
            raise ValueError(f"{path}: its {name} is not Latte's sin-cos embedding for this size")
    missing, unexpected = model.load_state_dict(
        our_state_dict(state, model.out_channels, model.config.patch_size), strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} does not fit a Latte of its size: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval()
