"""Sample a trained run and score it with FVD / IS (StyleGAN-V protocol) and, on synthetic data, class accuracy.

    python evaluate.py --run runs/default                                   # synthetic: offline classifier detector
    python evaluate.py --run runs/ucf101 --dataset ucf101 --data-root /data/UCF-101   # I3D FVD + C3D IS, 2048 videos

Results go to <run>/eval/metrics.json, a few sample videos to <run>/eval/samples.
"""

from __future__ import annotations

import argparse
import json
import sys

from pipelines.detectors import DetectorUnavailableError
from pipelines.evaluation import EvalConfig, evaluate
from pipelines.pipeline_latte import SCHEDULERS


def main(argv=None) -> int:
    defaults = EvalConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=defaults.run)
    parser.add_argument("--dataset", choices=["synthetic", "ucf101", "sky"], default=defaults.dataset)
    parser.add_argument("--data-root", default="", help="real videos for FVD (ucf101 / sky)")
    parser.add_argument("--num-fake", type=int, default=None, help="default: 2048 (synthetic: 16 per class)")
    parser.add_argument("--num-real", type=int, default=None, help="default: 2048 (synthetic: as many as fake)")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--scheduler", choices=SCHEDULERS, default=defaults.scheduler)
    parser.add_argument("--guidance-scale", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default=None)
    parser.add_argument("--precision", default=defaults.precision, choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--num-frames", type=int, default=defaults.num_frames,
                        help="frames scored per video: the protocol's 16 (fewer only for smoke tests)")
    parser.add_argument("--detector-cache", default=None, help="folder of i3d_torchscript.pt / c3d_ucf101.pt")
    args = parser.parse_args(argv)
    if args.dataset != "synthetic" and not args.data_root:
        parser.error(f"--data-root is needed for --dataset {args.dataset}: the real videos FVD compares against")
    cfg = EvalConfig(**{k.replace("-", "_"): v for k, v in vars(args).items()})
    try:
        report = evaluate(cfg)
    except (FileNotFoundError, DetectorUnavailableError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report["results"], indent=2))
    print(f"({report['detector_note']}); samples in {report['samples_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
