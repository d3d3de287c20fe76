"""Make the Latte golden files: small random-init official models (class-conditional as for UCF-101, and
unconditional as for SkyTimelapse), their state dicts (saved by the test in the released `{"ema": ...}` layout),
inputs, the official `forward` and the official `forward_with_cfg`, one safetensors file each.

    git clone https://github.com/Vchitect/Latte /tmp/latte   # b27c24a, 2025-10-31
    python tests/data/make_latte_golden.py --official /tmp/latte

`models/latte.py` is loaded from that checkout on its own (never from this repository; the package `__init__`
imports the text-to-video model's dependencies). Each file holds `state.<key>` (the official state dict, every
learned tensor perturbed from its initial value so that adaLN-Zero's zeros cannot hide a wrong index), `x`
(B, F, C, H, W) in the official layout, `t`, `y` (class models), `out` = `forward(x, t, y)`, and for the class
model `cfg_x`, `cfg_y` (labels, then the null class), `cfg_t` (500 for all), `cfg_out` =
`forward_with_cfg(cfg_x, cfg_t, cfg_y, 4.0)`;
the metadata holds the constructor arguments. float32, CPU.
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
GUIDANCE = 4.0


def official_latte(checkout: Path):
    spec = importlib.util.spec_from_file_location("official_latte", checkout / "models" / "latte.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Latte


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="a checkout of Vchitect/Latte")
    args = parser.parse_args()
    latte = official_latte(args.official)
    for name, sizes in MODELS.items():
        torch.manual_seed(0)
        model = latte(**sizes).eval()
        with torch.no_grad():
            for param in model.parameters():
                if param.requires_grad:  # not the fixed sin-cos embeddings
                    param.add_(0.05 * torch.randn_like(param))
        g = torch.Generator().manual_seed(1)
        s, f, c = sizes["input_size"], sizes["num_frames"], sizes["in_channels"]
        x = torch.randn(2, f, c, s, s, generator=g)
        t = torch.tensor([3, 917])
        tensors = {"x": x, "t": t}
        with torch.no_grad():
            if sizes["extras"] == 2:
                y = torch.tensor([1, 4])
                cfg_x = torch.cat([x, x])
                cfg_y = torch.cat([y, torch.full_like(y, sizes["num_classes"])])
                cfg_t = torch.full((4,), 500)  # one timestep for the batch, as in sampling
                tensors |= {"y": y, "out": model(x, t, y=y), "cfg_x": cfg_x, "cfg_y": cfg_y, "cfg_t": cfg_t,
                            "cfg_out": model.forward_with_cfg(cfg_x, cfg_t, cfg_y, GUIDANCE)}
            else:
                tensors["out"] = model(x, t)
        tensors |= {f"state.{key}": value for key, value in model.state_dict().items()}
        path = HERE / f"latte_golden_{name}.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path),
                  metadata={"args": json.dumps(sizes), "guidance": str(GUIDANCE)})
        print(f"{path.name}: {sum(v.numel() for v in tensors.values())} numbers")


if __name__ == "__main__":
    main()
