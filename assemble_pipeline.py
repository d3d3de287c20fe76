"""Assemble a run folder's pipeline from released weights, then sample and evaluate it like a trained run.

    python assemble_pipeline.py --dit ucf-dim4.pt --vae LeanVAE-dim4.ckpt --latent-scale 0.7744 \\
        --class-names /data/UCF-101/ucfTrainTestlist/classInd.txt --guidance-scale 7 --output-dir runs/lean-ucf
    python sample.py --run runs/lean-ucf --prompt-class 12
    python evaluate.py --run runs/lean-ucf --dataset ucf101 --data-root /data/UCF-101
"""

from __future__ import annotations

import sys

from pipelines.common.cli import parse_cli
from pipelines.common.errors import exit_on_user_error
from pipelines.inference.assemble import AssembleConfig, assemble

FLAGS = {
    "dit": "a released Latte checkpoint (.pt)",
    "vae": "the VAE: a released LeanVAE .ckpt, WF-VAE folder, IV-VAE .pth, an SD-VAE folder, or a trained one",
    "output_dir": "the run folder (default runs/released)",
    "latent_scale": "DiT latents = VAE latents x this (LeanVAE-4ch 0.7744, -16ch 1.0; default: the VAE's own)",
    "class_names": "a file with one class name per line, or UCF-101's classInd.txt",
    "guidance_scale": "the pipeline's default guidance (default 1 = none)",
    "guidance_channels": "noise channels guided (default 4, as Latte's official sampler; null: all)",
    "num_heads": "attention heads, for a DiT width the presets do not name",
}


def main(argv=None) -> int:
    with exit_on_user_error("assemble_pipeline.py"):
        result = assemble(parse_cli(AssembleConfig, argv, __doc__, flags=FLAGS))
    classes = f"{result['num_classes']} classes" if result["num_classes"] else "unconditional"
    print(f"pipeline written to {result['pipeline']}: {classes}, {result['num_frames']} frames at "
          f"{result['resolution']}x{result['resolution']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
