"""Finding a trained run's sampling pipeline and loading it onto a device."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from accelerate import PartialState

from dit import OBJECTIVE_SCHEDULERS, make_scheduler, objective_of, scheduler_name

from ..common.device_speed import AUTO_BF16_SPEEDUP, bf16_speedup
from ..common.errors import ConfigError, MissingFileError
from ..common.files import read_json
from ..common.layout import RunLayout, TrainingRunLayout
from .pipeline_latte import LatteVideoPipeline

# "auto": bfloat16 where a bfloat16 matmul pays on the device (pipelines.common.device_speed), else float32.
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "auto": None}
PIPELINE_INDEX = "model_index.json"
TRAINING_DATA = "training_data.json"  # beside it: the clip settings and source of the latents it was trained on


def training_data(pipeline_dir: str | Path) -> dict:
    """What a pipeline's DiT was trained on (`{"data": clip settings, "source": {"root", "path"}}`, from its latent
    cache's manifest); {} for a pipeline saved without it (assembled from released weights, or older)."""
    path = Path(pipeline_dir, TRAINING_DATA)
    return read_json(path) if path.is_file() else {}


def find_pipeline(run: Optional[str | Path] = None, runs_root: str | Path = "runs") -> Path:
    """A saved pipeline folder: `run` itself, a DiT training run's pipeline, a train.sh run's, or (no `run`) the
    newest under `runs_root`."""
    if run is not None:
        run = Path(run)
        for candidate in (run, TrainingRunLayout(run).export("pipeline"), RunLayout(run).pipeline):
            if (candidate / PIPELINE_INDEX).is_file():
                return candidate
        raise MissingFileError(f"no trained pipeline in {run}: expected {RunLayout(run).pipeline / PIPELINE_INDEX} "
                               f"(written at the end of train_dit.py); train one with `bash train.sh`")
    found = sorted(Path(runs_root).glob(f"**/pipeline/{PIPELINE_INDEX}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise MissingFileError(f"no trained run under {Path(runs_root).resolve()}: run `bash train.sh` first, or "
                               f"pass --run PATH to a run folder")
    return found[-1].parent


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """"auto" -> "bf16" or "fp32" as measured on `device`; any other precision stays."""
    if precision != "auto":
        return precision
    return "bf16" if bf16_speedup(torch.device(device)) >= AUTO_BF16_SPEEDUP else "fp32"


def load_pipeline(path: str | Path, scheduler: Optional[str] = None, device: Optional[str] = None,
                  precision: str = "fp32", vae_precision: str = "fp32", compile: bool = False) -> LatteVideoPipeline:
    """The pipeline at `path` with the `scheduler` asked for (None: the one it was saved with) on `device`
    (default: the accelerator accelerate would pick); the DiT in `precision`, the VAE in `vae_precision` (float32
    by default: its output is what users see; bfloat16 halves the time of a large VAE, BENCHMARKS.md; "auto": bfloat16
    where it pays on `device`); `compile`
    compiles the DiT in place (`nn.Module.compile`, inductor: the first batch pays for it)."""
    for name, value in (("precision", precision), ("vae_precision", vae_precision)):
        if value not in PRECISIONS:
            raise ConfigError(f"{name} must be one of {', '.join(PRECISIONS)}, got {value!r}")
    try:
        chosen = make_scheduler(scheduler) if scheduler is not None else None
    except ValueError as err:
        raise ConfigError(str(err)) from None
    pipe = LatteVideoPipeline.from_pretrained(str(path))
    if chosen is not None and scheduler != scheduler_name(pipe.scheduler):  # the saved one keeps its settings
        objective = objective_of(pipe.scheduler)
        if objective_of(chosen) != objective:
            raise ConfigError(f"the model at {path} was trained with the {objective} objective: its schedulers are "
                              f"{', '.join(OBJECTIVE_SCHEDULERS[objective])}, not {scheduler}")
        pipe.scheduler = chosen
    device = device or PartialState().device
    # nn.Module.to: diffusers' ModelMixin.to warns about fp32-pinned modules on every dtype cast, and has none here.
    torch.nn.Module.to(pipe.transformer, device=device, dtype=PRECISIONS[resolve_precision(precision, device)])
    pipe.vae.to(device=device).to_inference_dtype(PRECISIONS[resolve_precision(vae_precision, device)])
    if compile:
        pipe.transformer.compile()
    return pipe
