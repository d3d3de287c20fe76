"""What the DiT learns to predict, as one object per objective: how a training input is noised and what the
loss is. The trainer calls `objective.noisy(x0, noise, generator)` then `objective.loss(out, x0, noise, t)`.

- `IDDPM` (Latte's recipe, the benchmark default): noise + learned variance over the DDPM schedule, hybrid loss.
- `RectifiedFlow`: velocity (noise - x0) on the straight path x_t = (1 - s) x0 + s noise, plain MSE, with s drawn
  logit-normally (SD3; the draw of diffusers' `compute_density_for_timestep_sampling("logit_normal")`, written
  out since `diffusers.training_utils` imports diffusers' whole model stack), then moved by `flow_shift`
  (`dit.schedule.shift_noise_levels`, as the sampler's). Small models learn it faster
  (BENCHMARKS.md, the default run); it samples with `FlowMatchEulerDiscreteScheduler`.
"""

from __future__ import annotations

import torch

from .diffusion import diffusion_loss
from .schedule import NUM_TRAIN_TIMESTEPS, OBJECTIVE_SCHEDULERS, make_scheduler, shift_noise_levels, training_scheduler


def _per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=tuple(range(1, x.ndim)))


class IDDPM:
    name = "iddpm"
    learn_sigma = True  # the model outputs 2C channels: noise and variance interpolation

    def __init__(self) -> None:
        self.scheduler = training_scheduler()

    def sampler(self):
        """The scheduler a trained model's pipeline is saved with (the first of OBJECTIVE_SCHEDULERS')."""
        return make_scheduler(OBJECTIVE_SCHEDULERS[self.name][0])

    def noisy(self, x0: torch.Tensor, noise: torch.Tensor, generator: torch.Generator):
        """x_t (B, C, ...) and the integer timesteps (B,) it sits at."""
        t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (x0.shape[0],), generator=generator).to(x0.device)
        return self.scheduler.add_noise(x0, noise, t), t

    def loss(self, model_output, x0, noise, t) -> dict[str, torch.Tensor]:
        """{"loss": scalar, "mse": (B,), "vb": (B,)}: `diffusion_loss`."""
        return diffusion_loss(model_output, x0, noise, t, self.scheduler)


class RectifiedFlow:
    name = "flow"
    learn_sigma = False

    def __init__(self, flow_shift: float = 1.0) -> None:
        self.flow_shift = flow_shift

    def sampler(self):
        """The scheduler a trained model's pipeline is saved with, over the same shifted noise levels."""
        return make_scheduler(OBJECTIVE_SCHEDULERS[self.name][0], self.flow_shift)

    def noisy(self, x0: torch.Tensor, noise: torch.Tensor, generator: torch.Generator):
        """x_t (B, C, ...) and the float timesteps 1000 s (B,), the scale FlowMatchEulerDiscreteScheduler uses."""
        s = torch.sigmoid(torch.normal(0.0, 1.0, (x0.shape[0],), generator=generator))  # (B,) in (0, 1)
        s = shift_noise_levels(s, self.flow_shift).to(x0.device)
        s_ = s.view(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
        return (1 - s_) * x0 + s_ * noise, s * NUM_TRAIN_TIMESTEPS

    def loss(self, model_output, x0, noise, t) -> dict[str, torch.Tensor]:
        """{"loss": scalar, "mse": (B,)}: the squared error of the predicted velocity."""
        if model_output.shape != x0.shape:
            raise ValueError(f"a rectified-flow model predicts the velocity, shape {tuple(x0.shape)}; "
                             f"got {tuple(model_output.shape)}")
        mse = _per_sample_mean((model_output.float() - (noise.float() - x0.float())) ** 2)  # (B,)
        return {"loss": mse.mean(), "mse": mse}


OBJECTIVES = {cls.name: cls for cls in (IDDPM, RectifiedFlow)}


def make_objective(name: str, flow_shift: float = 1.0):
    """The objective `name`; `flow_shift` is the flow objective's (iddpm has none and ignores it)."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective '{name}': choose one of {', '.join(OBJECTIVES)}")
    return RectifiedFlow(flow_shift) if name == RectifiedFlow.name else OBJECTIVES[name]()
