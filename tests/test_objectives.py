"""The training objectives: how inputs are noised, the losses by hand, and that each sampler integrates what
its objective trains (an oracle model of a one-point data set is sampled back to that point)."""

import pytest
import torch

from dit import DIT_PRESETS, OBJECTIVE_SCHEDULERS, OBJECTIVES, LatteDiT, make_objective, make_scheduler, objective_of, scheduler_name
from dit.objectives import RectifiedFlow
from dit.schedule import shift_noise_levels


def data(batch=4):
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, 2, 4, 4, generator=g), torch.randn(batch, 3, 2, 4, 4, generator=g)


def test_every_objective_has_schedulers_and_each_scheduler_knows_its_objective():
    assert set(OBJECTIVES) == set(OBJECTIVE_SCHEDULERS)
    for objective, names in OBJECTIVE_SCHEDULERS.items():
        for name in names:
            scheduler = make_scheduler(name)
            assert scheduler_name(scheduler) == name and objective_of(scheduler) == objective
    with pytest.raises(ValueError, match="unknown objective 'x0'"):
        make_objective("x0")


def test_rectified_flow_noises_on_the_straight_path_with_logit_normal_times():
    x0, noise = data(batch=256)
    xt, t = RectifiedFlow().noisy(x0, noise, torch.Generator().manual_seed(1))
    s = torch.sigmoid(torch.normal(0.0, 1.0, (256,), generator=torch.Generator().manual_seed(1)))
    assert torch.allclose(t, 1000 * s)
    assert torch.allclose(xt, (1 - s.view(-1, 1, 1, 1, 1)) * x0 + s.view(-1, 1, 1, 1, 1) * noise, atol=1e-6)
    assert 0.45 < s.median() < 0.55 and (s > 0).all() and (s < 1).all()  # logit-normal(0, 1): centred on 1/2


def test_rectified_flow_loss_is_the_velocity_error():
    x0, noise = data()
    flow = RectifiedFlow()
    xt, t = flow.noisy(x0, noise, torch.Generator().manual_seed(2))
    exact = flow.loss(noise - x0, x0, noise, t)
    assert exact["loss"].item() == 0.0 and exact["mse"].shape == (4,)
    off = flow.loss(noise - x0 + 0.5, x0, noise, t)
    assert torch.allclose(off["mse"], torch.full((4,), 0.25)) and off["loss"].item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="predicts the velocity"):
        flow.loss(torch.cat([noise, noise], dim=1), x0, noise, t)


def test_iddpm_objective_is_the_hybrid_loss_at_integer_timesteps():
    x0, noise = data()
    iddpm = make_objective("iddpm")
    xt, t = iddpm.noisy(x0, noise, torch.Generator().manual_seed(3))
    assert t.dtype == torch.int64 and torch.equal(xt, iddpm.scheduler.add_noise(x0, noise, t))
    out = torch.cat([noise, torch.zeros_like(noise)], dim=1)  # the exact noise, variance halfway
    terms = iddpm.loss(out, x0, noise, t)
    assert set(terms) == {"loss", "mse", "vb"} and terms["mse"].abs().max() == 0.0


def test_the_flow_shift_moves_training_and_sampling_noise_levels_alike():
    x0, noise = data(batch=256)
    _, plain = RectifiedFlow().noisy(x0, noise, torch.Generator().manual_seed(1))
    xt, t = make_objective("flow", flow_shift=2.0).noisy(x0, noise, torch.Generator().manual_seed(1))
    s = shift_noise_levels(plain / 1000, 2.0)
    assert torch.allclose(t, 1000 * s) and (s > plain / 1000).all()
    assert torch.allclose(xt, (1 - s.view(-1, 1, 1, 1, 1)) * x0 + s.view(-1, 1, 1, 1, 1) * noise, atol=1e-6)
    assert 0.62 < s.median() < 0.72  # the median level 1/2 goes to 2/3
    # the scheduler's own training levels, as diffusers' SD3 scripts draw them
    assert torch.allclose(make_scheduler("euler", 2.0).sigmas, shift_noise_levels(make_scheduler("euler").sigmas, 2.0))
    assert torch.equal(shift_noise_levels(s, 1.0), s)  # 1: unchanged, bit for bit
    assert make_objective("flow", flow_shift=2.0).sampler().config.shift == 2.0  # the pipeline saves its shift
    with pytest.raises(ValueError, match="flow_shift is the flow objective's"):
        make_scheduler("ddpm", flow_shift=2.0)


@pytest.mark.parametrize("steps", [1, 7, 50])
@pytest.mark.parametrize("flow_shift", [1.0, 1.5])
def test_euler_sampling_integrates_the_trained_velocity(steps, flow_shift):
    """For data concentrated at one point x0, the flow's velocity at (x_t, s) is (x_t - x0) / s; with the
    training convention (timestep 1000 s), every Euler path lands on x0 exactly, shifted or not."""
    x0, noise = data(batch=2)
    scheduler = make_scheduler("euler", flow_shift)
    scheduler.set_timesteps(steps)
    x = noise
    for t in scheduler.timesteps:
        s = t / 1000
        x = scheduler.step((x - x0) / s, t, x).prev_sample
    assert torch.allclose(x, x0, atol=1e-5)


def test_a_tiny_dit_overfits_one_clip_with_rectified_flow():
    torch.manual_seed(0)
    model = LatteDiT(**DIT_PRESETS["Latte-tiny"], in_channels=4, num_frames=3, sample_size=8, num_classes=0,
                     learn_sigma=False)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    flow, g = RectifiedFlow(), torch.Generator().manual_seed(5)
    x0 = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(2)).expand(8, -1, -1, -1, -1)
    eval_noise = torch.randn(x0.shape, generator=g)
    eval_t = torch.linspace(100, 900, 8)

    def eval_mse() -> torch.Tensor:
        s = (eval_t / 1000).view(-1, 1, 1, 1, 1)
        with torch.no_grad():
            return flow.loss(model((1 - s) * x0 + s * eval_noise, eval_t).sample, x0, eval_noise, eval_t)["mse"]

    before = eval_mse()
    for _ in range(200):
        noise = torch.randn(x0.shape, generator=g)
        xt, t = flow.noisy(x0, noise, g)
        loss = flow.loss(model(xt, t).sample, x0, noise, t)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    after = eval_mse()
    assert before.mean().item() == pytest.approx(2.0, abs=0.2)  # zero output: E|noise - x0|^2 = 2
    assert after.mean() < 0.3 * before.mean(), after
