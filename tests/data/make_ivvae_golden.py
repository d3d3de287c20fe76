"""Make the IV-VAE golden files: small random-init official models, their state dicts in the released `.pth`
layout, an input video and the official outputs, one safetensors file per model.

    git clone https://github.com/ali-vilab/iv-vae /tmp/ivvae   # 555a35a, 2025-03-04
    python tests/data/make_ivvae_golden.py --official /tmp/ivvae

The official code is imported from that checkout (never from this repository). Its `encode` draws a random
sample; here it returns the posterior mean (`sample(deterministic=True)`), still scaled and shifted as released.
Each file holds `state.<key>` (the official state dict; every tensor perturbed from its initial value so that
unit norm gains and zero biases cannot hide a wrong index), `input` (1, 3, 9, 32, 32) in [-1, 1], `latent` =
`encode(input)` (scale * (mean - shift)), `recon` = `decode(latent)`, in float32, and `latent_f64` /
`recon_f64` from the same model in float64; its metadata holds the constructor arguments. CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
MODELS = {
    # The released structure (two residual blocks per encoder stage), narrow, with ivvae_z4's scale and shift.
    "z4": dict(z_dim=4, dim=4, num_res_blocks=2, scale_factor=1.3196, shift_factor=0.1250),
    # One residual block per stage and 8 latent channels (the small presets' layout).
    "z8": dict(z_dim=8, dim=4, num_res_blocks=1, scale_factor=1.0, shift_factor=0.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="a checkout of ali-vilab/iv-vae")
    args = parser.parse_args()
    sys.path.insert(0, str(args.official))
    from models import vae3d

    for name, sizes in MODELS.items():
        torch.manual_seed(0)
        model = vae3d.VAutoencoder3d(dim_mult=[1, 2, 4, 4], attn_scales=[], temperal_downsample=[False, True, True],
                                     dropout=0.0, **sizes).eval()
        model.sample = lambda mu, log_var, deterministic=False: mu  # the posterior mean, not a random sample
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.02 * torch.randn_like(param))
        x = torch.rand(1, 3, 9, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
        with torch.no_grad():
            latent = model.encode(x)
            recon = model.decode(latent)
        tensors = {f"state.{key}": value.contiguous() for key, value in model.state_dict().items()}
        tensors |= {"input": x, "latent": latent, "recon": recon}
        model.double()
        with torch.no_grad():
            tensors["latent_f64"] = model.encode(x.double())
            tensors["recon_f64"] = model.decode(tensors["latent_f64"])
        path = HERE / f"ivvae_golden_{name}.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"config": json.dumps(sizes)})
        print(f"{path}: {sum(p.numel() for p in model.parameters())} parameters, recon {tuple(recon.shape)}")


if __name__ == "__main__":
    main()
