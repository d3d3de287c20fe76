"""Trained stand-in classifiers kept in the detector cache, so that runs of one recipe share one detector.

    <detector cache>/classifiers/<key>/classifier/    the exported model (save_pretrained)
                                      /record.json     the key's inputs, the run's summary, the folder's sha256

The default recipe's classifier ships with the package (`reference_classifier/`, the same layout; its record
holds the recipe alone): a first run on a new machine scores with it instead of training one (1.2 minutes on a
2-core CPU), and every machine scores the built-in data set with the same detector, as every machine scores
UCF-101 with the same I3D. `tests/test_classifier.py` checks that it still recognises the data set as rendered
by the code of the day. It was made by `python -m pipelines.training.classifier_trainer --config
configs/classifier/default.yaml reuse_cached=false output_dir=<folder>` (torch 2.14.1, CPU); do the same and
copy `<folder>/classifier` and its record in when the recipe or the data set changes.

The key hashes what decides the trained weights: the classifier config without the keys that only decide how a
run is watched or where it writes, the source of the code that trains it (this package's training loop, the
classifier, the synthetic data), and the torch version. A copy is checked against its record before it is
used, and the cache is never pruned: an entry is a folder a user may delete.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Optional

import torch

from ..common.config import to_dict
from ..common.errors import UserError
from ..common.files import atomic_write, read_json
from .detectors import detector_cache_dir, folder_sha256, sha256_of

PACKAGE = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(PACKAGE / "training").glob("*.py"), PACKAGE / "evaluation" / "classifier.py",
                  PACKAGE / "data" / "synthetic.py"])
# Config keys that do not change the trained weights.
UNKEYED = ("output_dir", "resume", "overwrite", "log_every", "checkpoint_every", "checkpoints_total_limit",
           "report_to", "max_nonfinite_steps", "reuse_cached", "detector_cache")
RECORD = "record.json"
REFERENCE = Path(__file__).resolve().parent / "reference_classifier"


class CachedClassifier:
    def __init__(self, folder: Path, recipe: dict):
        self.folder, self.recipe = folder, recipe

    @classmethod
    def of(cls, cfg) -> "CachedClassifier":
        """The classifier `cfg` (a ClassifierTrainConfig) trains: the shipped reference classifier when `cfg` is
        its recipe, else the detector cache's entry."""
        recipe = {key: value for key, value in to_dict(cfg).items() if key not in UNKEYED}
        reference = cls(REFERENCE, {"config": recipe})
        if reference.exists() and read_json(REFERENCE / RECORD).get("inputs") == reference.recipe:
            return reference
        code = {str(path.relative_to(PACKAGE)): sha256_of(path) for path in SOURCES}
        inputs = {"config": recipe, "code": code, "torch": torch.__version__}
        key = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return cls(detector_cache_dir(cfg.detector_cache) / "classifiers" / key, inputs)

    def exists(self) -> bool:
        return (self.folder / RECORD).is_file()

    def store(self, exported: Path, summary: dict) -> None:
        """Keep a trained run's export and summary, unless a run of the same recipe did first (two runs at once:
        the folder is renamed into place whole, and the second rename fails on the first one's folder)."""
        def write(tmp: Path) -> None:
            shutil.copytree(exported, tmp / "classifier")
            record = {"inputs": self.recipe, "summary": summary, "sha256": folder_sha256(tmp / "classifier")}
            (tmp / RECORD).write_text(json.dumps(record, indent=2, default=str))

        if self.exists():
            return
        try:
            atomic_write(self.folder, write)
        except OSError:
            if not self.exists():
                raise

    def take(self, destination: Path, run: Optional[dict]) -> dict:
        """Copy the classifier to `destination` after checking it is what its record says; returns the summary
        of the run that trained it, marked as copied."""
        record = read_json(self.folder / RECORD)
        source = self.folder / "classifier"
        if record.get("inputs") != self.recipe or not source.is_dir() or folder_sha256(source) != record.get("sha256"):
            fix = "restore it from the repository" if self.folder == REFERENCE else "delete that folder"
            raise UserError(f"the classifier in {self.folder} does not match its record (changed or damaged): "
                            f"{fix}, or train anew with reuse_cached=false")
        atomic_write(destination, lambda tmp: shutil.copytree(source, tmp))
        return {**record["summary"], "classifier": str(destination), "copied_from": str(self.folder), "run": run}
