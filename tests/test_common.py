"""What every part of the pipelines shares: atomic writes (killed writers), the run layout, the command line,
user errors, keyed randomness and pixel conversion."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipelines.common.cli import parse_cli
from pipelines.common.errors import ConfigError, MissingFileError, exit_on_user_error
from pipelines.common.files import atomic_write, export_pretrained, write_json
from pipelines.common.layout import RunLayout, TrainingRunLayout
from pipelines.common.pixels import to_uint8
from pipelines.common.seeding import keyed_cpu_rng, keyed_generator, keyed_seed
from pipelines.inference.sampling import SampleConfig
from pipelines.training.run_folder import checkpoint_folders
from vae import build_autoencoder, load_autoencoder

ROOT = Path(__file__).resolve().parents[1]

# Writes half of the new content, says so, then waits to be killed.
KILLED_WRITER = """
import sys, time
from pathlib import Path
from pipelines.common.files import atomic_write

def write(tmp: Path) -> None:
    if sys.argv[2] == "folder":
        tmp.mkdir()
        (tmp / "model.safetensors").write_bytes(b"half a checkpoint")
    else:
        with open(tmp, "w") as f:
            f.write("new content, first half")
            f.flush()
    print("writing", flush=True)
    time.sleep(60)

atomic_write(Path(sys.argv[1]), write)
"""


def kill_while_writing(target: Path, kind: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target), kind], stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        assert writer.stdout.readline().strip() == "writing"
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.wait(timeout=30)


def test_a_killed_file_writer_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"fvd": 1.0})
    kill_while_writing(target, "file")
    assert json.loads(target.read_text()) == {"fvd": 1.0}  # the old content, whole
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert leftovers and all(name.startswith(".metrics.json.") and name.endswith(".tmp") for name in leftovers)


def test_a_killed_checkpoint_is_never_resumed_from(tmp_path):
    layout = TrainingRunLayout(tmp_path)
    atomic_write(layout.checkpoint(1), lambda tmp: tmp.mkdir())
    kill_while_writing(layout.checkpoint(2), "folder")
    assert [step for step, _ in checkpoint_folders(layout)] == [1]  # the half-written one is invisible
    assert not layout.checkpoint(2).exists()


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    def fails(tmp: Path) -> None:
        tmp.write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "a.txt", fails)
    assert list(tmp_path.iterdir()) == []


def test_export_pretrained_replaces_a_folder_atomically(tmp_path):
    torch.manual_seed(0)
    first, second = build_autoencoder("lean-tiny"), build_autoencoder("lean-tiny")
    export_pretrained(first, tmp_path / "vae")
    export_pretrained(second, tmp_path / "vae")
    loaded = load_autoencoder(tmp_path / "vae")
    assert all(torch.equal(a, b) for a, b in zip(loaded.parameters(), second.parameters()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vae"]


def test_run_layout_and_its_shell_form():
    run = RunLayout("runs/x")
    assert run.vae == Path("runs/x/vae/vae") and run.pipeline == Path("runs/x/dit/pipeline")
    assert run.classifier == Path("runs/x/classifier/classifier") and run.metrics == Path("runs/x/eval/metrics.json")
    assert TrainingRunLayout("r").checkpoint(7) == Path("r/checkpoints/step_00000007")
    printed = subprocess.run([sys.executable, "-m", "pipelines.common.layout", "runs/my run"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    assert "VAE='runs/my run/vae/vae'" in printed.splitlines() and "LATENTS='runs/my run/latents'" in printed


def test_cli_flags_are_config_keys_and_values_are_checked(tmp_path):
    flags = {"prompt_class": "class", "num_videos": "count"}
    cfg = parse_cli(SampleConfig, ["--prompt-class", "12", "seed=3"], flags=flags)
    assert (cfg.prompt_class, cfg.seed, cfg.num_videos) == (12, 3, 4)
    config = tmp_path / "sample.yaml"
    config.write_text("num_videos: 2\nsteps: 10\n")
    cfg = parse_cli(SampleConfig, ["--config", str(config), "--num-videos", "5"], flags=flags)
    assert (cfg.num_videos, cfg.steps) == (5, 10)  # a flag beats the file
    with pytest.raises(ConfigError, match="expects int"):
        parse_cli(SampleConfig, ["--num-videos", "many"], flags=flags)
    with pytest.raises(ConfigError, match=r"^config key 'prompt_class' expects int or null, got 'abc'$"):
        parse_cli(SampleConfig, ["--prompt-class", "abc"], flags=flags)  # no Python type names
    with pytest.raises(ConfigError, match="Did you mean 'seed'"):
        parse_cli(SampleConfig, ["sed=1"])
    with pytest.raises(ConfigError, match="config file not found"):
        parse_cli(SampleConfig, ["--config", str(tmp_path / "missing.yaml")])
    config.write_text("steps: [10\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_cli(SampleConfig, ["--config", str(config)])


def test_user_errors_exit_with_code_2_and_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        with exit_on_user_error("tool.py"):
            raise MissingFileError("no data at /nowhere")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "tool.py: error: no data at /nowhere\n"
    with pytest.raises(KeyError):  # a bug keeps its traceback
        with exit_on_user_error("tool.py"):
            raise KeyError("bug")


def test_keyed_randomness_is_a_pure_function_of_its_keys():
    assert keyed_seed(0, 1, 2) == keyed_seed(0, 1, 2)
    assert len({keyed_seed(0, 1, 2), keyed_seed(0, 2, 1), keyed_seed(1, 1, 2), keyed_seed(0, 1, 3)}) == 4
    a = torch.randn(4, generator=keyed_generator(5, 7))
    torch.randn(10)  # the global RNG plays no part
    assert torch.equal(a, torch.randn(4, generator=keyed_generator(5, 7)))


def test_keyed_cpu_rng_draws_as_a_keyed_generator_and_restores_the_global_state():
    torch.manual_seed(11)
    before = torch.get_rng_state()
    with keyed_cpu_rng(5, 7):
        inside = torch.randn(4)
    assert torch.equal(inside, torch.randn(4, generator=keyed_generator(5, 7)))
    assert torch.equal(torch.get_rng_state(), before)
    with pytest.raises(RuntimeError), keyed_cpu_rng(5, 8):  # restored on an exception too
        torch.randn(3)
        raise RuntimeError
    assert torch.equal(torch.get_rng_state(), before)


def test_to_uint8_from_unit_range_rounds_half_up():
    x = torch.tensor([0.0, 0.5 / 255, 1.5 / 255, 0.5, 1.0, 1.02, -0.02])
    assert to_uint8(x, (0.0, 1.0)).tolist() == [0, 1, 2, 128, 255, 255, 0]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_uint8(torch.tensor([2.0]), (0.0, 1.0))
