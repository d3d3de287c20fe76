"""The keys every training run has: the top level of a trainer's YAML config, each overridable as `key=value`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..common.errors import ConfigError

LR_SCHEDULES = ("constant", "cosine")


@dataclass
class RunConfig:
    output_dir: str = "runs/default"
    seed: int = 0
    max_steps: int = 1000  # optimizer steps
    batch_size: int = 4  # per process and micro-step
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # no | bf16 | fp16 | auto (bf16 where it is measured faster, else no)
    num_workers: int = 0
    learning_rate: float = 1e-4
    lr_schedule: str = "constant"  # constant | cosine (to min_learning_rate at max_steps); both after warm-up
    lr_warmup_steps: int = 0
    min_learning_rate: float = 0.0
    grad_clip: float = 1.0  # max global grad norm; 0 turns clipping off
    ema_decay: float = 0.999  # 0 makes the EMA a copy of the weights
    log_every: int = 10
    checkpoint_every: int = 500  # 0: no intermediate checkpoints
    checkpoints_total_limit: int = 3
    resume: Optional[str] = None  # None | "latest" | a checkpoint folder
    overwrite: bool = False  # start over in an output_dir that holds an earlier run (deleting its checkpoints)
    max_nonfinite_steps: int = 10  # steps in a row with a non-finite loss or gradient norm (skipped) that stop the run
    report_to: str = "tensorboard"  # tensorboard | none
    compile: bool = False  # torch.compile the trained models (inductor); where it pays: BENCHMARKS.md

    def __post_init__(self) -> None:
        for key in ("max_steps", "batch_size", "gradient_accumulation_steps", "log_every", "checkpoints_total_limit",
                    "max_nonfinite_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("num_workers", "lr_warmup_steps", "checkpoint_every", "grad_clip", "min_learning_rate"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        choices = {"mixed_precision": ("no", "bf16", "fp16", "auto"), "lr_schedule": LR_SCHEDULES,
                   "report_to": ("tensorboard", "none")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.min_learning_rate > self.learning_rate:
            raise ConfigError(f"min_learning_rate {self.min_learning_rate} exceeds learning_rate {self.learning_rate}")
        if self.overwrite and self.resume:
            raise ConfigError(f"overwrite=true starts over and resume={self.resume} continues: give one of them")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")

    @property
    def clips_per_step(self) -> int:
        """Clips one process sees per optimizer step."""
        return self.batch_size * self.gradient_accumulation_steps


TRAINER_FLAGS = {"resume": "'latest' or a checkpoint folder to continue from (same as resume=...)"}
