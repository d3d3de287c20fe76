"""Latte-style video diffusion transformer, its noise schedule and its IDDPM training loss."""

from .diffusion import diffusion_loss
from .model import LatteDiT
from .presets import DIT_PRESETS
from .schedule import NOISE_SCHEDULE, SCHEDULERS, make_scheduler, training_scheduler

__all__ = ["DIT_PRESETS", "NOISE_SCHEDULE", "SCHEDULERS", "LatteDiT", "diffusion_loss", "make_scheduler",
           "training_scheduler"]
