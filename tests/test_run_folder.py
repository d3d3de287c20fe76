"""What a training run does with the folder it is pointed at (pipelines/training/run_folder.py, checkpoints.py,
health.py): it refuses another run's folder, a second run at once, pickled code in a checkpoint and non-finite
steps, and deletes only what a run of its own made."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipelines.common.locks import FolderInUse, hold_folder
from pipelines.data import VideoFolder, VideoReadError, clip_dataset, read_frames, write_video
from pipelines.training.checkpoints import UnsafeCheckpoint
from pipelines.training.health import NonFiniteTraining
from pipelines.training.optim import Part, lr_scheduler
from pipelines.training.run_folder import RunFolderConflict
from tests.conftest import reset_accelerate_state
from tests.toy_trainer import Points, Regression, ToyConfig, ToyTrainer

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def toy(folder: Path, **overrides) -> dict:
    reset_accelerate_state()
    settings = dict(max_steps=4, batch_size=4, checkpoint_every=2, ema_decay=0.5) | overrides
    return ToyTrainer(ToyConfig(output_dir=str(folder), **settings)).run()


def steps(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / "checkpoints").iterdir())


def test_a_fresh_run_refuses_a_folder_holding_another_run(tmp_path):
    toy(tmp_path, max_steps=6)
    with pytest.raises(RunFolderConflict, match=r"holds an earlier run \(checkpoints at steps 2, 4, 6\): "
                                                r"resume=latest continues it, overwrite=true starts over"):
        toy(tmp_path, seed=1)
    assert steps(tmp_path) == ["step_00000002", "step_00000004", "step_00000006"]  # nothing rotated out
    with pytest.raises(RunFolderConflict, match="seed: 0 vs 1"):  # resuming it with another config
        toy(tmp_path, seed=1, resume="latest")
    assert toy(tmp_path, max_steps=8, resume="latest")["steps_this_run"] == 2  # the budget may change
    (tmp_path / "checkpoints" / "step_00000001").mkdir()  # not a run's: overwrite leaves it to the user
    with pytest.raises(RunFolderConflict, match="holds no run.json: remove it yourself"):
        toy(tmp_path, seed=1, overwrite=True)
    (tmp_path / "checkpoints" / "step_00000001").rmdir()
    assert toy(tmp_path, seed=1, overwrite=True)["steps_this_run"] == 4
    assert steps(tmp_path) == ["step_00000002", "step_00000004"]


def test_a_finished_run_without_checkpoints_is_an_earlier_run_too(tmp_path):
    toy(tmp_path, checkpoint_every=0)
    with pytest.raises(RunFolderConflict, match="a finished run's train_summary.json"):
        toy(tmp_path, checkpoint_every=0)
    exported = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(RunFolderConflict, match="finished at step 4 .* no checkpoint to continue from"):
        toy(tmp_path, checkpoint_every=0, max_steps=8, resume="latest")  # not a silent fresh run over its export
    assert sorted(p.name for p in tmp_path.rglob("*")) == exported


def test_resume_refuses_when_what_the_run_reads_has_changed(tmp_path):
    class Reading(ToyTrainer):  # as the DiT trainer names its latent cache by hash
        data_hash = "a"

        def inputs(self):
            return {"latent_cache": self.data_hash}

    def run(data_hash: str, **overrides) -> dict:
        reset_accelerate_state()
        Reading.data_hash = data_hash
        settings = dict(max_steps=4, batch_size=4, checkpoint_every=2) | overrides
        return Reading(ToyConfig(output_dir=str(tmp_path), **settings)).run()

    run("a", max_steps=2)
    with pytest.raises(RunFolderConflict, match="inputs.latent_cache: 'a' vs 'b'"):  # the same path, other data
        run("b", resume="latest")
    assert run("a", resume="latest")["steps_this_run"] == 2


def test_a_second_run_is_kept_out_of_a_folder_in_use(tmp_path):
    (tmp_path / "config.yaml").parent.mkdir(exist_ok=True)
    held = hold_folder(tmp_path, "training run")  # as a running trainer holds it
    (tmp_path / ".config.yaml.123.tmp").write_text("left by a killed writer")
    with pytest.raises(FolderInUse, match="is in use by another training run"):
        toy(tmp_path)
    assert not (tmp_path / "config.yaml").exists()  # the refused run wrote nothing
    held.release()
    toy(tmp_path)
    assert not (tmp_path / ".config.yaml.123.tmp").exists()  # swept once the folder was the run's


class Planted:
    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (str(self.path),)


def test_resume_refuses_a_checkpoint_with_pickled_code(tmp_path):
    toy(tmp_path / "run")
    marker = tmp_path / "the planted code ran"
    state = tmp_path / "run" / "checkpoints" / "step_00000004" / "custom_checkpoint_0.pkl"  # the EMA's state
    torch.save({"decay": 0.5, "payload": Planted(marker)}, state)
    with pytest.raises(UnsafeCheckpoint, match=r"custom_checkpoint_0.pkl holds pickled objects other than tensors "
                                               r"and plain data \(.*posix.mkdir.*\): refusing to load it") as err:
        toy(tmp_path / "run", max_steps=6, resume="latest")
    assert not marker.exists() and "weights_only=False" not in str(err.value)
    with open(state, "wb") as handle:  # not even torch.save's format: a plain pickle stream
        pickle.dump(Planted(marker), handle)
    with pytest.raises(UnsafeCheckpoint):
        toy(tmp_path / "run", max_steps=6, resume="latest")
    assert not marker.exists()


def test_resume_refuses_a_checkpoint_whose_optimiser_does_not_fit(tmp_path, monkeypatch):
    toy(tmp_path)

    def two_groups(self):  # as a later version that spares the bias from weight decay builds it
        model = Regression()
        opt = torch.optim.SGD([{"params": [model.linear.weight]}, {"params": [model.linear.bias]}], lr=0.2)
        return [Part("model", model, opt, lr_scheduler(opt, "constant", 0, self.cfg.max_steps))]

    monkeypatch.setattr(ToyTrainer, "build_parts", two_groups)
    with pytest.raises(UnsafeCheckpoint, match=r"step_00000004 does not fit this run's models and optimisers "
                                               r"\(.*parameter groups.*\); it was written by another version"):
        toy(tmp_path, max_steps=6, resume="latest")
    assert steps(tmp_path) == ["step_00000002", "step_00000004"]


class OneBadPoint(Points):
    """Points with a NaN target in item 5: one batch an epoch has a non-finite loss."""

    def __getitem__(self, i):
        item = super().__getitem__(i)
        return item | {"y": torch.tensor(float("nan"))} if i == 5 else item


def test_non_finite_steps_are_skipped_counted_and_resumed(tmp_path, monkeypatch):
    monkeypatch.setattr(ToyTrainer, "build_dataset", lambda self: OneBadPoint())
    summary = toy(tmp_path / "a", max_steps=12, log_every=4)  # 3 epochs of 4 batches
    assert summary["skipped_steps"] == 3 and summary["logs"]["train/skipped_steps"] == 3
    assert all(torch.isfinite(torch.tensor(v)) for v in (*summary["weight"], summary["bias"], summary["logs"]["loss/total"]))
    toy(tmp_path / "b", max_steps=6, log_every=4)
    resumed = toy(tmp_path / "b", max_steps=12, log_every=4, resume="latest")
    assert (resumed["weight"], resumed["bias"], resumed["skipped_steps"]) == (summary["weight"], summary["bias"], 3)


def test_a_diverging_run_stops_with_one_line_and_saves_nothing_non_finite(tmp_path):
    with pytest.raises(NonFiniteTraining) as err:
        toy(tmp_path, learning_rate=1e3, grad_clip=0.0, max_steps=100, max_nonfinite_steps=3)
    message = str(err.value)
    assert "\n" not in message and "3 steps in a row had a non-finite loss or gradient norm" in message
    last = steps(tmp_path)[-1]
    assert f"the last good checkpoint is {tmp_path / 'checkpoints' / last}" in message
    for folder in (tmp_path / "checkpoints").iterdir():
        weights = load_file(folder / "model.safetensors")
        assert all(bool(torch.isfinite(t).all()) for t in weights.values()), folder.name
    assert not (tmp_path / "train_summary.json").exists()


class ClipMeans(ToyTrainer):
    """The toy model on the colour means of real video clips: a folder of 6 videos, one of which breaks when read."""

    root: Path

    def build_dataset(self):
        return VideoFolder(self.root, num_frames=2, resolution=16, index_dir=self.root.parent / "index")

    def micro_step(self, batch, generator):
        self.seen.extend(batch["path"])
        x = batch["video"].mean(dim=(2, 3, 4))  # (B, 3)
        loss = (self.parts[0].model.linear(x).squeeze(1) - batch["label"].float()).pow(2).mean()
        self.accelerator.backward(loss)
        return {"loss/total": loss.detach()}


@pytest.mark.parametrize("workers", [0, 2])
def test_a_clip_read_failing_in_a_worker_is_dropped_and_counted(tmp_path, monkeypatch, workers):
    root = tmp_path / "videos"
    frames = np.zeros((4, 16, 16, 3), np.uint8)
    for i in range(6):
        write_video(root / f"class{i % 2}" / f"clip{i}.mp4", frames + 40 * i, fps=8)
    broken = str(root / "class1" / "clip3.mp4")

    def read(path, indices):  # the file broke after it was indexed (a disk error, a partial sync)
        if path == broken:
            raise VideoReadError(f"cannot decode video {path}: simulated", "truncated")
        return read_frames(path, indices)

    monkeypatch.setattr(clip_dataset, "read_frames", read)
    monkeypatch.setattr(ClipMeans, "root", root, raising=False)
    reset_accelerate_state()
    trainer = ClipMeans(ToyConfig(output_dir=str(tmp_path / "run"), max_steps=3, batch_size=2, num_workers=workers))
    trainer.seen = []
    summary = trainer.run()
    assert summary["failed_reads"] == 1 and summary["logs"]["data/failed_reads"] == 1
    if not workers:  # (workers feed copies of the trainer: what they saw is known here only without them)
        assert sorted(trainer.seen) == sorted({str(p) for p in root.rglob("*.mp4")} - {broken})  # none twice
