"""Make the WF-VAE golden files: small random-init official models, their state dicts in the released layout, an
input video and the official outputs, one safetensors file per model.

    git clone https://github.com/PKU-YuanGroup/WF-VAE /tmp/wfvae   # d858bee, 2025-05-11
    python tests/data/make_wfvae_golden.py --official /tmp/wfvae

The official code is imported from that checkout (never from this repository). Each file holds `state.<key>`
(the official model's state dict), `input` (1, 3, 9, 32, 32) in [-1, 1], the posterior `mean` and `logvar` of
`encode(input)`, `recon` = `decode(mean)`, the energy-flow sub-bands of `forward(input, sample_posterior=False)`
(`enc_l1`, `dec_l1`, `enc_l2`, `dec_l2`), all in float32, and `mean_f64` / `recon_f64`, the same model run in
float64 (where two correct implementations agree to ~1e-14); its metadata holds the official `config.json`. CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
RELEASED_BLOCKS = dict(attention_type="AttnBlock3DFix", norm_type="layernorm", t_interpolation="trilinear",
                       use_attention=True, dropout=0.0)
MODELS = {
    # The released layout (equal flows, one connection block), narrow.
    "tiny": dict(latent_dim=4, base_channels=4, encoder_num_resblocks=1, decoder_num_resblocks=1,
                 encoder_energy_flow_hidden_size=4, decoder_energy_flow_hidden_size=4, connect_res_layer_num=1),
    # Open-Sora-Plan's S layout (encoder flow narrower than the decoder's, two connection blocks), narrow.
    "osp": dict(latent_dim=8, base_channels=4, encoder_num_resblocks=2, decoder_num_resblocks=2,
                encoder_energy_flow_hidden_size=2, decoder_energy_flow_hidden_size=4, connect_res_layer_num=2,
                scale=[0.3, 0.8, 0.7, 0.9, 0.4, 0.7, 0.5, 0.8], shift=[-0.2, -0.3, -0.4, -2.8, -2.1, -1.8, 1.0, -1.0]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="a checkout of PKU-YuanGroup/WF-VAE")
    args = parser.parse_args()
    sys.path.insert(0, str(args.official))
    from causalvideovae.model.vae.modeling_wfvae import WFVAEModel

    for name, sizes in MODELS.items():
        torch.manual_seed(0)
        model = WFVAEModel(**RELEASED_BLOCKS, **sizes).eval()
        x = torch.rand(1, 3, 9, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
        with torch.no_grad():
            posterior = model.encode(x).latent_dist
            recon = model.decode(posterior.mean).sample
            extra = model(x, sample_posterior=False).extra_output
        tensors = {f"state.{key}": value.contiguous() for key, value in model.state_dict().items()}
        tensors |= {"input": x, "mean": posterior.mean, "logvar": posterior.logvar, "recon": recon}
        tensors |= dict(zip(("enc_l1", "dec_l1", "enc_l2", "dec_l2"), extra))
        model.double()
        with torch.no_grad():
            tensors["mean_f64"] = model.encode(x.double()).latent_dist.mean
            tensors["recon_f64"] = model.decode(tensors["mean_f64"]).sample
        config = {"_class_name": "WFVAEModel", **{k: v for k, v in model.config.items() if not k.startswith("_")}}
        path = HERE / f"wfvae_golden_{name}.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"config": json.dumps(config)})
        print(f"{path}: {sum(p.numel() for p in model.parameters())} parameters, recon {tuple(recon.shape)}")


if __name__ == "__main__":
    main()
