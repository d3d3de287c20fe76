"""Train the LeanVAE video autoencoder.

    python train_vae.py                                   # configs/vae/default.yaml: synthetic data on a CPU
    accelerate launch train_vae.py --config configs/vae/leanvae-4ch.yaml data.root=/data/kinetics
    python train_vae.py max_steps=100 output_dir=runs/try --resume latest

Every config key can be overridden as key=value (sections with dots: data.num_frames=9, loss.disc_start=0).
The EMA model is saved to <output_dir>/vae (load it with LeanVAE.from_pretrained).
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from pipelines.config import ConfigError
from pipelines.vae_trainer import main as run
from vae.lpips import LPIPSWeightsMissing


def main(argv: Optional[Sequence[str]] = None) -> dict:
    try:
        return run(argv)
    except (ConfigError, LPIPSWeightsMissing) as err:
        sys.exit(f"train_vae.py: error: {err}")


if __name__ == "__main__":
    main()
