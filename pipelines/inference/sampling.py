"""What `sample.py` does: generate videos of one class from a trained run and write them (mp4 files + a grid)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from dit import sampling_steps

from ..common.errors import ConfigError
from ..common.layout import RunLayout
from .loading import PRECISIONS, find_pipeline, load_pipeline
from .pipeline_latte import check_guidance_interval
from ..data.media import save_grid, save_videos


@dataclass
class SampleConfig:
    prompt_class: Optional[int] = None  # the class to generate; None for an unconditional model
    run: Optional[str] = None  # a run folder or saved pipeline; None: the newest under runs/
    num_videos: int = 4
    seed: int = 0
    scheduler: Optional[str] = None  # None: the run's own; ddpm | ddim | dpm (IDDPM models), euler (flow)
    steps: Optional[int] = None  # denoising steps; None: the sampler's own (dit.SAMPLING_STEPS)
    guidance_scale: Optional[float] = None  # classifier-free guidance; None: the run's default
    guidance_interval: Optional[list[float]] = None  # [low, high] noise levels guided; None: the run's default
    output_dir: Optional[str] = None  # None: <run>/samples/<class> (see samples_dir)
    decode_chunk_size: int = 1  # latent frames decoded at a time (memory does not grow with the video's length)
    precision: str = "fp32"  # fp32 | bf16 | fp16 | auto (bf16 where it pays on the device), for the DiT
    vae_precision: str = "fp32"  # the same, for the VAE
    compile: bool = False  # torch.compile the DiT
    device: Optional[str] = None  # None: the accelerator accelerate picks
    fps: float = 8.0

    def __post_init__(self) -> None:
        if self.num_videos < 1:
            raise ConfigError(f"num_videos must be >= 1, got {self.num_videos}")
        for name in ("precision", "vae_precision"):
            if getattr(self, name) not in PRECISIONS:
                raise ConfigError(f"{name} must be one of {', '.join(PRECISIONS)}, got {getattr(self, name)!r}")
        if self.guidance_interval is not None:
            check_guidance_interval(self.guidance_interval)


def samples_dir(run: Optional[str], pipeline: Path) -> Path:
    """Where videos go without --output-dir: the samples/ folder of the run --run names (a train.sh run or a DiT
    training run); beside the pipeline when --run names the pipeline folder itself (a re-export replaces that
    folder whole); without --run, the newest train.sh run's."""
    if run is None:
        return RunLayout(pipeline.parent.parent).samples
    return (pipeline.parent if Path(run).resolve() == pipeline.resolve() else Path(run)) / "samples"


def generate(cfg: SampleConfig) -> dict:
    """Generate and write the videos; returns {"pipeline", "tag", "class_name", "videos": [paths], "grid": [paths]}."""
    path = find_pipeline(cfg.run)
    pipe = load_pipeline(path, cfg.scheduler, cfg.device, cfg.precision, cfg.vae_precision, cfg.compile)
    if pipe.num_classes == 0 and cfg.prompt_class is not None:
        raise ConfigError(f"the model at {path} is unconditional: leave out --prompt-class")
    if pipe.num_classes > 0 and cfg.prompt_class is None:
        raise ConfigError(f"the model at {path} is class-conditional: pass --prompt-class in [0, {pipe.num_classes - 1}]")
    labels = [cfg.prompt_class] * cfg.num_videos
    guidance = pipe.default_guidance_scale if cfg.guidance_scale is None else cfg.guidance_scale
    steps = sampling_steps(pipe.scheduler, cfg.steps)
    try:
        pipe.check_inputs(labels, steps, guidance, cfg.decode_chunk_size, "np", None, ())
    except ValueError as err:
        raise ConfigError(str(err)) from None
    frames = pipe(class_labels=labels if pipe.num_classes else None, num_videos=cfg.num_videos,
                  num_inference_steps=steps, guidance_scale=guidance, guidance_interval=cfg.guidance_interval,
                  generator=torch.Generator().manual_seed(cfg.seed), decode_chunk_size=cfg.decode_chunk_size,
                  output_type="np").frames  # (B, T, H, W, 3) in [0, 1]
    tag = f"class_{cfg.prompt_class}" if cfg.prompt_class is not None else "unconditional"
    out = Path(cfg.output_dir) if cfg.output_dir else samples_dir(cfg.run, path) / tag
    names = [f"{tag}_seed{cfg.seed}_{i:02d}" for i in range(len(frames))]
    class_name = pipe.class_names[cfg.prompt_class] if cfg.prompt_class is not None and pipe.class_names else ""
    return {"pipeline": path, "tag": tag, "class_name": class_name, "videos": save_videos(frames, out, names, cfg.fps),
            "grid": save_grid(frames, out / f"{tag}_seed{cfg.seed}_grid", cfg.fps)}
