"""The shared training infrastructure (pipelines/training.py), on a single CPU process."""

import json
import math

import pytest
import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from torch.utils.data import DataLoader, Dataset

from pipelines.config import ConfigError
from pipelines.training import (Checkpoints, EpochSeededDataset, RunConfig, RunningMeans, check_replicas,
                                clip_grad_norm, deepspeed_safe_parameters, ema_weights, endless_batches,
                                export_pretrained, keyed_generator, keyed_seed, lr_scheduler, parse_cli,
                                setup_accelerator, state_checksum)
from vae import VAE_PRESETS, LeanVAE

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.mark.parametrize("override, message", [
    ("mixed_precision=fp8", "mixed_precision must be one of"), ("max_steps=0", "max_steps must be >= 1"),
    ("min_learning_rate=1", "exceeds learning_rate"), ("ema_decay=1.0", "ema_decay must be in"),
    ("lr_schedule=linear", "lr_schedule must be one of"), ("grad_clip=-1", "grad_clip must be >= 0"),
])
def test_run_config_rejects_bad_values(tmp_path, capsys, override, message):
    with pytest.raises(SystemExit):
        parse_cli(RunConfig, None, [override])
    assert message in capsys.readouterr().err


def test_parse_cli_applies_overrides_and_resume_flag(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("max_steps: 5\nseed: 3\n")
    cfg = parse_cli(RunConfig, config, ["--config", str(config), "seed=4", "--resume", "latest"])
    assert (cfg.max_steps, cfg.seed, cfg.resume) == (5, 4, "latest")


def test_setup_saves_config_and_follows_run_config(tmp_path):
    cfg = RunConfig(output_dir=str(tmp_path), gradient_accumulation_steps=3, report_to="none")
    accelerator = setup_accelerator(cfg, "test")
    assert accelerator.gradient_accumulation_steps == 3
    assert "gradient_accumulation_steps: 3" in (tmp_path / "config.yaml").read_text()


def _model_and_optimizer():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    return model, torch.optim.Adam(model.parameters(), lr=0.1)


def test_checkpoints_keep_the_last_k_and_resume_the_latest(tmp_path):
    accelerator = Accelerator(cpu=True)
    model, opt = accelerator.prepare(*_model_and_optimizer())
    checkpoints = Checkpoints(tmp_path, limit=2)
    saved = {}
    for step in range(1, 5):
        with torch.no_grad():
            model.weight.add_(1.0)
        checkpoints.save(accelerator, step)
        saved[step] = model.weight.detach().clone()
    assert [s for s, _ in checkpoints.all()] == [3, 4]
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
    with torch.no_grad():
        model.weight.zero_()
    assert checkpoints.resume(accelerator, "latest") == 4
    assert torch.equal(model.weight, saved[4])
    assert checkpoints.resume(accelerator, str(tmp_path / "checkpoints/step_00000003")) == 3
    assert torch.equal(model.weight, saved[3])
    assert checkpoints.resume(accelerator, None) == 0
    assert Checkpoints(tmp_path / "empty", 2).resume(accelerator, "latest") == 0
    with pytest.raises(FileNotFoundError, match="expected 'latest'"):
        checkpoints.resume(accelerator, str(tmp_path / "nowhere"))


def test_keyed_randomness_is_a_pure_function_of_its_keys():
    assert keyed_seed(0, 1, 2) == keyed_seed(0, 1, 2)
    assert len({keyed_seed(0, 1, 2), keyed_seed(0, 2, 1), keyed_seed(1, 1, 2), keyed_seed(0, 1, 3)}) == 4
    a = torch.randn(4, generator=keyed_generator(5, 7))
    torch.randn(10)  # the global RNG plays no part
    assert torch.equal(a, torch.randn(4, generator=keyed_generator(5, 7)))


class RandomItems(Dataset):
    """Items drawn from torch's global RNG, like a data set's random crops."""

    def __len__(self):
        return 10

    def __getitem__(self, index):
        return torch.rand(()) + index


def test_epoch_seeded_dataset_items_depend_on_seed_epoch_index_only():
    data = EpochSeededDataset(RandomItems(), seed=3)
    first = data[4]
    state = torch.get_rng_state()
    torch.rand(5)
    assert torch.equal(data[4], first)  # independent of the global RNG's position ...
    torch.set_rng_state(state)
    data[4]
    assert torch.equal(torch.get_rng_state(), state)  # ... which it leaves untouched
    data.set_epoch(1)
    assert not torch.equal(data[4], first)
    assert not torch.equal(EpochSeededDataset(RandomItems(), seed=4)[4], first)


def test_endless_batches_resume_mid_epoch_gives_the_same_stream(tmp_path):
    accelerator = setup_accelerator(RunConfig(output_dir=str(tmp_path), report_to="none"), "test")

    def stream(start):
        loader = accelerator.prepare(DataLoader(EpochSeededDataset(RandomItems(), seed=0), batch_size=3,
                                                shuffle=True, drop_last=True))
        batches = endless_batches(accelerator, loader, start)
        return [next(batches) for _ in range(8 - start)]

    full = stream(0)  # 3 batches per epoch: epochs 0, 1 and part of 2
    assert len({tuple(b.tolist()) for b in full}) == 8  # reshuffled, re-drawn every epoch
    for start in (2, 4, 6):
        assert all(torch.equal(a, b) for a, b in zip(full[start:], stream(start)))


def test_lr_schedules():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = lr_scheduler(opt, "cosine", warmup_steps=4, total_steps=14, min_lr_ratio=0.25)
    lrs = []
    for _ in range(15):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[:5] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])
    assert lrs[9] == pytest.approx(0.5 + 1.5 * 0.5)  # half way through the cosine
    assert lrs[14] == pytest.approx(0.5)  # min_lr_ratio * lr at total_steps
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = lr_scheduler(opt, "constant", warmup_steps=2, total_steps=10)
    for _ in range(5):
        opt.step()
        sched.step()
    assert sched.get_last_lr()[0] == 2.0


def test_running_means_average_since_last_pop():
    accelerator = Accelerator(cpu=True)
    means = RunningMeans()
    means.add({"a": torch.tensor(1.0), "b": 4.0})
    means.add({"a": torch.tensor(3.0)})
    assert means.pop(accelerator) == {"a": 2.0, "b": 4.0}
    assert means.pop(accelerator) == {}


def test_clip_grad_norm_reports_the_norm_before_clipping():
    accelerator = Accelerator(cpu=True)
    param = torch.nn.Parameter(torch.zeros(2))
    param.grad = torch.tensor([3.0, 4.0])
    assert clip_grad_norm(accelerator, [param], 1.0) == pytest.approx(5.0)
    assert torch.allclose(param.grad, torch.tensor([0.6, 0.8]))
    param.grad = torch.tensor([3.0, 4.0])
    assert clip_grad_norm(accelerator, [param], 0.0) == pytest.approx(5.0)
    assert torch.equal(param.grad, torch.tensor([3.0, 4.0]))


def test_ema_weights_swap_in_and_restore_exactly():
    model, _ = _model_and_optimizer()
    ema = EMAModel(model.parameters(), decay=0.5)
    for _ in range(2):  # diffusers' EMA copies the weights on its first step, averages from the second
        with torch.no_grad():
            model.weight.add_(1.0)
        ema.step(model.parameters())
    trained = model.weight.detach().clone()
    with ema_weights(ema, model.parameters()):
        assert torch.equal(model.weight, ema.shadow_params[0])
        assert not torch.equal(model.weight, trained)
    assert torch.equal(model.weight, trained)


def test_checksums_tell_bitwise_equal_states_apart():
    a = [torch.tensor([1.0, 2.0]), torch.tensor(3.0)]
    assert state_checksum(a) == state_checksum([t.clone() for t in a])
    assert state_checksum(a) != state_checksum([a[0], torch.tensor(3.0000002)])
    accelerator = Accelerator(cpu=True)
    assert check_replicas(accelerator, "abc") == ["abc"]


def test_deepspeed_safe_parameters_keep_values_and_outputs():
    torch.manual_seed(0)
    model = LeanVAE(**VAE_PRESETS["lean-tiny"])
    x = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    before = model(x, sample_posterior=False).sample
    deepspeed_safe_parameters(model)
    assert all(p.is_contiguous() and p.ndim >= 1 for p in model.parameters())
    assert torch.equal(model(x, sample_posterior=False).sample, before)


def test_export_pretrained_replaces_atomically(tmp_path):
    torch.manual_seed(0)
    first, second = LeanVAE(**VAE_PRESETS["lean-tiny"]), LeanVAE(**VAE_PRESETS["lean-tiny"])
    export_pretrained(first, tmp_path / "vae")
    export_pretrained(second, tmp_path / "vae")
    loaded = LeanVAE.from_pretrained(tmp_path / "vae")
    assert all(torch.equal(a, b) for a, b in zip(loaded.parameters(), second.parameters()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vae"]
    assert json.loads((tmp_path / "vae/config.json").read_text())["lc_dim"] == VAE_PRESETS["lean-tiny"]["lc_dim"]
    assert math.isfinite(loaded.config.scaling_factor)
