"""Where a run writes what: the one place that spells out the folder layout.

A training run (`train_vae.py`, `train_dit.py`, the classifier) owns one folder:

    <output_dir>/config.yaml  logs/  checkpoints/step_<N>/  samples/  train_summary.json  <export>/

`train.sh` puts its stages in one run folder:

    <run>/keyframes/ (IV-VAE only: the keyframe image VAE, keyframes/vae)
    <run>/vae/ (a training run; the VAE in vae/vae)   latents/ (cache + manifest.json)
    <run>/dit/ (a training run; dit/dit, dit/pipeline) classifier/ (a training run; classifier/classifier)
    <run>/eval/metrics.json  eval/samples/           samples/<class>/ (sample.py)
    <run>/stage_times.json  stage_commands.json      (each finished stage's wall time and command)

    python -m pipelines.common.layout runs/default      # the same, as shell variables (train.sh reads them)
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

CHECKPOINT_PREFIX = "step_"


class TrainingRunLayout:
    """The folder of one training run."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"{CHECKPOINT_PREFIX}{step:08d}"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def summary(self) -> Path:
        return self.root / "train_summary.json"

    def export(self, name: str) -> Path:
        """A finished model (`save_pretrained` folder) of this run: vae, dit, pipeline, classifier."""
        return self.root / name


class RunLayout:
    """The stages of one `train.sh` run, each in its own subfolder of `root`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    keyframe_run = property(lambda self: TrainingRunLayout(self.root / "keyframes"))
    vae_run = property(lambda self: TrainingRunLayout(self.root / "vae"))
    dit_run = property(lambda self: TrainingRunLayout(self.root / "dit"))
    classifier_run = property(lambda self: TrainingRunLayout(self.root / "classifier"))
    keyframe_vae = property(lambda self: self.keyframe_run.export("vae"))
    vae = property(lambda self: self.vae_run.export("vae"))
    dit = property(lambda self: self.dit_run.export("dit"))
    pipeline = property(lambda self: self.dit_run.export("pipeline"))
    classifier = property(lambda self: self.classifier_run.export("classifier"))
    latents = property(lambda self: self.root / "latents")
    manifest = property(lambda self: self.latents / "manifest.json")
    eval = property(lambda self: self.root / "eval")
    metrics = property(lambda self: self.eval / "metrics.json")
    eval_samples = property(lambda self: self.eval / "samples")
    samples = property(lambda self: self.root / "samples")
    stage_times = property(lambda self: self.root / "stage_times.json")
    stage_commands = property(lambda self: self.root / "stage_commands.json")

    def shell_variables(self) -> dict[str, Path]:
        return {"KEYFRAME_RUN": self.keyframe_run.root, "KEYFRAME_VAE": self.keyframe_vae,
                "VAE_RUN": self.vae_run.root, "VAE": self.vae, "LATENTS": self.latents, "MANIFEST": self.manifest,
                "DIT_RUN": self.dit_run.root, "PIPELINE": self.pipeline, "CLASSIFIER_RUN": self.classifier_run.root,
                "CLASSIFIER": self.classifier, "METRICS": self.metrics, "STAGE_TIMES": self.stage_times}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m pipelines.common.layout RUN_DIR   (prints the run's paths as shell variables)",
              file=sys.stderr)
        raise SystemExit(2)
    for name, path in RunLayout(argv[0]).shell_variables().items():
        print(f"{name}={shlex.quote(str(path))}")


if __name__ == "__main__":
    main()
