"""Make the Latte+IMG golden files: small random-init official `LatteIMG` models (class-conditional as for
UCF-101, unconditional as for SkyTimelapse) run as the official `train_with_img.py` runs them, on a video
followed by `use_image_num` images, each image with its own label.

    git clone https://github.com/Vchitect/Latte /tmp/latte   # b27c24a, 2025-10-31
    python tests/data/make_latteimg_golden.py --official /tmp/latte

`models/latte_img.py` is loaded from that checkout on its own (never from this repository). The model is in
training mode (only then does the official forward take images) with label dropout switched off
(`y_embedder.dropout_prob = 0`), so the output is deterministic. Each file holds `state.<key>` (the official
state dict, every learned tensor perturbed from its initial value so that adaLN-Zero's zeros cannot hide a wrong
index), `x` (B, F + I, C, H, W) in the official layout, `t`, `y` and `y_image` (B, I) (class models), and `out` =
`forward(x, t, y=y, y_image=list(y_image), use_image_num=I)`; the metadata holds the constructor arguments and
I. float32, CPU.
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
    "ucf": dict(input_size=4, patch_size=2, in_channels=4, hidden_size=32, depth=4, num_heads=2, num_frames=3,
                num_classes=5, extras=2, learn_sigma=True),
    "sky": dict(input_size=2, patch_size=1, in_channels=4, hidden_size=32, depth=2, num_heads=4, num_frames=5,
                num_classes=5, extras=1, learn_sigma=True),
}
IMAGES = 3


def official_latte_img(checkout: Path):
    spec = importlib.util.spec_from_file_location("official_latte_img", checkout / "models" / "latte_img.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Latte


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="a checkout of Vchitect/Latte")
    args = parser.parse_args()
    latte = official_latte_img(args.official)
    for name, sizes in MODELS.items():
        torch.manual_seed(0)
        model = latte(**sizes).train()
        if sizes["extras"] == 2:
            model.y_embedder.dropout_prob = 0.0  # deterministic: no label dropout in this forward
        with torch.no_grad():
            for param in model.parameters():
                if param.requires_grad:  # not the fixed sin-cos embeddings
                    param.add_(0.05 * torch.randn_like(param))
        g = torch.Generator().manual_seed(1)
        s, f, c = sizes["input_size"], sizes["num_frames"], sizes["in_channels"]
        x = torch.randn(2, f + IMAGES, c, s, s, generator=g)
        t = torch.tensor([3, 917])
        tensors = {"x": x, "t": t}
        with torch.no_grad():
            if sizes["extras"] == 2:
                y, y_image = torch.tensor([1, 4]), torch.tensor([[0, 2, 4], [3, 3, 1]])
                tensors |= {"y": y, "y_image": y_image,
                            "out": model(x, t, y=y, y_image=list(y_image), use_image_num=IMAGES)}
            else:
                tensors["out"] = model(x, t, use_image_num=IMAGES)
        tensors |= {f"state.{key}": value for key, value in model.state_dict().items()}
        path = HERE / f"latteimg_golden_{name}.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path),
                  metadata={"args": json.dumps(sizes), "images": str(IMAGES)})
        print(f"{path.name}: {sum(v.numel() for v in tensors.values())} numbers")


if __name__ == "__main__":
    main()
