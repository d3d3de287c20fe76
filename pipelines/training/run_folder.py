"""Which run a training folder belongs to, and what a run may do with a folder it finds.

A run records itself in every checkpoint it saves (`checkpoints/step_N/run.json`) and in its summary: a random
run id and the run's identity, its config without the keys a resumed run may change (`RESUMABLE_KEYS`: the step
budget, logging, checkpoint cadence, workers, ...). With that record:

- a fresh start (no `resume`) refuses a folder that holds a run (checkpoints, or the summary of a finished
  one); `overwrite=true` deletes that run's checkpoints and summary first, and only checkpoints that carry a
  record (what a run of this project made): anything else is left for the user to remove;
- a resume refuses a checkpoint whose run had another identity, naming the keys that differ;
- a resume that finds no checkpoint but a finished run's summary refuses too, rather than train over its export;
- checkpoint rotation deletes only checkpoints of this run;
- the folder is locked while the run lasts (`pipelines.common.locks`), so a second run is refused.

Decisions are taken by the main process and broadcast, so every process refuses together.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from accelerate import Accelerator

from ..common.config import save_config, to_dict
from ..common.errors import MissingFileError, UserError
from ..common.files import read_json, remove, sweep_temporaries
from ..common.layout import CHECKPOINT_PREFIX, TrainingRunLayout
from ..common.locks import hold_folder
from .accelerator import decide_on_main

RUN_RECORD = "run.json"
# Keys a resumed run may change: they decide how long and how visibly it runs, not what it computes.
RESUMABLE_KEYS = ("output_dir", "resume", "overwrite", "max_steps", "log_every", "checkpoint_every",
                  "checkpoints_total_limit", "num_workers", "report_to", "mixed_precision", "max_nonfinite_steps",
                  "val_every", "sample_every", "sample_steps", "sample_classes", "compile")


class RunFolderConflict(UserError):
    """A folder that holds another run, or a checkpoint that belongs to one."""


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    identity: dict

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.identity, sort_keys=True, default=str).encode()).hexdigest()

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "config_sha256": self.sha256, "identity": self.identity}

    @classmethod
    def read(cls, folder: Path) -> Optional["RunRecord"]:
        data = read_json(folder / RUN_RECORD)
        return cls(data["run_id"], data["identity"]) if data else None


def run_identity(cfg, inputs: Optional[dict] = None) -> dict:
    """What a checkpoint must match to be resumed: the config (but for RESUMABLE_KEYS) and, by content, what
    the run reads (`inputs`, e.g. the latent cache's hash: the same path may hold another cache by then)."""
    identity = {key: value for key, value in to_dict(cfg).items() if key not in RESUMABLE_KEYS}
    return {**identity, "inputs": inputs} if inputs else identity


def checkpoint_folders(layout: TrainingRunLayout) -> list[tuple[int, Path]]:
    """(step, folder) of every finished checkpoint in the run folder, oldest first."""
    root = layout.checkpoints
    if not root.is_dir():
        return []
    found = [(int(p.name[len(CHECKPOINT_PREFIX):]), p) for p in root.glob(f"{CHECKPOINT_PREFIX}*")
             if p.is_dir() and p.name[len(CHECKPOINT_PREFIX):].isdigit()]
    return sorted(found)


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        flat.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
    return flat


def differences(theirs: dict, ours: dict) -> str:
    """'key: a vs b, ...' over the flattened keys where two identities differ."""
    a, b = _flat(theirs), _flat(ours)
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return ", ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys[:6]) + (" ..." if len(keys) > 6 else "")


def _resume_target(layout: TrainingRunLayout, which: str) -> Optional[Path]:
    if which == "latest":
        found = checkpoint_folders(layout)
        return found[-1][1] if found else None
    path = Path(which)
    if not (path.is_dir() and path.name.startswith(CHECKPOINT_PREFIX) and path.name[len(CHECKPOINT_PREFIX):].isdigit()):
        raise MissingFileError(f"resume={which}: expected 'latest' or a folder {layout.checkpoints}/"
                               f"{CHECKPOINT_PREFIX}<N>")
    return path


def _check_same_run(found: Optional[RunRecord], identity: dict, where: Path) -> None:
    if found is None:
        raise RunFolderConflict(f"{where} holds no {RUN_RECORD}, so nothing says which run made it: resume from a "
                                f"checkpoint of this project's runs, or start over with overwrite=true")
    if found.identity != identity:
        raise RunFolderConflict(f"{where} belongs to a run with another config ({differences(found.identity, identity)}"
                                f"; checkpoint vs this run): resume it with its config, or start over in another "
                                f"output_dir (or with overwrite=true)")


def _start_over(layout: TrainingRunLayout) -> None:
    """overwrite=true: delete the checkpoints and the summary an earlier run of this project left."""
    for _, path in checkpoint_folders(layout):
        if not (path / RUN_RECORD).is_file():
            raise RunFolderConflict(f"overwrite=true deletes only what a run made, and {path} holds no {RUN_RECORD}: "
                                    f"remove it yourself or choose another output_dir")
    for _, path in checkpoint_folders(layout):
        remove(path)
    remove(layout.summary)


def _decide(cfg, layout: TrainingRunLayout, inputs: Optional[dict]) -> tuple[RunRecord, Optional[Path]]:
    """(this run's record, the checkpoint to resume from or None), or a refusal."""
    identity, checkpoints = run_identity(cfg, inputs), checkpoint_folders(layout)
    if not cfg.resume:
        if cfg.overwrite:
            _start_over(layout)
        elif checkpoints or layout.summary.is_file():
            found = (f"checkpoints at steps {', '.join(str(s) for s, _ in checkpoints)}" if checkpoints
                     else f"a finished run's {layout.summary.name}")
            raise RunFolderConflict(f"output_dir {layout.root} holds an earlier run ({found}): resume=latest "
                                    f"continues it, overwrite=true starts over (deleting them), or choose another "
                                    f"output_dir")
        return RunRecord(uuid.uuid4().hex, identity), None
    target = _resume_target(layout, cfg.resume)
    if target is None:
        if layout.summary.is_file():  # starting afresh would train again and replace its export
            step = (read_json(layout.summary) or {}).get("step", "?")
            raise RunFolderConflict(f"output_dir {layout.root} holds a run that finished at step {step} "
                                    f"({layout.summary.name}) and no checkpoint to continue from: its model is "
                                    f"exported; overwrite=true trains again, or choose another output_dir")
        return RunRecord(uuid.uuid4().hex, identity), None
    found = RunRecord.read(target)
    _check_same_run(found, identity, target)
    return RunRecord(found.run_id, identity), target


def claim_run_folder(accelerator: Accelerator, cfg, layout: TrainingRunLayout, inputs: Optional[dict] = None):
    """Lock the run folder, check it against `cfg` and save the run's config (the main process decides).

    Returns (the lock, None off the main process; this run's record; the checkpoint to resume from or None)."""
    held = []

    def decide() -> tuple[RunRecord, Optional[str]]:
        held.append(hold_folder(layout.root, "training run"))
        sweep_temporaries(layout.checkpoints)
        record, target = _decide(cfg, layout, inputs)
        save_config(cfg, layout.config)
        return record, str(target) if target else None

    try:
        record, target = decide_on_main(accelerator, decide)
    except UserError:
        for lock in held:
            lock.release()
        raise
    return (held[0] if held else None), record, Path(target) if target else None
