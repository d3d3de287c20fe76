"""IDDPM hybrid loss: a float64 numpy re-derivation, known zeros, the stop-gradient, autocast, bad input."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dit import diffusion_loss, training_scheduler
from dit.diffusion import _tables

C = 2
T = torch.tensor([0, 1, 500, 999])


def numpy_hybrid_loss(out, x0, noise, t):
    """The IDDPM formulas written out again in float64 from the linear schedule, independent of diffusers."""
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    ac = np.cumprod(1.0 - betas)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1 - ac_prev) / (1 - ac)
    post_log_var = np.log(np.append(post_var[1], post_var[1:]))
    mse, vb = [], []
    for i, ti in enumerate(t):
        eps, v = out[i, :C], out[i, C:]
        x_t = math.sqrt(ac[ti]) * x0[i] + math.sqrt(1 - ac[ti]) * noise[i]
        mse.append(np.mean((noise[i] - eps) ** 2))
        log_var = (v + 1) / 2 * np.log(betas[ti]) + (1 - v) / 2 * post_log_var[ti]
        pred_x0 = (x_t - math.sqrt(1 - ac[ti]) * eps) / math.sqrt(ac[ti])
        c0 = betas[ti] * math.sqrt(ac_prev[ti]) / (1 - ac[ti])
        ct = (1 - ac_prev[ti]) * math.sqrt(1 - betas[ti]) / (1 - ac[ti])
        mean, true_mean = c0 * pred_x0 + ct * x_t, c0 * x0[i] + ct * x_t
        if ti == 0:
            cdf = lambda z: 0.5 * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)))  # noqa: E731
            std = np.exp(0.5 * log_var)
            upper = np.where(x0[i] > 0.999, 1.0, cdf((x0[i] - mean + 1 / 255) / std))
            lower = np.where(x0[i] < -0.999, 0.0, cdf((x0[i] - mean - 1 / 255) / std))
            vb.append(-np.mean(np.log(np.maximum(upper - lower, 1e-12))) / math.log(2))
        else:
            kl = 0.5 * (-1 + log_var - post_log_var[ti] + np.exp(post_log_var[ti] - log_var)
                        + (true_mean - mean) ** 2 * np.exp(-log_var))
            vb.append(np.mean(kl) / math.log(2))
    return np.array(mse), np.array(vb)


def sample_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(4, C, 3, 5, 5, generator=g) * 2 - 1
    x0[0, 0, 0, 0, :2] = torch.tensor([-1.0, 1.0])  # the open-ended edge bins of the t = 0 likelihood
    noise = torch.randn(x0.shape, generator=g)
    out = torch.cat([noise + 0.3 * torch.randn(x0.shape, generator=g), torch.rand(x0.shape, generator=g) * 2 - 1], 1)
    return out, x0, noise


def test_matches_numpy_rederivation():
    out, x0, noise = sample_inputs()
    terms = diffusion_loss(out, x0, noise, T, training_scheduler())
    mse, vb = numpy_hybrid_loss(out.double().numpy(), x0.double().numpy(), noise.double().numpy(), T.numpy())
    np.testing.assert_allclose(terms["mse"].numpy(), mse, rtol=1e-5)
    np.testing.assert_allclose(terms["vb"].numpy(), vb, rtol=5e-5)
    assert terms["loss"].item() == pytest.approx(float(np.mean(mse + vb)), rel=5e-5)
    assert terms["vb"][0] > 1.0 and terms["vb"][1:].max() < terms["vb"][0]  # t = 0 is a likelihood, not a KL


def test_mse_term_is_mse_loss_per_sample():
    out, x0, noise = sample_inputs(1)
    mse = diffusion_loss(out, x0, noise, T, training_scheduler())["mse"]
    for i in range(4):
        assert mse[i].item() == pytest.approx(F.mse_loss(out[i, :C], noise[i]).item(), rel=1e-6)


def test_kl_is_zero_for_the_true_posterior():
    _, x0, noise = sample_inputs(2)
    t = torch.tensor([1, 10, 500, 999])
    # eps = true noise gives the true posterior mean; v = -1 selects the (clipped) posterior variance.
    out = torch.cat([noise, -torch.ones_like(noise)], dim=1)
    terms = diffusion_loss(out, x0, noise, t, training_scheduler())
    assert terms["mse"].abs().max() == 0
    assert terms["vb"].abs().max() < 1e-5
    # Any other variance costs bits where the learned range is wide; at large t beta_t ~ the posterior variance.
    out[:, C:] = 0.5
    vb = diffusion_loss(out, x0, noise, t, training_scheduler())["vb"]
    assert (vb[:2] > 1e-3).all() and (vb[2:] < 1e-5).all()


def test_bound_trains_only_the_variance_channels():
    out, x0, noise = sample_inputs(3)
    out.requires_grad_(True)
    terms = diffusion_loss(out, x0, noise, T, training_scheduler())
    (grad_vb,) = torch.autograd.grad(terms["vb"].sum(), out, retain_graph=True)
    assert torch.equal(grad_vb[:, :C], torch.zeros_like(grad_vb[:, :C]))  # stop-gradient on the mean
    assert (grad_vb[:, C:].abs().sum(dim=(1, 2, 3, 4)) > 0).all()
    (grad_loss,) = torch.autograd.grad(terms["loss"], out)
    n = out[:, :C].numel()
    torch.testing.assert_close(grad_loss[:, :C], 2 * (out[:, :C] - noise).detach() / n)


def test_posterior_variance_agrees_with_the_scheduler():
    scheduler = training_scheduler()
    log_var = _tables(scheduler, torch.device("cpu"))["posterior_log_var"]
    for t in (1, 2, 100, 999):
        expected = torch.log(scheduler._get_variance(t, variance_type="fixed_small"))
        assert log_var[t].item() == pytest.approx(expected.item(), abs=5e-4)  # the scheduler works in float32
    assert log_var[0] == log_var[1]  # IDDPM's clipped log variance at t = 0


def test_float32_under_autocast():
    out, x0, noise = sample_inputs(4)
    ref = diffusion_loss(out, x0, noise, T, training_scheduler())["loss"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = diffusion_loss(out.bfloat16(), x0, noise, T, training_scheduler())["loss"]
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(ref.item(), rel=0.05)


def test_bad_arguments_raise():
    out, x0, noise = sample_inputs()
    with pytest.raises(ValueError, match="learned_range"):
        from diffusers import DDPMScheduler

        diffusion_loss(out, x0, noise, T, DDPMScheduler(variance_type="fixed_small"))
    with pytest.raises(ValueError, match="model_output must have shape"):
        diffusion_loss(out[:, :C], x0, noise, T, training_scheduler())
    with pytest.raises(ValueError, match="noise shape"):
        diffusion_loss(out, x0, noise[:, :1], T, training_scheduler())
    with pytest.raises(ValueError, match="timesteps must be an integer tensor"):
        diffusion_loss(out, x0, noise, T.float(), training_scheduler())
