"""Make the Latte golden files: small random-init official models (class-conditional as for UCF-101, and
unconditional as for SkyTimelapse), their state dicts (saved by the test in the released `{"ema": ...}` layout),
inputs and outputs, one safetensors file each; for the video-only `Latte` (`models/latte.py`) and for Latte+IMG's
`LatteIMG` (`models/latte_img.py`, run on a video followed by images as `train_with_img.py` runs it).

    git clone https://github.com/Vchitect/Latte /tmp/latte   # b27c24a, 2025-10-31
    python tests/data/make_latte_golden.py --official /tmp/latte

Each model file is loaded from that checkout on its own (never from this repository; the package `__init__`
imports the text-to-video model's dependencies). Every file holds `state.<key>` (the official state dict, every
learned tensor perturbed from its initial value so that adaLN-Zero's zeros cannot hide a wrong index), `x` in the
official layout (B, F, C, H, W) and `t`; the metadata holds the constructor arguments. float32, CPU.

- `latte_golden_{ucf,sky}`: `y` (class models), `out` = `forward(x, t, y)`, and for the class model `cfg_x`,
  `cfg_y` (labels, then the null class), `cfg_t` (500 for all), `cfg_out` = `forward_with_cfg(cfg_x, cfg_t, cfg_y,
  4.0)`.
- `latteimg_golden_{ucf,sky}`: x holds the video's F frames then `images` (metadata) images; `y`, `y_image`
  (B, images) (class models), `out` = `forward(x, t, y=y, y_image=list(y_image), use_image_num=images)`, in
  training mode (only then does the official forward take images) with label dropout off, so deterministic.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
MODELS = {
    # 8 latent channels, so that the official guidance (first 4 channels only) differs from guiding all.
    "ucf": dict(input_size=4, patch_size=2, in_channels=8, hidden_size=32, depth=4, num_heads=2, num_frames=3,
                num_classes=5, extras=2, learn_sigma=True),
    "sky": dict(input_size=2, patch_size=1, in_channels=4, hidden_size=32, depth=2, num_heads=4, num_frames=5,
                num_classes=5, extras=1, learn_sigma=True),
}
IMG_MODELS = {"ucf": dict(MODELS["ucf"], in_channels=4), "sky": MODELS["sky"]}
GUIDANCE = 4.0
IMAGES = 3


def official_class(checkout: Path, file: str):
    spec = importlib.util.spec_from_file_location(f"official_{file}", checkout / "models" / f"{file}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Latte


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:  # not the fixed sin-cos embeddings
                param.add_(0.05 * torch.randn_like(param))
    return model


def video_tensors(model, sizes: dict, x: torch.Tensor, t: torch.Tensor) -> dict:
    if sizes["extras"] != 2:
        return {"out": model.eval()(x, t)}
    y = torch.tensor([1, 4])
    cfg_x = torch.cat([x, x])
    cfg_y = torch.cat([y, torch.full_like(y, sizes["num_classes"])])
    cfg_t = torch.full((4,), 500)  # one timestep for the batch, as in sampling
    return {"y": y, "out": model.eval()(x, t, y=y), "cfg_x": cfg_x, "cfg_y": cfg_y, "cfg_t": cfg_t,
            "cfg_out": model.forward_with_cfg(cfg_x, cfg_t, cfg_y, GUIDANCE)}


def joint_tensors(model, sizes: dict, x: torch.Tensor, t: torch.Tensor) -> dict:
    model.train()
    if sizes["extras"] != 2:
        return {"out": model(x, t, use_image_num=IMAGES)}
    model.y_embedder.dropout_prob = 0.0  # deterministic: no label dropout in this forward
    y, y_image = torch.tensor([1, 4]), torch.tensor([[0, 2, 4], [3, 3, 1]])
    return {"y": y, "y_image": y_image, "out": model(x, t, y=y, y_image=list(y_image), use_image_num=IMAGES)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="a checkout of Vchitect/Latte")
    args = parser.parse_args()
    products = [("latte", "latte", MODELS, 0, video_tensors, {"guidance": str(GUIDANCE)}),
                ("latteimg", "latte_img", IMG_MODELS, IMAGES, joint_tensors, {"images": str(IMAGES)})]
    for prefix, file, models, images, tensors_of, metadata in products:
        latte = official_class(args.official, file)
        for name, sizes in models.items():
            torch.manual_seed(0)
            model = perturbed(latte(**sizes))
            g = torch.Generator().manual_seed(1)
            s, f, c = sizes["input_size"], sizes["num_frames"], sizes["in_channels"]
            x, t = torch.randn(2, f + images, c, s, s, generator=g), torch.tensor([3, 917])
            with torch.no_grad():
                tensors = {"x": x, "t": t} | tensors_of(model, sizes, x, t)
            tensors |= {f"state.{key}": value for key, value in model.state_dict().items()}
            path = HERE / f"{prefix}_golden_{name}.safetensors"
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(path),
                      metadata={"args": json.dumps(sizes), **metadata})
            print(f"{path.name}: {sum(v.numel() for v in tensors.values())} numbers")


if __name__ == "__main__":
    main()
