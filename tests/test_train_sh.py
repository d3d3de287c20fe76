"""train.sh end to end with tiny budgets (SMOKE=1): every stage runs, writes its outputs, and a re-run resumes."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_sh_runs_every_stage_and_resumes(tmp_path):
    # Its own detector cache: the classifier and the FVD statistics are made by this run, not taken from another.
    env = {**os.environ, "SMOKE": "1", "RUN": str(tmp_path / "run"),
           "LEANLATTE_DETECTOR_CACHE": str(tmp_path / "cache")}
    first = subprocess.run(["bash", "train.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "run"
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert {"IS", "class accuracy"} <= set(metrics["results"])
    assert len(list((run / "samples" / "class_12").glob("*.mp4"))) == 4
    assert "time: total" in first.stdout and "class accuracy" in first.stdout
    times = json.loads((run / "stage_times.json").read_text())
    assert len(times) == 5

    again = subprocess.run(["bash", "train.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done already") == 5

    # Other settings for a finished stage: refused in one line, not skipped (its result would be reported as
    # theirs) and not run over the finished one.
    metrics_before = (run / "eval" / "metrics.json").read_bytes()
    other = subprocess.run(["bash", "train.sh"], cwd=ROOT, env={**env, "EXTRA_DIT": "seed=1"}, capture_output=True,
                           text=True, timeout=900)
    assert other.returncode == 2 and other.stderr.strip().count("\n") == 0, other.stderr[-3000:]
    assert "stage '3/5 train DiT'" in other.stderr and "now seed=1" in other.stderr
    assert (run / "eval" / "metrics.json").read_bytes() == metrics_before

    # A stage whose output exists but that never recorded its end (killed after the export) is not done: it
    # resumes its own run (nothing left to train) and finishes; the evaluation, which reads it, runs again.
    del times["3/5 train DiT"]
    (run / "stage_times.json").write_text(json.dumps(times))
    third = subprocess.run(["bash", "train.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert third.returncode == 0, third.stderr[-3000:]
    assert third.stdout.count("done already") == 3, third.stdout
    assert "== 3/5 train DiT\n" in third.stdout and "== 5/5 sample and evaluate\n" in third.stdout
    assert "3/5 train DiT" in json.loads((run / "stage_times.json").read_text())
