"""The one training loop (pipelines/training/): its parts on a single CPU process, a toy trainer through the
whole `Trainer`, and the replica check across two real processes."""

import json
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset

from pipelines.common import device_speed
from pipelines.common.cli import parse_cli
from pipelines.common.errors import ConfigError
from pipelines.common.layout import TrainingRunLayout
from pipelines.training import accelerator as setup
from pipelines.training.accelerator import deepspeed_safe_parameters, setup_accelerator, state_checksum
from pipelines.training.batches import EpochSeededDataset, endless_batches
from pipelines.training.checkpoints import Checkpoints, NonFiniteState
from pipelines.training import monitor
from pipelines.training.monitor import RunningMeans, count_flops
from pipelines.training.optim import adamw, clip_grad_norm, lr_scheduler
from pipelines.training.run_config import TRAINER_FLAGS, RunConfig
from pipelines.training.run_folder import RunRecord, checkpoint_folders, claim_run_folder
from tests.conftest import reset_accelerate_state
from tests.toy_trainer import ToyConfig, ToyTrainer
from vae import build_autoencoder

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.mark.parametrize("override, message", [
    ("mixed_precision=fp8", "mixed_precision must be one of"), ("max_steps=0", "max_steps must be >= 1"),
    ("min_learning_rate=1", "exceeds learning_rate"), ("ema_decay=1.0", "ema_decay must be in"),
    ("lr_schedule=linear", "lr_schedule must be one of"), ("grad_clip=-1", "grad_clip must be >= 0"),
])
def test_run_config_rejects_bad_values(override, message):
    with pytest.raises(ConfigError, match=message):
        parse_cli(RunConfig, [override])


def test_parse_cli_applies_file_overrides_and_flags(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("max_steps: 5\nseed: 3\n")
    cfg = parse_cli(RunConfig, ["--config", str(config), "seed=4", "--resume", "latest"], flags=TRAINER_FLAGS)
    assert (cfg.max_steps, cfg.seed, cfg.resume) == (5, 4, "latest")


def test_setup_follows_run_config_and_the_claim_saves_it(tmp_path):
    cfg = RunConfig(output_dir=str(tmp_path), gradient_accumulation_steps=3, report_to="none")
    accelerator = setup_accelerator(cfg)
    assert accelerator.gradient_accumulation_steps == 3
    lock, record, resume_from = claim_run_folder(accelerator, cfg, TrainingRunLayout(tmp_path))
    assert "gradient_accumulation_steps: 3" in (tmp_path / "config.yaml").read_text() and resume_from is None
    assert record.identity["gradient_accumulation_steps"] == 3 and "max_steps" not in record.identity
    lock.release()


def test_checkpoints_keep_the_last_k_of_their_run_and_load_any(tmp_path):
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = accelerator.prepare(torch.nn.Linear(3, 2))
    layout = TrainingRunLayout(tmp_path)
    other = Checkpoints(layout, limit=1, record=RunRecord("other", {}))
    other.save(accelerator, 9, {})  # another run's later checkpoint: never rotated out by this run
    checkpoints = Checkpoints(layout, limit=2, record=RunRecord("this", {}))
    saved = {}
    for step in range(1, 5):
        with torch.no_grad():
            model.weight.add_(1.0)
        checkpoints.save(accelerator, step, dict(model.named_parameters()))
        saved[step] = model.weight.detach().clone()
    assert [p.name for p in checkpoints.mine()] == ["step_00000003", "step_00000004"]
    assert [s for s, _ in checkpoint_folders(layout)] == [3, 4, 9]
    with torch.no_grad():
        model.weight.zero_()
    assert Checkpoints.load(accelerator, layout.checkpoint(4)) == 4
    assert torch.equal(model.weight, saved[4])
    assert Checkpoints.load(accelerator, layout.checkpoint(3)) == 3
    assert torch.equal(model.weight, saved[3])
    with torch.no_grad():
        model.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteState, match="step 5: refusing to checkpoint non-finite values in weight"):
        checkpoints.save(accelerator, 5, dict(model.named_parameters()))
    assert not layout.checkpoint(5).exists()


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
    accelerator = setup_accelerator(RunConfig(output_dir=str(tmp_path), report_to="none"))

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


# ---------------------------------------------------------------------------------------------- a toy trainer
def toy_run(tmp_path, name, **overrides) -> dict:
    reset_accelerate_state()
    return ToyTrainer(ToyConfig(output_dir=str(tmp_path / name), **overrides)).run()


def test_toy_trainer_learns_and_reports(tmp_path):
    summary = toy_run(tmp_path, "learn", max_steps=150, batch_size=4, ema_decay=0.0, log_every=10)
    assert summary["weight"] == pytest.approx([1.0, -2.0, 3.0], abs=1e-2) and summary["bias"] == pytest.approx(0.5, abs=1e-2)
    logs = summary["logs"]
    assert logs["loss/total"] < 1e-4 and logs["lr/model"] == 0.2 and logs["grad_norm/model"] >= 0
    assert logs["perf/tflops"] > 0 and 0 < logs["perf/mfu"] < 10 and logs["train/clips_per_s"] > 0
    assert (tmp_path / "learn" / "train_summary.json").is_file() and (tmp_path / "learn" / "config.yaml").is_file()


def test_flop_count_matches_a_hand_count(tmp_path):
    """MFU's numerator, counted by hand: a multiply-add is 2 FLOPs, a layer's backward costs its forward once for
    the weight gradient and once more for the input gradient unless its input is data."""
    torch.manual_seed(0)
    conv, head = torch.nn.Conv3d(3, 8, 3, padding=1), torch.nn.Linear(8, 5)
    x = torch.randn(2, 3, 5, 8, 8)
    conv_macs = (2 * 5 * 8 * 8) * 8 * (3 * 27)  # output positions x output channels x (input channels x kernel)
    head_macs = 2 * 8 * 5
    _, flops = count_flops(lambda: head(conv(x).mean((2, 3, 4))).sum().backward())
    assert flops == 2 * (2 * conv_macs + 3 * head_macs)
    depthwise = torch.nn.Conv3d(8, 8, 3, padding=1, groups=8, bias=False)  # LeanVAE's NAF blocks have these
    y = torch.randn(2, 8, 5, 8, 8, requires_grad=True)
    _, flops = count_flops(lambda: depthwise(y).sum().backward())
    assert flops == 2 * 3 * (2 * 5 * 8 * 8) * 8 * 27  # forward + two gradients; torch: 10 forwards
    q, k, v = (torch.randn(2, 3, n, d, requires_grad=True) for n, d in ((10, 8), (12, 8), (12, 4)))
    attention_macs = 2 * 3 * 10 * 12 * (8 + 4)  # scores q k^T, then weights v
    _, flops = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v).sum().backward())
    assert flops == 2 * 3 * attention_macs  # torch counts the CPU's fused kernel as 0
    reset_accelerate_state()
    trainer = ToyTrainer(ToyConfig(output_dir=str(tmp_path / "count"), max_steps=1, batch_size=4))
    trainer.run()
    assert trainer.throughput.flops_per_micro_step == 2 * (2 * 4 * 3)  # Linear(3, 1) on 4 points: forward, weights


def test_the_peak_counts_its_convolution_as_the_model_count_does(monkeypatch):
    """MFU's denominator is the faster of a matmul and a convolution probe; the probe's FLOPs must be counted
    the way FlopCounterMode counts the model's, or a convolutional model's MFU is off by the difference."""
    for module in (monitor, device_speed):
        monkeypatch.setattr(module, "best_seconds", lambda op, repeats: 1.0)
    device = torch.device("cpu")
    x, weight = torch.ones(1, 8, 4, 16, 16), torch.ones(8, 8, 3, 3, 3)
    _, counted = count_flops(lambda: torch.nn.functional.conv3d(x, weight, padding=1))
    assert monitor.conv_flops_per_second.__wrapped__(device, torch.float32, channels=8) == counted
    assert monitor.matmul_flops_per_second.__wrapped__(device, torch.float32, n=64) == 2 * 64**3
    monitor.matmul_flops_per_second.cache_clear(), monitor.conv_flops_per_second.cache_clear()
    assert monitor.peak_flops_per_second(device) == 2 * 2048**3  # matmul 2 x 2048^3 beats the probe's 3.6e9
    monitor.matmul_flops_per_second.cache_clear(), monitor.conv_flops_per_second.cache_clear()


def test_the_bfloat16_speedup_is_timed_alternately_so_a_slow_start_biases_neither_precision(monkeypatch):
    """`auto`'s decision: a device twice as fast in bfloat16 whose first six timings run at a third of its speed
    (a clock ramping up, a neighbour's burst). Timed one precision after the other, the one timed first would take
    the whole slow start (on a CPU whose figure is 2.0-2.3x, a best of 3 read 1.4x once)."""
    timings = []

    def timed(op, repeats):
        seconds = (2.0 if op().dtype == torch.float32 else 1.0) * (3.0 if len(timings) < 6 else 1.0)
        timings.append(seconds)
        return seconds
    monkeypatch.setattr(device_speed, "best_seconds", timed)
    assert device_speed.bf16_speedup.__wrapped__(torch.device("cpu")) == 2.0
    assert len(timings) == 20  # ten of each


def test_an_mfu_above_100_percent_measures_the_peak_once_more(monkeypatch):
    """A peak measured while another process held the CPU is too low; the first MFU above 100% measures it
    again, keeping the better one, and only once per run."""
    measured = iter([100.0, 300.0, 1000.0])
    monkeypatch.setattr(monitor, "peak_flops_per_second", lambda device, dtype, again=False: next(measured))
    throughput = monitor.Throughput(SimpleNamespace(device=torch.device("cpu")), "no", 4)
    throughput.flops_per_micro_step, throughput.micro_steps = 50, 1
    throughput.started -= 1.0  # 50 FLOP/s against a peak of 100: no second measurement
    assert throughput.logs()["perf/mfu"] < 1 and throughput.peak == 100.0
    throughput.flops_per_micro_step = 250  # 250 FLOP/s: above the peak, so it is measured again
    assert throughput.logs()["perf/mfu"] < 1 and throughput.peak == 300.0
    throughput.flops_per_micro_step = 600
    assert throughput.logs()["perf/mfu"] > 1 and throughput.peak == 300.0  # once only


def test_accumulated_micro_steps_equal_one_large_batch(tmp_path):
    large = toy_run(tmp_path, "large", max_steps=6, batch_size=4, ema_decay=0.0)
    accumulated = toy_run(tmp_path, "accumulated", max_steps=6, batch_size=2, gradient_accumulation_steps=2,
                          ema_decay=0.0)
    assert accumulated["weight"] == pytest.approx(large["weight"], abs=1e-6)
    assert accumulated["bias"] == pytest.approx(large["bias"], abs=1e-6)


def test_ema_weights_swap_in_and_restore_exactly(tmp_path):
    reset_accelerate_state()
    trainer = ToyTrainer(ToyConfig(output_dir=str(tmp_path), max_steps=3, batch_size=4, ema_decay=0.5))
    trainer.run()
    trained = trainer.model.linear.weight.detach().clone()
    with trainer.ema.weights():
        assert torch.equal(trainer.model.linear.weight, trainer.ema.shadow_params[0])
        assert not torch.equal(trainer.model.linear.weight, trained)
    assert torch.equal(trainer.model.linear.weight, trained)
    assert torch.equal(trainer.ema.copy(torch.device("cpu")).linear.weight, trainer.ema.shadow_params[0])


def test_checksums_tell_bitwise_equal_states_apart():
    a = [torch.tensor([1.0, 2.0]), torch.tensor(3.0)]
    assert state_checksum(a) == state_checksum([t.clone() for t in a])
    assert state_checksum(a) != state_checksum([a[0], torch.tensor(3.0000002)])


REPLICA_SCRIPT = """
import json, sys
from pathlib import Path
from accelerate import Accelerator
from pipelines.training.accelerator import ReplicasDiverged, check_replicas
accelerator = Accelerator(cpu=True)
result = {"agreed": check_replicas(accelerator, "same state")}
try:
    check_replicas(accelerator, f"state of rank {accelerator.process_index}")
except ReplicasDiverged as err:
    result["diverged"] = str(err)
Path(sys.argv[1], f"rank{accelerator.process_index}.json").write_text(json.dumps(result))
accelerator.end_training()  # tears the process group down before exit
"""


@pytest.mark.slow
def test_replica_check_across_two_processes(tmp_path):
    torchrun = shutil.which("torchrun") or pytest.skip("torchrun not on PATH")
    script = tmp_path / "replicas.py"
    script.write_text(REPLICA_SCRIPT)
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):  # every rank agrees on equal states and learns of diverged ones
        seen = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert seen["agreed"] == ["same state", "same state"]
        assert seen["diverged"].startswith("data-parallel replicas differ after training: checksums per rank")


def test_deepspeed_safe_parameters_keep_values_and_outputs():
    torch.manual_seed(0)
    model = build_autoencoder("lean-tiny")
    x = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    before = model(x, sample_posterior=False).sample
    deepspeed_safe_parameters(model)
    assert all(p.is_contiguous() and p.ndim >= 1 for p in model.parameters())
    assert torch.equal(model(x, sample_posterior=False).sample, before)


@pytest.mark.parametrize("bf16_rate,expected", [(4.0, "bf16"), (1.2, "no")])
def test_auto_precision_takes_bfloat16_only_where_it_is_measured_faster(monkeypatch, bf16_rate, expected):
    monkeypatch.setattr(setup, "bf16_speedup", lambda device: bf16_rate)
    precision, note = setup.resolve_mixed_precision(parse_cli(RunConfig, ["mixed_precision=auto"]).mixed_precision)
    assert precision == expected and f"auto: {expected} (a bfloat16 matmul runs {bf16_rate:.1f}x" in note
    assert setup.resolve_mixed_precision("no") == ("no", "")


def test_weight_decay_spares_biases_norm_gains_embeddings_and_gain_tensors():
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"linear": torch.nn.Linear(4, 4), "norm": torch.nn.LayerNorm(4),
                                 "embed": torch.nn.Embedding(3, 4)})
    model.gain = torch.nn.Parameter(torch.ones(4, 1, 1, 1))  # IV-VAE's RMS gains have this shape
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = adamw(model, lr=0.1, weight_decay=0.5)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # Adam moves nothing: what changes is weight decay alone
    optimizer.step()
    after = dict(model.named_parameters())
    assert torch.allclose(after["linear.weight"], before["linear.weight"] * (1 - 0.1 * 0.5))
    unchanged = [n for n in before if torch.equal(after[n], before[n])]
    assert sorted(unchanged) == ["embed.weight", "gain", "linear.bias", "norm.bias", "norm.weight"]
