"""IDDPM hybrid loss (noise MSE + variational bound for the learned variance) on diffusers' DDPMScheduler.

The model predicts (eps, v) with v in [-1, 1] interpolating the log variance of p(x_{t-1} | x_t) between the
clipped posterior variance (v = -1) and beta_t (v = +1), as in Nichol & Dhariwal (2021) and DiT/Latte.
"""

import math

import torch
from diffusers import DDPMScheduler

# Half a bin of 8-bit data scaled to [-1, 1], the discretisation the decoder likelihood at t = 0 assumes.
_HALF_BIN = 1.0 / 255.0


def diffusion_loss(
    model_output: torch.Tensor,
    x0: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    scheduler: DDPMScheduler,
) -> dict[str, torch.Tensor]:
    """Hybrid loss of a model fed x_t = scheduler.add_noise(x0, noise, timesteps).

    model_output: (B, 2C, ...) = (eps, v); x0, noise: (B, C, ...); timesteps: (B,) integers.
    Returns {"loss": mean over the batch of mse + vb, "mse": (B,), "vb": (B,) in bits per dimension}.
    The bound only trains v: it sees the predicted mean through a stop-gradient.
    """
    _check_args(model_output, x0, noise, timesteps, scheduler)
    with torch.autocast(device_type=x0.device.type, enabled=False):
        eps, v = model_output.float().chunk(2, dim=1)  # (B, C, ...) each
        x0, noise = x0.float(), noise.float()
        timesteps = timesteps.to(x0.device)
        x_t = scheduler.add_noise(x0, noise, timesteps)
        coef = {name: _at(table, timesteps, x0) for name, table in _tables(scheduler, x0.device).items()}

        mse = _mean_flat((noise - eps) ** 2)  # (B,)

        frac = (v + 1) / 2
        model_log_var = frac * coef["log_beta"] + (1 - frac) * coef["posterior_log_var"]
        pred_x0 = coef["sqrt_recip_ac"] * x_t - coef["sqrt_recipm1_ac"] * eps.detach()
        model_mean = coef["mean_coef_x0"] * pred_x0 + coef["mean_coef_xt"] * x_t
        true_mean = coef["mean_coef_x0"] * x0 + coef["mean_coef_xt"] * x_t

        kl = _normal_kl(true_mean, coef["posterior_log_var"], model_mean, model_log_var)
        nll = -_discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_log_var)
        vb = torch.where(timesteps == 0, _mean_flat(nll), _mean_flat(kl)) / math.log(2.0)  # (B,)
    return {"loss": (mse + vb).mean(), "mse": mse, "vb": vb}


def _tables(scheduler: DDPMScheduler, device: torch.device) -> dict[str, torch.Tensor]:
    # Derived in float64 from the scheduler's betas, then used in float32: 1 - alphas_cumprod taken from its
    # float32 cumprod is off by ~3e-4 relative at small t, which shifts the t = 0 likelihood visibly.
    betas = scheduler.betas.to(device, torch.float64)  # (T,)
    ac = torch.cumprod(1 - betas, dim=0)  # (T,)
    ac_prev = torch.cat([ac.new_ones(1), ac[:-1]])
    posterior_var = betas * (1 - ac_prev) / (1 - ac)
    # The posterior variance is 0 at t = 0; its log is clipped to the t = 1 value, as in IDDPM.
    posterior_log_var = torch.log(torch.cat([posterior_var[1:2], posterior_var[1:]]))
    tables = {
        "log_beta": torch.log(betas),
        "posterior_log_var": posterior_log_var,
        "sqrt_recip_ac": torch.sqrt(1 / ac),
        "sqrt_recipm1_ac": torch.sqrt(1 / ac - 1),
        "mean_coef_x0": betas * torch.sqrt(ac_prev) / (1 - ac),
        "mean_coef_xt": (1 - ac_prev) * torch.sqrt(1 - betas) / (1 - ac),
    }
    return {name: table.float() for name, table in tables.items()}


def _at(table: torch.Tensor, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return table[timesteps].view(-1, *([1] * (like.ndim - 1)))  # (B, 1, ...)


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=tuple(range(1, x.ndim)))


def _normal_kl(mean1, log_var1, mean2, log_var2) -> torch.Tensor:
    """KL(N(mean1, exp(log_var1)) || N(mean2, exp(log_var2))), elementwise, in nats."""
    ratio = torch.exp(log_var1 - log_var2)
    return 0.5 * (-1.0 + log_var2 - log_var1 + ratio + (mean1 - mean2) ** 2 * torch.exp(-log_var2))


def _approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    # IDDPM's tanh approximation, kept so losses match the reference implementations.
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _discretized_gaussian_log_likelihood(x, means, log_scales) -> torch.Tensor:
    """Log-probability of the bin of width 2/255 around x (edge bins open-ended), elementwise, in nats."""
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = _approx_standard_normal_cdf(inv_std * (centered + _HALF_BIN))
    cdf_min = _approx_standard_normal_cdf(inv_std * (centered - _HALF_BIN))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_cdf_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))


def _check_args(model_output, x0, noise, timesteps, scheduler) -> None:
    cfg = scheduler.config
    if cfg.variance_type != "learned_range" or cfg.prediction_type != "epsilon":
        raise ValueError(
            "diffusion_loss needs a DDPMScheduler with variance_type='learned_range' and prediction_type='epsilon' "
            f"(see dit.schedule.training_scheduler()), got {cfg.variance_type!r} / {cfg.prediction_type!r}"
        )
    if noise.shape != x0.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} must equal x0 shape {tuple(x0.shape)}")
    expected = (x0.shape[0], 2 * x0.shape[1], *x0.shape[2:])
    if tuple(model_output.shape) != expected:
        raise ValueError(
            f"model_output must have shape {expected} (noise and variance channels), got {tuple(model_output.shape)}"
        )
    if timesteps.shape != (x0.shape[0],) or timesteps.is_floating_point():
        raise ValueError(f"timesteps must be an integer tensor of shape ({x0.shape[0]},), got {tuple(timesteps.shape)}")
