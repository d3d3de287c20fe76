"""Latte-style video diffusion transformer and its IDDPM training loss."""

from .diffusion import diffusion_loss, training_scheduler
from .model import LatteDiT
from .presets import DIT_PRESETS

__all__ = ["DIT_PRESETS", "LatteDiT", "diffusion_loss", "training_scheduler"]
