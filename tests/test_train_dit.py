"""train_dit.py on tiny budgets: CLI, export, exact resume, cache checks, two-process data parallelism."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import sample
import train_dit
from dit.objectives import IDDPM
from diffusers import AutoencoderKL
from dit import LatteDiT, scheduler_name
from pipelines import LatteVideoPipeline
from pipelines.common.errors import ConfigError
from pipelines.inference.loading import load_pipeline, training_data
from pipelines.training.latent_cache import LatentDataset
from pipelines.training.latent_cache import main as cache_main
from tests.conftest import killed_after_first_checkpoint, reset_accelerate_state
from vae import PerFrameVAE, build_autoencoder, load_autoencoder

ROOT = Path(__file__).resolve().parents[1]
DATA = ["data.num_samples=24", "data.num_frames=9", "data.resolution=16", "data.synthetic_classes=4"]

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage1")
    torch.manual_seed(0)
    vae = build_autoencoder("lean-tiny")
    vae.register_to_config(latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[0.5, 2.0, 1.0, 0.25])
    vae.save_pretrained(root / "vae")
    cache_main([f"vae={root / 'vae'}", f"output_dir={root / 'latents'}", "shard_size=10", *DATA])
    return root


def tiny(cache: Path, out: Path) -> list[str]:
    return [f"cache_dir={cache / 'latents'}", f"output_dir={out}",  # the VAE and clip settings: the cache's
            "model.preset=Latte-tiny", "batch_size=4", "report_to=none", "sample_every=0", "sample_steps=2",
            "sample_classes=[0, 3]"]


def run(*args: str) -> dict:
    reset_accelerate_state()
    return train_dit.main(list(args))


def test_cli_trains_and_exports_a_pipeline(cache, tmp_path):
    summary = run(*tiny(cache, tmp_path / "run"), "max_steps=3", "log_every=1", "seed=3", "objective=iddpm")
    out = tmp_path / "run"
    assert summary["step"] == 3 and set(summary["logs"]) >= {"loss/total", "loss/mse", "loss/vb", "lr/dit"}
    assert "seed: 3" in (out / "config.yaml").read_text()
    model = LatteDiT.from_pretrained(out / "dit")
    assert (model.config.in_channels, model.config.num_frames, model.config.num_classes) == (4, 3, 4)
    pipe = LatteVideoPipeline.from_pretrained(out / "pipeline")
    manifest = json.loads((cache / "latents" / "manifest.json").read_text())
    assert pipe.vae.config.latents_std == [0.5, 2.0, 1.0, 0.25]  # the VAE's own statistics, unchanged
    assert pipe.class_names == manifest["class_names"]
    assert training_data(out / "pipeline") == {"data": manifest["data"], "source": manifest["source"]}
    assert (out / "samples" / "step_00000003.png").is_file()


def test_a_rectified_flow_run_exports_a_pipeline_that_samples_with_its_scheduler(cache, tmp_path, capsys):
    out = tmp_path / "run"
    summary = run(*tiny(cache, out), "max_steps=2", "log_every=1", "objective=flow")
    assert set(summary["logs"]) >= {"loss/total", "loss/mse"} and "loss/vb" not in summary["logs"]
    assert LatteDiT.from_pretrained(out / "dit").config.learn_sigma is False  # the velocity only: C channels
    pipe = load_pipeline(out / "pipeline", device="cpu")
    assert scheduler_name(pipe.scheduler) == "euler"
    with pytest.raises(ConfigError, match="trained with the flow objective: its schedulers are euler, not ddpm"):
        load_pipeline(out / "pipeline", "ddpm", device="cpu")
    assert sample.main(["--run", str(out), "--prompt-class", "1", "--num-videos", "1", "--steps", "3", "--device",
                        "cpu", "--output-dir", str(tmp_path / "videos")]) == 0
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 1


@pytest.mark.parametrize("objective", ["iddpm", "flow"])
def test_interrupted_and_resumed_equals_uninterrupted(cache, tmp_path, monkeypatch, objective):
    common = ["max_steps=6", "checkpoint_every=3", "gradient_accumulation_steps=2", "ema_decay=0.9", "log_every=2",
              f"objective={objective}"]
    run(*tiny(cache, tmp_path / "straight"), *common)
    killed_after_first_checkpoint(monkeypatch, lambda: run(*tiny(cache, tmp_path / "resumed"), *common))
    assert run(*tiny(cache, tmp_path / "resumed"), *common, "resume=latest")["steps_this_run"] == 3
    for name in ("dit/diffusion_pytorch_model.safetensors", "checkpoints/step_00000006/model.safetensors"):
        a, b = load_file(tmp_path / "straight" / name), load_file(tmp_path / "resumed" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.slow
def test_a_compiled_run_matches_eager_and_resumes_exactly(cache, tmp_path, monkeypatch):
    common = ["max_steps=4", "checkpoint_every=2", "ema_decay=0.9", "log_every=1", "objective=flow"]
    eager = run(*tiny(cache, tmp_path / "eager"), *common)
    compiled = run(*tiny(cache, tmp_path / "compiled"), *common, "compile=true")
    assert compiled["logs"]["loss/total"] == pytest.approx(eager["logs"]["loss/total"], rel=1e-4)
    name = "dit/diffusion_pytorch_model.safetensors"
    a, b = load_file(tmp_path / "eager" / name), load_file(tmp_path / "compiled" / name)
    # Fused kernels sum in another order, and Adam's step (about lr = 1e-4 whatever the gradient's size) turns a
    # rounding difference in a near-zero gradient into a weight difference up to ~lr: 2e-5 here.
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-4, rtol=0) for k in a)
    killed_after_first_checkpoint(monkeypatch, lambda: run(*tiny(cache, tmp_path / "resumed"), *common, "compile=true"))
    run(*tiny(cache, tmp_path / "resumed"), *common, "compile=true", "resume=latest")
    for name in ("dit/diffusion_pytorch_model.safetensors", "checkpoints/step_00000004/model.safetensors"):
        a, b = load_file(tmp_path / "compiled" / name), load_file(tmp_path / "resumed" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name

    def frames(compile: bool) -> torch.Tensor:  # sampling with the DiT compiled or not
        pipe = load_pipeline(tmp_path / "compiled" / "pipeline", device="cpu", compile=compile)
        return pipe(class_labels=[1], num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                    output_type="pt").frames

    torch.testing.assert_close(frames(True), frames(False), atol=1e-4, rtol=0)


def test_mismatched_cache_and_missing_cache_are_refused(cache, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(*tiny(cache, tmp_path / "x"), "data.num_frames=13", "max_steps=1")
    assert exit_info.value.code == 2 and "num_frames: cache 9 vs run 13" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        run(*tiny(cache, tmp_path / "x"), f"cache_dir={tmp_path}", "max_steps=1")
    assert exit_info.value.code == 2 and "not a finished latent cache" in capsys.readouterr().err
    torch.manual_seed(1)  # not the cache VAE's seed (0)
    other = build_autoencoder("lean-tiny")
    other.save_pretrained(tmp_path / "other-vae")
    with pytest.raises(SystemExit) as exit_info:
        run(*tiny(cache, tmp_path / "x"), f"vae={tmp_path / 'other-vae'}", "max_steps=1")
    assert exit_info.value.code == 2 and "leave out vae= to use the cache's own" in capsys.readouterr().err
    moved = tmp_path / "moved"
    shutil.copytree(cache / "latents", moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    (moved / "manifest.json").write_text(json.dumps({**manifest, "vae": {**manifest["vae"], "path": "/gone/vae"}}))
    with pytest.raises(SystemExit) as exit_info:
        run(*tiny(cache, tmp_path / "x"), f"cache_dir={moved}", "max_steps=1")
    assert exit_info.value.code == 2 and "records its VAE at /gone/vae, which is not there" in capsys.readouterr().err
    assert run(*tiny(cache, tmp_path / "x"), f"cache_dir={moved}", f"vae={cache / 'vae'}", "max_steps=1")["step"] == 1


def test_the_dit_is_trained_on_normalised_latents(cache, tmp_path, monkeypatch):
    seen = []
    real_loss = IDDPM.loss

    def spy(self, model_output, x0, noise, timesteps):
        seen.append(x0)
        return real_loss(self, model_output, x0, noise, timesteps)

    monkeypatch.setattr(IDDPM, "loss", spy)
    run(*tiny(cache, tmp_path / "norm"), "max_steps=1", "sample_latents=false", "batch_size=24", "objective=iddpm")
    latents = LatentDataset(cache / "latents")
    raw = torch.stack([latents[i]["mean"] for i in range(len(latents))])
    vae = load_autoencoder(cache / "vae")
    assert sorted(seen[0].flatten().tolist()) == pytest.approx(sorted(vae.normalize_latents(raw).flatten().tolist()),
                                                               abs=1e-6)


@pytest.mark.slow
def test_two_process_data_parallel(cache, tmp_path):
    torchrun = shutil.which("torchrun") or pytest.skip("torchrun not on PATH")
    out = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "train_dit.py",
                             *tiny(cache, out), "max_steps=3"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["num_processes"] == 2
    assert len(summary["replica_checksums"]) == 2 and len(set(summary["replica_checksums"])) == 1


@pytest.mark.slow
def test_script_runs_as_a_subprocess(cache, tmp_path):
    result = subprocess.run([sys.executable, "train_dit.py", *tiny(cache, tmp_path / "s"), "max_steps=1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Saved the EMA DiT" in result.stdout


def test_the_dit_trains_on_per_frame_image_vae_latents(tmp_path):
    """The original Latte set-up in miniature: an image AutoencoderKL folder encodes each frame, the DiT trains
    on those latents, the exported pipeline decodes them frame by frame."""
    torch.manual_seed(0)
    image_vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                              up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                              layers_per_block=1, scaling_factor=0.5)
    image_vae.save_pretrained(tmp_path / "sd-vae")
    data = ["data.num_samples=8", "data.num_frames=4", "data.resolution=8", "data.synthetic_classes=4"]
    cache_main([f"vae={tmp_path / 'sd-vae'}", f"output_dir={tmp_path / 'latents'}", *data])
    assert LatentDataset(tmp_path / "latents").manifest["latent_shape"] == [4, 4, 4, 4]  # 4 frames, 4 latent frames
    summary = run(f"vae={tmp_path / 'sd-vae'}", f"cache_dir={tmp_path / 'latents'}", f"output_dir={tmp_path / 'dit'}",
                  *data, "model.preset=Latte-tiny", "batch_size=4", "report_to=none", "sample_every=0",
                  "sample_steps=2", "sample_classes=[1]", "max_steps=2")
    assert summary["step"] == 2
    pipe = LatteVideoPipeline.from_pretrained(tmp_path / "dit" / "pipeline")
    assert isinstance(pipe.vae, PerFrameVAE) and pipe.vae.config.latents_std == 2.0
    frames = pipe(class_labels=[1], num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                  output_type="np").frames
    assert frames.shape == (1, 4, 8, 8, 3)
