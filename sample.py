"""Generate videos with a trained Latte DiT and its VAE.

    python sample.py --prompt-class 12                   # the latest run under runs/
    python sample.py --run runs/default --prompt-class 3 --num-videos 8 --scheduler ddim --steps 50
    python sample.py --config my_sampling.yaml seed=3    # any SampleConfig key as key=value or in a YAML file
"""

from __future__ import annotations

import sys

from pipelines.common.cli import parse_cli
from pipelines.common.errors import exit_on_user_error
from pipelines.inference.sampling import SampleConfig, generate

FLAGS = {
    "prompt_class": "class to generate (omit for an unconditional model)",
    "run": "run folder or saved pipeline (default: the newest under runs/)",
    "num_videos": "videos to generate (default 4)",
    "seed": "random seed (default 0)",
    "scheduler": "the run's own (default); ddpm, ddim or dpm for IDDPM models, euler for rectified flow",
    "steps": "denoising steps (default: the sampler's own, DDPM 250, Euler 50)",
    "guidance_scale": "classifier-free guidance on the noise (default: the run's, else 1 = none)",
    "guidance_interval": "[low,high]: guide only steps at noise levels t/T in it (default: the run's)",
    "output_dir": "where the videos go (default: <run>/samples/class_<k>)",
    "decode_chunk_size": "latent frames decoded at a time (default 1)",
    "precision": "fp32 (default), bf16, fp16 or auto (bf16 where a bf16 matmul pays on the device) for the DiT",
    "vae_precision": "the same for the VAE",
    "compile": "torch.compile the DiT (inductor; pays only for many batches: BENCHMARKS.md)",
    "device": "default: the accelerator accelerate picks",
    "fps": "frames per second of the mp4 files (default 8)",
}


def main(argv=None) -> int:
    with exit_on_user_error("sample.py"):
        result = generate(parse_cli(SampleConfig, argv, __doc__, flags=FLAGS))
    name = f" ({result['class_name']})" if result["class_name"] else ""
    print(f"{len(result['videos'])} videos of {result['tag']}{name} from {result['pipeline']}:")
    for path in [*result["videos"], *result["grid"]]:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
