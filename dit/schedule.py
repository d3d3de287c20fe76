"""The noise schedules the DiT trains and samples with, and the diffusers schedulers that follow them.

Two objectives (`dit.objectives`), one schedule each:
- "iddpm" (Latte's): linear betas 1e-4..0.02 over 1000 steps. DDPM with `variance_type="learned_range"` uses
  the DiT's learned variance (IDDPM's interpolation, respaced correctly); DDIM and DPM-Solver take the noise
  prediction only. No sample clipping: latents are not bounded like pixels.
- "flow" (rectified flow, as SD3): x_t = (1 - s) x0 + s noise at timestep 1000 s, sampled by Euler steps on the
  predicted velocity. `flow_shift` moves training's and sampling's noise levels towards noise together (SD3's
  timestep shift), where a clip's layout is decided (BENCHMARKS.md, "The flow shift").
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

NUM_TRAIN_TIMESTEPS = 1000
NOISE_SCHEDULE = dict(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
# The samplers of each objective; the first is the one a trained run's pipeline is saved with.
OBJECTIVE_SCHEDULERS = {"iddpm": ("ddpm", "ddim", "dpm"), "flow": ("euler",)}
SCHEDULERS = tuple(name for names in OBJECTIVE_SCHEDULERS.values() for name in names)
# Denoising steps when none are asked for: Latte's protocol samples DDPM (and DDIM) with 250 respaced steps;
# DPM-Solver++ is made for few (diffusers' guidance: 20-25); Euler on the flow model scores at 50 steps as at 100
# (class accuracy 82.8% vs 83.2%, FVD 66.9 vs 66.7 on the default run: BENCHMARKS.md) in half the time.
SAMPLING_STEPS = {"ddpm": 250, "ddim": 250, "dpm": 25, "euler": 50}
_CLASSES = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler,
            "euler": FlowMatchEulerDiscreteScheduler}


def shift_noise_levels(s: torch.Tensor, shift: float) -> torch.Tensor:
    """Noise levels s in [0, 1] moved towards 1 by `shift` (1: unchanged): shift s / (1 + (shift - 1) s), the
    static shift `FlowMatchEulerDiscreteScheduler` applies to its sigmas, so training draws the levels sampling
    visits."""
    return shift * s / (1 + (shift - 1) * s)


def make_scheduler(name: str = "ddpm", flow_shift: float = 1.0):
    """The scheduler `name` over its objective's training schedule; "ddpm" is also Latte's training process.
    `flow_shift` is the flow objective's (`shift_noise_levels`)."""
    if flow_shift != 1.0 and name != "euler":
        raise ValueError(f"flow_shift is the flow objective's; the {name} scheduler has none")
    if name == "ddpm":
        return DDPMScheduler(**NOISE_SCHEDULE, variance_type="learned_range", clip_sample=False)
    if name == "ddim":
        return DDIMScheduler(**NOISE_SCHEDULE, clip_sample=False, set_alpha_to_one=False)
    if name == "dpm":
        return DPMSolverMultistepScheduler(**NOISE_SCHEDULE)
    if name == "euler":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=flow_shift)
    raise ValueError(f"unknown scheduler '{name}': choose one of {', '.join(SCHEDULERS)}")


def scheduler_name(scheduler) -> str:
    """The name `make_scheduler` knows `scheduler` by."""
    for name, cls in _CLASSES.items():
        if type(scheduler) is cls:
            return name
    raise ValueError(f"{type(scheduler).__name__} is not one of the schedulers this project samples with")


def objective_of(scheduler) -> str:
    """The training objective whose model `scheduler` samples: "iddpm" or "flow"."""
    name = scheduler_name(scheduler)
    return next(obj for obj, names in OBJECTIVE_SCHEDULERS.items() if name in names)


def training_scheduler() -> DDPMScheduler:
    """The DDPM process Latte trains with (`diffusion_loss` reads its betas)."""
    return make_scheduler("ddpm")


def sampling_steps(scheduler, asked: int | None) -> int:
    """The denoising steps to take: `asked`, or `scheduler`'s own count (SAMPLING_STEPS) when None."""
    return SAMPLING_STEPS[scheduler_name(scheduler)] if asked is None else asked
