"""Generate videos with a trained Latte DiT + LeanVAE.

    python sample.py --prompt-class 12                   # the latest run under runs/
    python sample.py --run runs/default --prompt-class 3 --num-videos 8 --scheduler ddim --steps 50
"""

from __future__ import annotations

import argparse
import sys

import torch

from pipelines.pipeline_latte import SCHEDULERS
from pipelines.sampling import PRECISIONS, find_pipeline, load_pipeline, save_grid, save_videos


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt-class", type=int, default=None, help="class to generate (omit for unconditional)")
    parser.add_argument("--run", default=None, help="run folder or saved pipeline (default: newest under runs/)")
    parser.add_argument("--num-videos", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scheduler", choices=SCHEDULERS, default="ddpm")
    parser.add_argument("--steps", type=int, default=250, help="denoising steps (DDPM respaced, DDIM, DPM-Solver)")
    parser.add_argument("--guidance-scale", type=float, default=None,
                        help="classifier-free guidance on the noise (default: the run's, else 1 = none)")
    parser.add_argument("--output-dir", default=None, help="default: <run>/samples/class_<k>")
    parser.add_argument("--decode-chunk-size", type=int, default=1, help="latent frames decoded at a time")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="fp32")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--fps", type=float, default=8.0)
    args = parser.parse_args(argv)
    if args.num_videos < 1:
        parser.error(f"--num-videos must be >= 1, got {args.num_videos}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        path = find_pipeline(args.run)
        pipe = load_pipeline(path, args.scheduler, args.device, args.precision)
        guidance = args.guidance_scale if args.guidance_scale is not None else pipe.default_guidance_scale
        labels = [args.prompt_class] * args.num_videos
        if pipe.num_classes == 0 and args.prompt_class is not None:
            raise ValueError(f"the model at {path} is unconditional: leave out --prompt-class")
        if pipe.num_classes > 0 and args.prompt_class is None:
            raise ValueError(f"the model at {path} is class-conditional: pass --prompt-class in [0, "
                             f"{pipe.num_classes - 1}]")
        generator = torch.Generator(device="cpu").manual_seed(args.seed)
        videos = pipe(class_labels=labels if pipe.num_classes else None, num_videos=args.num_videos,
                      num_inference_steps=args.steps, guidance_scale=guidance, generator=generator,
                      decode_chunk_size=args.decode_chunk_size, output_type="np").videos  # (B, T, H, W, 3)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    tag = f"class_{args.prompt_class}" if args.prompt_class is not None else "unconditional"
    out = args.output_dir or str(path.parent.parent / "samples" / tag)
    names = [f"{tag}_seed{args.seed}_{i:02d}" for i in range(len(videos))]
    paths = save_videos(videos, out, names, args.fps)
    png, gif = save_grid(videos, f"{out}/{tag}_seed{args.seed}_grid", args.fps)
    class_name = pipe.class_names[args.prompt_class] if args.prompt_class is not None and pipe.class_names else ""
    print(f"{len(paths)} videos of {tag}{f' ({class_name})' if class_name else ''} from {path}:")
    for p in [*paths, png, gif]:
        print(f"  {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
