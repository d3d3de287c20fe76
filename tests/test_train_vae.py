"""train_vae.py end to end on tiny budgets: CLI and overrides, export, exact resume, validation metrics,
sample videos, two-process data parallelism and one DeepSpeed ZeRO-2 step."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import pytest
import torch
from safetensors.torch import load_file

import train_vae
from pipelines.common.cli import parse_cli
from pipelines.common.errors import ConfigError
from pipelines.data import build_dataset
from pipelines.evaluation.reconstruction import video_psnr, video_ssim
from pipelines.training.vae_trainer import DEFAULT_CONFIG, VAETrainConfig, build_datasets
from tests.conftest import killed_after_first_checkpoint, reset_accelerate_state
from vae import VAE_PRESETS, load_autoencoder

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model.preset=lean-tiny", "data.num_frames=5", "data.resolution=32", "data.num_samples=12", "batch_size=2",
    "val_clips=2", "stats_clips=2", "report_to=none", "loss.disc_channels=8", "lr_warmup_steps=2",
    "learning_rate=1e-3", "min_learning_rate=1e-4",
]

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def run(tmp_path: Path, name: str, *overrides: str) -> dict:
    """One in-process run; accelerate's process-wide state is reset first, as in a new process."""
    reset_accelerate_state()
    return train_vae.main([*TINY, f"output_dir={tmp_path / name}", *overrides])


def test_cli_trains_logs_and_exports(tmp_path):
    summary = run(tmp_path, "run", "max_steps=3", "log_every=1", "val_every=2", "sample_every=2",
                  "report_to=tensorboard", "seed=7", "val_clips=3")
    out = tmp_path / "run"
    assert summary["step"] == 3 and summary["steps_this_run"] == 3
    assert set(summary["logs"]) >= {"loss/total", "loss/pixel", "loss/wavelet_low", "loss/wavelet_high", "loss/kl",
                                    "grad_norm/vae", "lr/vae", "train/clips_per_s", "perf/tflops", "perf/mfu"}
    assert json.loads((out / "train_summary.json").read_text()) == summary
    # overrides reached the run: the saved config says so
    saved = (out / "config.yaml").read_text()
    assert "seed: 7" in saved and "preset: lean-tiny" in saved
    assert sorted(p.name for p in (out / "samples").glob("*.mp4")) == ["step_00000002.mp4", "step_00000003.mp4"]
    with av.open(str(out / "samples/step_00000003.mp4")) as video:  # 3 held-out clips, original | recon
        stream = video.streams.video[0]
        assert (stream.frames, stream.height, stream.width) == (5, 3 * 32, 2 * 32)
    assert list((out / "logs").rglob("events.out.tfevents.*"))
    vae = load_autoencoder(out / "vae")
    assert {k: vae.config[k] for k in VAE_PRESETS["lean-tiny"].kwargs} == VAE_PRESETS["lean-tiny"].kwargs
    # The latent statistics of the exported model: those of its own posterior means on the first 2 clips.
    assert vae.config.latents_mean == summary["latents_mean"] and len(vae.config.latents_std) == 4
    data = build_dataset(parse_cli(VAETrainConfig, ["--config", str(DEFAULT_CONFIG), *TINY]).data)  # the run's
    clips = torch.stack([data[i]["video"] for i in range(2)])
    with torch.no_grad():
        means = vae.encode(clips).latent_dist.mean.double().transpose(0, 1).flatten(1)  # (4, N)
    assert vae.config.latents_std == pytest.approx(means.std(dim=1, unbiased=False).tolist(), rel=1e-4)
    assert vae.config.latents_mean == pytest.approx(means.mean(dim=1).tolist(), rel=1e-4, abs=1e-6)


def test_overrides_and_unknown_keys(tmp_path, capsys):
    cfg = parse_cli(VAETrainConfig, ["max_steps=9", "data.num_frames=9", "model.latent_channels=8"],
                    default_config=DEFAULT_CONFIG)
    assert (cfg.max_steps, cfg.data.num_frames, cfg.model) == (9, 9, {"preset": "lean-small", "latent_channels": 8})
    for bad, message in [("max_stepz=3", "Did you mean 'max_steps'"), ("data.num_frames=8", "use 5 or 9"),
                         ("model.preset=huge", "lean-small"), ("loss.kl_weight=-1", "loss.kl_weight"),
                         ("model.lc_dimm=3", "Did you mean 'lc_dim'"), ("data.resolution=36", "multiple of 8"),
                         ("latent_noise=-0.1", "latent_noise must be >= 0")]:
        with pytest.raises(SystemExit) as exit_info:
            train_vae.main([bad, f"output_dir={tmp_path}"])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("name, channels", [("leanvae-4ch", 4), ("leanvae-16ch", 16)])
def test_official_recipe_configs(tmp_path, capsys, name, channels):
    path = ROOT / "configs/vae" / f"{name}.yaml"
    cfg = parse_cli(VAETrainConfig, ["--config", str(path), f"data.root={tmp_path}"])
    assert cfg.model == {"preset": f"lean-{channels}ch"} and cfg.stats_clips == 256
    assert (cfg.data.name, cfg.data.num_frames, cfg.data.resolution, cfg.mixed_precision) == ("folder", 17, 256, "bf16")
    assert (cfg.max_steps, cfg.loss.disc_start, cfg.loss.lpips_weight, cfg.batch_size * 8) == (700_000, 600_000, 4.0, 40)
    assert (cfg.learning_rate, cfg.lr_warmup_steps, cfg.min_learning_rate) == (5e-5, 5000, 1e-5)
    assert (cfg.adam_beta1, cfg.adam_beta2, cfg.grad_clip, cfg.loss.kl_weight) == (0.5, 0.9, 1.0, 1e-7)
    with pytest.raises(ConfigError, match="data.root is needed"):
        parse_cli(VAETrainConfig, ["--config", str(path)])


def test_lpips_without_weights_stops_with_instructions(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(tmp_path, "lpips", "max_steps=1", "loss.lpips_weight=1", f"loss.lpips_vgg_path={tmp_path}/vgg.pth")
    message = capsys.readouterr().err
    assert exit_info.value.code == 2 and message.startswith("train_vae.py: error: LPIPS")
    assert str(tmp_path / "vgg.pth") in message and "lpips_weight=0" in message


def _tensors(path: Path) -> dict:
    if path.suffix == ".safetensors":
        return load_file(path)
    if path.suffix == ".json":
        return json.loads(path.read_text())
    flat = {}

    def walk(obj, prefix):
        if isinstance(obj, torch.Tensor):
            flat[prefix] = obj
        elif isinstance(obj, dict):
            for key, value in obj.items():
                walk(value, f"{prefix}/{key}")
        elif isinstance(obj, (list, tuple)):
            for i, value in enumerate(obj):
                walk(value, f"{prefix}/{i}")
        else:
            flat[prefix] = obj

    walk(torch.load(path, weights_only=True), "")
    return flat


def _assert_same_state(a: Path, b: Path) -> None:
    def state_files(folder: Path) -> list[str]:  # run.json: each run has its own id
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith(("random_states", "run.json")))

    names = state_files(a)
    assert names == state_files(b)
    for name in names:
        left, right = _tensors(a / name), _tensors(b / name)
        assert left.keys() == right.keys(), name
        for key in left:
            if isinstance(left[key], torch.Tensor):
                assert torch.equal(left[key], right[key]), f"{name}:{key}"
            else:
                assert left[key] == right[key], f"{name}:{key}"


def crash_then_resume(tmp_path: Path, monkeypatch, name: str, *overrides: str) -> dict:
    """Run until the first checkpoint is written, kill the run there, resume it: the resumed run's summary."""
    killed_after_first_checkpoint(monkeypatch, lambda: run(tmp_path, name, *overrides))
    return run(tmp_path, name, *overrides, "--resume", "latest")


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    # GAN on from step 2, EMA, accumulation 2, noise on the decoder's latents, epochs of 5 batches: the resume
    # point (micro-step 6) lies in the second epoch, after the GAN came on.
    common = ["max_steps=6", "checkpoint_every=3", "gradient_accumulation_steps=2", "loss.disc_start=2",
              "ema_decay=0.9", "latent_noise=0.1", "val_every=0", "sample_every=0", "log_every=2"]
    run(tmp_path, "straight", *common)
    resumed = crash_then_resume(tmp_path, monkeypatch, "interrupted", *common)
    assert resumed["steps_this_run"] == 3

    _assert_same_state(tmp_path / "straight/checkpoints/step_00000006", tmp_path / "interrupted/checkpoints/step_00000006")
    _assert_same_state(tmp_path / "straight/vae", tmp_path / "interrupted/vae")


def test_wfvae_recipe_trains_and_resumes_exactly(tmp_path, monkeypatch):
    # WF-VAE's losses: frame sums, the WL loss, a 3-D discriminator with dropout and the adaptive weight, AdamW.
    common = ["model.preset=wfvae-tiny", "loss.reduction=frame_sum", "loss.subband_weight=0.1", "loss.disc_type=3d",
              "loss.disc_layers=2", "loss.disc_dropout=0.3", "loss.adaptive_disc_weight=true", "loss.disc_start=1",
              "loss.lecam_weight=0", "weight_decay=1e-4", "max_steps=4", "checkpoint_every=2", "val_every=0",
              "sample_every=0", "log_every=1"]
    straight = run(tmp_path, "straight", *common)
    assert {"loss/subband", "loss/gan", "loss/gan_weight", "disc/disc_total"} <= set(straight["logs"])
    assert crash_then_resume(tmp_path, monkeypatch, "interrupted", *common)["steps_this_run"] == 2
    _assert_same_state(tmp_path / "straight/vae", tmp_path / "interrupted/vae")
    assert type(load_autoencoder(tmp_path / "straight/vae")).__name__ == "WFVAE"


@pytest.mark.parametrize("preset", ["lean-tiny", "wfvae-tiny", "ivvae-tiny"])
def test_bfloat16_autocast_trains_every_bundled_vae(tmp_path, preset):
    """mixed_precision=bf16 (autocast; on CPU too): accelerate casts the model's output back to float32, which
    rebuilds the output object from its fields (it failed with a TypeError there)."""
    summary = run(tmp_path, "bf16", f"model.preset={preset}", "mixed_precision=bf16", "max_steps=2", "val_every=2",
                  "sample_every=0", "checkpoint_every=0", "log_every=1")
    assert summary["step"] == 2 and math.isfinite(summary["logs"]["loss/total"])
    assert load_autoencoder(tmp_path / "bf16/vae").dtype == torch.float32  # the weights stay float32


@pytest.mark.slow
def test_a_compiled_run_with_its_discriminator_resumes_exactly(tmp_path, monkeypatch):
    common = ["max_steps=4", "checkpoint_every=2", "loss.disc_start=2", "ema_decay=0.9", "val_every=2",
              "sample_every=0", "log_every=1", "compile=true"]
    straight = run(tmp_path, "straight", *common)
    assert "loss/gan" in straight["logs"] and straight["logs"]["perf/mfu"] > 0
    assert crash_then_resume(tmp_path, monkeypatch, "interrupted", *common)["steps_this_run"] == 2
    _assert_same_state(tmp_path / "straight/vae", tmp_path / "interrupted/vae")


def test_validation_psnr_matches_hand_computation(tmp_path):
    # The metric itself: a uniform error of 0.1 in [-1, 1] is 0.05 in [0, 1]: PSNR = 10 log10(1 / 0.05^2).
    x = torch.zeros(2, 3, 5, 16, 16)
    assert torch.allclose(video_psnr(x, x + 0.1), torch.full((2,), 10 * math.log10(400.0)))
    # SSIM of two flat images is the luminance term alone: (2ab + C1) / (a^2 + b^2 + C1).
    a, b, c1 = 0.5, 0.75, 0.01**2
    assert torch.allclose(video_ssim(x, x + 0.5), torch.full((2,), (2 * a * b + c1) / (a * a + b * b + c1)))
    noisy = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    assert torch.allclose(video_ssim(noisy, noisy), torch.ones(2)) and video_ssim(x, noisy).max() < 0.5

    # The trainer's number: the exported EMA model on the held-out clips, by hand.
    summary = run(tmp_path, "val", "max_steps=2", "val_every=1", "ema_decay=0.5")
    cfg = parse_cli(VAETrainConfig, TINY, default_config=DEFAULT_CONFIG)
    dataset = build_dataset(cfg.data)
    held = torch.stack([dataset[i]["video"] for i in range(len(dataset) - 2, len(dataset))])
    vae = load_autoencoder(tmp_path / "val/vae")
    with torch.no_grad():
        recon = vae.decode(vae.encode(held).latent_dist.mean).sample.clamp(-1, 1)
    mse = (((held + 1) / 2 - (recon + 1) / 2) ** 2).flatten(1).mean(1)
    assert summary["val"]["psnr"] == pytest.approx(float((10 * torch.log10(1 / mse)).mean()), abs=1e-4)
    assert len(build_datasets(cfg.data, 2)[2]) == 2


@pytest.mark.slow
def test_script_runs_as_a_subprocess(tmp_path):
    out = tmp_path / "script"
    result = subprocess.run([sys.executable, "train_vae.py", "max_steps=2", f"output_dir={out}", *TINY],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Saved the EMA model" in result.stdout and "skipped no video" in result.stdout
    assert load_autoencoder(out / "vae").config.lc_dim == VAE_PRESETS["lean-tiny"].kwargs["lc_dim"]


def test_missing_data_folder_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "train_vae.py", *TINY, f"output_dir={tmp_path}", "data.name=folder",
                             f"data.root={tmp_path / 'nowhere'}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"train_vae.py: error: data set root '{tmp_path / 'nowhere'}' is "
                                                  "not a folder; expected video files (.mp4, .avi, ...) or folders of "
                                                  ".jpg/.png frames, optionally in class folders"]


def _launch(args: list[str], tmp_path: Path, env_extra: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_process_data_parallel_keeps_replicas_identical(tmp_path):
    torchrun = shutil.which("torchrun") or pytest.skip("torchrun not on PATH")
    out = tmp_path / "ddp"
    result = _launch([torchrun, "--standalone", "--nproc_per_node", "2", "train_vae.py", *TINY, f"output_dir={out}",
                      "max_steps=3", "loss.disc_start=1", "gradient_accumulation_steps=2", "checkpoint_every=2"],
                     tmp_path, {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["num_processes"] == 2 and "MULTI_CPU" in summary["distributed_type"]
    checksums = summary["replica_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]
    assert (out / "checkpoints/step_00000002").is_dir()


@pytest.mark.slow
def test_one_deepspeed_zero2_step(tmp_path):
    pytest.importorskip("deepspeed")
    accelerate = shutil.which("accelerate") or pytest.skip("accelerate CLI not on PATH")
    out = tmp_path / "ds"
    result = _launch([accelerate, "launch", "--use_deepspeed", "--zero_stage", "2", "--num_processes", "1",
                      "train_vae.py", *TINY, f"output_dir={out}", "max_steps=2", "checkpoint_every=1"],
                     tmp_path, {})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert "DEEPSPEED" in summary["distributed_type"] and summary["step"] == 2
    assert load_autoencoder(out / "vae").config.lc_dim == VAE_PRESETS["lean-tiny"].kwargs["lc_dim"]
    # DeepSpeed's engine files pass the weights_only check that resume makes of every state file
    result = _launch([accelerate, "launch", "--use_deepspeed", "--zero_stage", "2", "--num_processes", "1",
                      "train_vae.py", *TINY, f"output_dir={out}", "max_steps=3", "checkpoint_every=1",
                      "resume=latest"], tmp_path, {})
    assert result.returncode == 0 and "Resumed from" in result.stdout, result.stderr[-3000:]


def test_ivvae_two_stage_recipe_initialises_keyframes_and_resumes_exactly(tmp_path, monkeypatch):
    # Stage 1: the keyframe image VAE; stage 2: IV-VAE from it (GAN on, so every loss and both parts resume).
    run(tmp_path, "keyframes", "model.preset=ivvae-tiny-keyframes", "max_steps=2", "val_every=0", "sample_every=0")
    image_vae = load_autoencoder(tmp_path / "keyframes/vae")
    assert type(image_vae).__name__ == "IVImageVAE"
    common = ["model.preset=ivvae-tiny", f"init_keyframes_from={tmp_path / 'keyframes/vae'}", "loss.disc_start=1",
              "max_steps=4", "checkpoint_every=2", "val_every=0", "sample_every=0", "log_every=1"]
    reset_accelerate_state()
    cfg = parse_cli(VAETrainConfig, [*TINY, *common, f"output_dir={tmp_path / 'x'}"])
    from pipelines.training.vae_trainer import init_keyframes
    from vae import build_autoencoder

    torch.manual_seed(0)
    vae = build_autoencoder("ivvae-tiny")
    init_keyframes(vae, cfg.init_keyframes_from)
    assert torch.equal(vae.state_dict()["decoder.head.2.conv_2d.weight"][:, :4],
                       image_vae.state_dict()["decoder.head.2.conv_2d.weight"])
    straight = run(tmp_path, "straight", *common)
    assert {"loss/pixel", "disc/disc_total"} <= set(straight["logs"])
    assert crash_then_resume(tmp_path, monkeypatch, "interrupted", *common)["steps_this_run"] == 2
    _assert_same_state(tmp_path / "straight/vae", tmp_path / "interrupted/vae")
    with pytest.raises(SystemExit) as exit_info:  # a LeanVAE cannot take keyframes; a missing folder is named
        train_vae.main([*TINY, f"output_dir={tmp_path / 'bad'}", f"init_keyframes_from={tmp_path / 'keyframes/vae'}"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        run(tmp_path, "bad2", "model.preset=ivvae-tiny", f"init_keyframes_from={tmp_path / 'nowhere'}")
