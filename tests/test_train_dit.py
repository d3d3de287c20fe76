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

import train_dit
from accelerate.state import AcceleratorState, GradientState
from dit import LatteDiT
from pipelines.latent_cache import main as cache_main
from pipelines.pipeline_latte import LatteVideoPipeline
from pipelines.training import Checkpoints
from vae import VAE_PRESETS, LeanVAE

ROOT = Path(__file__).resolve().parents[1]
DATA = ["data.num_samples=24", "data.num_frames=9", "data.resolution=16", "data.synthetic_classes=4"]

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage1")
    torch.manual_seed(0)
    LeanVAE(**VAE_PRESETS["lean-tiny"]).save_pretrained(root / "vae")
    cache_main([f"vae={root / 'vae'}", f"output_dir={root / 'latents'}", "shard_size=10", *DATA])
    return root


def tiny(cache: Path, out: Path) -> list[str]:
    return [f"vae={cache / 'vae'}", f"cache_dir={cache / 'latents'}", f"output_dir={out}", *DATA,
            "model.preset=Latte-tiny", "batch_size=4", "report_to=none", "sample_every=0", "sample_steps=2",
            "sample_classes=[0, 3]"]


def run(*args: str) -> dict:
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return train_dit.main(list(args))


def test_cli_trains_and_exports_a_pipeline(cache, tmp_path):
    summary = run(*tiny(cache, tmp_path / "run"), "max_steps=3", "log_every=1", "seed=3")
    out = tmp_path / "run"
    assert summary["step"] == 3 and set(summary["logs"]) >= {"loss/total", "loss/mse", "loss/vb", "lr"}
    assert "seed: 3" in (out / "config.yaml").read_text()
    model = LatteDiT.from_pretrained(out / "dit")
    assert (model.config.in_channels, model.config.num_frames, model.config.num_classes) == (4, 3, 4)
    pipe = LatteVideoPipeline.from_pretrained(out / "pipeline")
    manifest = json.loads((cache / "latents" / "manifest.json").read_text())
    assert pipe.vae.config.scaling_factor == pytest.approx(manifest["stats"]["scaling_factor"])
    assert pipe.class_names == manifest["class_names"]
    assert (out / "samples" / "step_00000003.png").is_file()


def test_interrupted_and_resumed_equals_uninterrupted(cache, tmp_path, monkeypatch):
    common = ["max_steps=6", "checkpoint_every=3", "gradient_accumulation_steps=2", "ema_decay=0.9", "log_every=2"]
    run(*tiny(cache, tmp_path / "straight"), *common)
    save = Checkpoints.save

    def save_then_crash(self, accelerator, step):
        save(self, accelerator, step)
        raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoints, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        run(*tiny(cache, tmp_path / "resumed"), *common)
    monkeypatch.setattr(Checkpoints, "save", save)
    assert run(*tiny(cache, tmp_path / "resumed"), *common, "resume=latest")["steps_this_run"] == 3
    for name in ("dit/diffusion_pytorch_model.safetensors", "checkpoints/step_00000006/model.safetensors"):
        a, b = load_file(tmp_path / "straight" / name), load_file(tmp_path / "resumed" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_mismatched_cache_and_missing_cache_are_refused(cache, tmp_path):
    with pytest.raises(SystemExit, match="num_frames: cache 9 vs run 13"):
        run(*tiny(cache, tmp_path / "x"), "data.num_frames=13", "max_steps=1")
    with pytest.raises(SystemExit, match="not a finished latent cache"):
        run(*tiny(cache, tmp_path / "x"), f"cache_dir={tmp_path}", "max_steps=1")


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


def test_script_runs_as_a_subprocess(cache, tmp_path):
    result = subprocess.run([sys.executable, "train_dit.py", *tiny(cache, tmp_path / "s"), "max_steps=1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Saved the EMA DiT" in result.stdout
