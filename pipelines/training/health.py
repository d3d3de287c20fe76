"""What must not reach the weights: a step whose loss or gradient norm is not finite on any process.

Such a step is skipped - its gradients dropped, no optimizer, schedule or EMA update - and counted; the data
it read is consumed as usual, so a resumed run stays step-for-step equal to an uninterrupted one. A run of
`max_nonfinite_steps` skipped steps in a row stops the run: a diverged run does not come back by itself.

Under DeepSpeed the engine steps inside `backward`, before the loop can look: there the first non-finite step
stops the run. In fp16 a non-finite gradient is the loss scaler's business (it skips the step and lowers the
scale), so only the loss is checked.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

import torch
from accelerate import Accelerator

from ..common.errors import UserError


class NonFiniteTraining(UserError):
    """The run diverged: non-finite losses or gradients, step after step."""


class StepHealth:
    """Counts skipped steps and failed clip reads of a run; checkpoint it like any accelerate object."""

    def __init__(self, limit: int, check_gradients: bool):
        self.limit, self.check_gradients = limit, check_gradients
        self.skipped = self.in_a_row = self.failed_reads = 0

    def state_dict(self) -> dict:
        return {"skipped": self.skipped, "in_a_row": self.in_a_row, "failed_reads": self.failed_reads}

    def load_state_dict(self, state: dict) -> None:
        self.skipped, self.in_a_row = int(state["skipped"]), int(state["in_a_row"])
        self.failed_reads = int(state["failed_reads"])

    def finite(self, accelerator: Accelerator, losses: Iterable[float], norms: Iterable[Optional[float]],
               failed_reads: int = 0) -> bool:
        """Whether this step's losses (and gradient norms) are finite on every process; adds the clip reads that
        failed in this step on every process (in its DataLoader workers too) to the count. A collective call."""
        values = list(losses) + ([n for n in norms if n is not None] if self.check_gradients else [])
        local = torch.tensor([float(not all(math.isfinite(v) for v in values)), float(failed_reads)],
                             device=accelerator.device)
        bad, failed = accelerator.reduce(local, reduction="sum").tolist()
        self.failed_reads += int(failed)
        return bad == 0.0

    def passed(self) -> None:
        self.in_a_row = 0

    def skip(self, step: int, last_checkpoint: str, stop_now: bool = False) -> None:
        """Count a skipped step (`step` numbered as checkpoints are, from 1); raise NonFiniteTraining when the
        run must stop."""
        self.skipped += 1
        self.in_a_row += 1
        if stop_now or self.in_a_row >= self.limit:
            what = "this step" if stop_now else f"{self.in_a_row} steps in a row"
            raise NonFiniteTraining(
                f"step {step}: {what} had a non-finite loss or gradient norm ({self.skipped} skipped in all), "
                f"so the run stops; the last good checkpoint is {last_checkpoint}. Lower learning_rate or grad_clip, "
                f"or lengthen lr_warmup_steps, and resume from it")
