"""Make the LeanVAE golden files: small random-init official models, their state dicts (saved by the test in the
released `{"args", "state_dict"}` layout), a video, an image and the official outputs, one safetensors file each.

    git clone https://github.com/westlake-repl/LeanVAE /tmp/leanvae   # 62f7c7d, 2026-07-18
    pip install --target /tmp/offdeps beartype PyWavelets             # the official code's imports
    python tests/data/make_leanvae_golden.py --official /tmp/leanvae --deps /tmp/offdeps

The official classes are imported from that checkout (never from this repository), without its package
`__init__`, which needs Lightning and a video reader. Each file holds `state.<key>` (the official state dict;
every tensor perturbed from its initial value so that unit gains and zero biases cannot hide a wrong index),
`video` (1, 3, 9, 16, 16) and `image` (1, 3, 16, 16) in the official range [-0.5, 0.5], their official latents
(`encode`: the measurement Phi p, the posterior mean) and decodings, in float32; its metadata holds the args.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
MODELS = {  # the released structure's knobs, narrow: 4 and 16 latent channels, every layer count != its twin's
    "dim4": dict(embedding_dim=24, latent_dim=4, l_dim=8, h_dim=16, sep_num_layer=2, fusion_num_layer=1,
                 ista_iter_num=2, ista_layer_num=1),
    "dim16": dict(embedding_dim=24, latent_dim=16, l_dim=8, h_dim=16, sep_num_layer=1, fusion_num_layer=2,
                  ista_iter_num=1, ista_layer_num=2),
}


def official_class(checkout: Path):
    package = types.ModuleType("LeanVAE")  # the package without its __init__ (Lightning, decord)
    package.__path__ = [str(checkout / "LeanVAE")]
    sys.modules["LeanVAE"] = package
    from LeanVAE.models.autoencoder import LeanVAE

    return LeanVAE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="a checkout of westlake-repl/LeanVAE")
    parser.add_argument("--deps", type=Path, help="a folder with beartype and PyWavelets (pip install --target)")
    args = parser.parse_args()
    if args.deps:
        sys.path.append(str(args.deps))  # after site-packages: the project's numpy and torch stay first
    official = official_class(args.official)
    for name, sizes in MODELS.items():
        torch.manual_seed(0)
        model_args = dict(sizes, use_tile_inference=False, chunksize_enc=5, chunksize_dec=5)
        model = official(argparse.Namespace(**model_args)).eval()
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.02 * torch.randn_like(param))
        g = torch.Generator().manual_seed(1)
        video = torch.rand(1, 3, 9, 16, 16, generator=g) - 0.5
        image = torch.rand(1, 3, 16, 16, generator=g) - 0.5
        with torch.no_grad():
            video_latent = model.encode(video)
            video_recon = model.decode(video_latent)
            image_latent = model.encode(image)
            image_recon = model.decode(image_latent, is_image=True)
        tensors = {f"state.{key}": value for key, value in model.state_dict().items()}
        tensors |= {"video": video, "video_latent": video_latent, "video_recon": video_recon, "image": image,
                    "image_latent": image_latent, "image_recon": image_recon}
        path = HERE / f"leanvae_golden_{name}.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"args": json.dumps(model_args)})
        print(f"{path.name}: {sum(v.numel() for v in tensors.values())} numbers")


if __name__ == "__main__":
    main()
