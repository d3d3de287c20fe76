"""Checkpoints of a run: `<output_dir>/checkpoints/step_<N>` folders from `accelerator.save_state`, written
atomically (a killed save leaves only a temporary folder, never a half checkpoint), newest `limit` kept."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from accelerate import Accelerator

from ..common.errors import MissingFileError
from ..common.files import commit, remove, temporary_path
from ..common.layout import CHECKPOINT_PREFIX, TrainingRunLayout


class Checkpoints:
    def __init__(self, layout: TrainingRunLayout, limit: int):
        self.layout = layout
        self.limit = limit

    def all(self) -> list[tuple[int, Path]]:
        """(step, folder) of every finished checkpoint, oldest first."""
        root = self.layout.checkpoints
        if not root.is_dir():
            return []
        found = [(int(p.name[len(CHECKPOINT_PREFIX):]), p) for p in root.glob(f"{CHECKPOINT_PREFIX}*")
                 if p.is_dir() and p.name[len(CHECKPOINT_PREFIX):].isdigit()]
        return sorted(found)

    def save(self, accelerator: Accelerator, step: int) -> Path:
        """A collective call: every process writes its part of the state into one temporary folder."""
        final = self.layout.checkpoint(step)
        tmp = temporary_path(final, per_process=False)
        if accelerator.is_main_process and tmp.exists():
            remove(tmp)  # left by a killed save
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            commit(tmp, final)
            for _, old in self.all()[: -self.limit]:
                remove(old)
        accelerator.wait_for_everyone()
        return final

    def resume(self, accelerator: Accelerator, which: Optional[str]) -> int:
        """Load `which` ('latest' or a folder) and return its step; 0 when there is nothing to resume."""
        if not which:
            return 0
        if which == "latest":
            found = self.all()
            if not found:
                accelerator.print(f"No checkpoint in {self.layout.checkpoints}; starting from step 0.")
                return 0
            step, path = found[-1]
        else:
            path = Path(which)
            name = path.name[len(CHECKPOINT_PREFIX):]
            if not path.is_dir() or not path.name.startswith(CHECKPOINT_PREFIX) or not name.isdigit():
                raise MissingFileError(f"resume={which}: expected 'latest' or a folder "
                                       f"{self.layout.checkpoints}/{CHECKPOINT_PREFIX}<N>")
            step = int(name)
        accelerator.load_state(str(path))
        accelerator.print(f"Resumed from {path} (step {step}).")
        return step
