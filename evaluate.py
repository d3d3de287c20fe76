"""Sample a trained run and score it with FVD / IS (StyleGAN-V protocol) and, on synthetic data, class accuracy.

    python evaluate.py --run runs/default                                   # synthetic: offline classifier detector
    python evaluate.py --run runs/ucf101                                    # I3D FVD + C3D IS, 2048 videos
    python evaluate.py --run runs/lean4-ucf --dataset ucf101 --data-root /data/UCF-101   # released weights
    python evaluate.py --run runs/mine --dataset folder --data-root /data/my_clips   # any folder of real videos
    accelerate launch --num_processes 8 evaluate.py --run runs/ucf101 ...   # the same videos and FVD, 8 GPUs
    torchrun --nproc_per_node 2 evaluate.py --run runs/default              # the same on 2 CPU processes

Every FVD comes with its floor (real clips vs other real clips) and the VAE's ceiling (its reconstructions of
real clips); real-clip statistics are cached and reused. A folder of real videos may be flat, nested or in
class folders; clips already cut to 16 frames are used whole (stride 1), shorter videos are skipped and counted.
Results and the full protocol go to <run>/eval/metrics.json, a few sample videos to <run>/eval/samples. Any
EvalConfig key can also be given as key=value or in a --config YAML file.
"""

from __future__ import annotations

import json
import sys

from pipelines.common.cli import parse_cli
from pipelines.common.errors import exit_on_user_error
from pipelines.evaluation.generation import EvalConfig, evaluate

FLAGS = {
    "run": "the run folder (default runs/default)",
    "dataset": "synthetic, ucf101, sky or folder (default: the data set the run was trained on)",
    "data_root": "the real videos FVD compares against (default: the folder the run's came from)",
    "num_fake": "generated videos (default: 2048; synthetic: 16 per class)",
    "num_real": "real clips (default: 2048; synthetic: as many as generated)",
    "steps": "denoising steps (default: the sampler's own, DDPM 250 as Latte's protocol, Euler 50)",
    "scheduler": "the run's own (default); ddpm, ddim or dpm for IDDPM models, euler for rectified flow",
    "guidance_scale": "default: the run's",
    "guidance_interval": "[low,high]: guide only steps at noise levels t/T in it (default: the run's)",
    "batch_size": "videos per batch (default 32)",
    "seed": "random seed (default 0)",
    "device": "default: the accelerator accelerate picks",
    "precision": "fp32 (default), bf16, fp16 or auto (bf16 where a bf16 matmul pays on the device) for the DiT",
    "vae_precision": "the same for the VAE",
    "compile": "torch.compile the DiT (inductor; pays only for many batches: BENCHMARKS.md)",
    "real_frame_stride": "frames between a real clip's frames (default: 3 for ucf101 / sky as Latte, 1 for a folder)",
    "num_frames": "frames scored per video: the protocol's 16 (fewer only for smoke tests)",
    "detector_cache": "folder of i3d_torchscript.pt / c3d_ucf101.pt",
    "stats_cache": "where real-clip statistics are kept (default: <detector cache>/fvd_stats)",
}


def main(argv=None) -> int:
    with exit_on_user_error("evaluate.py"):
        report = evaluate(parse_cli(EvalConfig, argv, __doc__, flags=FLAGS))
    if not report:  # another process of `accelerate launch evaluate.py`: the main one reports
        return 0
    print(json.dumps(report["results"], indent=2))
    protocol = report["protocol"]
    if protocol["real_videos_too_short"]:
        print(f"real videos: {protocol['real_videos_too_short']} too short for a clip of {protocol['frames']} "
              f"frames at stride {protocol['real_frame_stride']} were skipped; {protocol['real_videos_unreadable']}")
    print(f"({report['detector_note']}); samples in {report['samples_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
