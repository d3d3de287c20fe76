"""Latte-style video diffusion transformer, its noise schedules and its training objectives."""

from .diffusion import diffusion_loss
from .model import LatteDiT
from .objectives import OBJECTIVES, make_objective
from .presets import DIT_PRESETS
from .schedule import (NOISE_SCHEDULE, OBJECTIVE_SCHEDULERS, SAMPLING_STEPS, SCHEDULERS, make_scheduler,
                       objective_of, sampling_steps, scheduler_name, training_scheduler)

__all__ = ["DIT_PRESETS", "NOISE_SCHEDULE", "OBJECTIVES", "OBJECTIVE_SCHEDULERS", "SAMPLING_STEPS", "SCHEDULERS",
           "LatteDiT", "diffusion_loss", "make_objective", "make_scheduler", "objective_of", "sampling_steps",
           "scheduler_name", "training_scheduler"]
