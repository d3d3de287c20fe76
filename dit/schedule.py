"""The noise schedule Latte trains and samples with, and the diffusers schedulers that follow it.

One schedule for both: linear betas 1e-4..0.02 over 1000 steps. DDPM with `variance_type="learned_range"` uses
the DiT's learned variance (IDDPM's interpolation, respaced correctly); DDIM and DPM-Solver take the noise
prediction only. No sample clipping: latents are not bounded like pixels.
"""

from __future__ import annotations

from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

NOISE_SCHEDULE = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
SCHEDULERS = ("ddpm", "ddim", "dpm")


def make_scheduler(name: str = "ddpm"):
    """The scheduler `name` over the training noise schedule; "ddpm" is also the training process."""
    if name == "ddpm":
        return DDPMScheduler(**NOISE_SCHEDULE, variance_type="learned_range", clip_sample=False)
    if name == "ddim":
        return DDIMScheduler(**NOISE_SCHEDULE, clip_sample=False, set_alpha_to_one=False)
    if name == "dpm":
        return DPMSolverMultistepScheduler(**NOISE_SCHEDULE)
    raise ValueError(f"unknown scheduler '{name}': choose one of {', '.join(SCHEDULERS)}")


def training_scheduler() -> DDPMScheduler:
    """The DDPM process Latte trains with (`diffusion_loss` reads its betas)."""
    return make_scheduler("ddpm")
