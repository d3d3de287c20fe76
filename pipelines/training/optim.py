"""What the loop optimises: a model with its optimizer, learning-rate schedule and gradient clipping."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional

import torch
from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader
from torch.utils.data import IterableDataset

from ..common.errors import ConfigError
from .run_config import LR_SCHEDULES


@dataclass
class Part:
    """One optimised model of a run. The loop steps it from `active_from` on, clipping its gradients to
    `max_grad_norm` (0: no clipping) from `clip_from` on."""

    name: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    max_grad_norm: float = 0.0
    clip_from: int = 0
    active_from: int = 0

    def clip(self, accelerator: Accelerator, step: int) -> Optional[float]:
        """Clip the gradients (from `clip_from` on); returns their norm before clipping."""
        return clip_grad_norm(accelerator, self.model.parameters(), self.max_grad_norm if step >= self.clip_from else 0)

    def apply(self) -> None:
        """Step the optimizer and the schedule, zero the gradients."""
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def discard(self) -> None:
        """Drop the gradients of a step that must not reach the weights."""
        self.optimizer.zero_grad(set_to_none=True)


def adamw(model: torch.nn.Module, lr: float, weight_decay: float, **kwargs) -> torch.optim.AdamW:
    """AdamW whose weight decay skips what should not be pulled to zero: biases, norm gains, embedding tables and
    any gain-like tensor (at most one dimension longer than 1, as IV-VAE's (C, 1, 1, 1) RMS gains and LeanVAE's
    ISTA step sizes are). Fused (one kernel for all tensors): on a CPU, torch's default per-tensor loop costs
    ~12 ms a step for the 120-270 tensors of a small VAE, the fused kernel ~2.3."""
    exempt = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    groups: tuple[list, list] = ([], [])
    for p in model.parameters():
        if p.requires_grad:
            groups[id(p) in exempt or sum(s > 1 for s in p.shape) <= 1].append(p)
    return torch.optim.AdamW([{"params": groups[0], "weight_decay": weight_decay},
                              {"params": groups[1], "weight_decay": 0.0}], lr=lr, fused=True, **kwargs)


def prepare_parts(accelerator: Accelerator, parts: list[Part], loader):
    """`accelerator.prepare` every part's model, optimizer and schedule and the loader, in one call (DeepSpeed
    needs model and optimizer together); the parts are updated in place. Returns the prepared loader.

    A loader of a stream (IterableDataset) is only put on the device: the stream holds this process's part
    already, and accelerate would have every process read all of it and keep every n-th batch."""
    n, stream = len(parts), isinstance(loader.dataset, IterableDataset)
    prepared = accelerator.prepare(*[p.model for p in parts], *[p.optimizer for p in parts],
                                   *[p.scheduler for p in parts], *([] if stream else [loader]))
    prepared = prepared if isinstance(prepared, tuple) else (prepared,)
    for i, part in enumerate(parts):
        part.model, part.optimizer, part.scheduler = prepared[i], prepared[n + i], prepared[2 * n + i]
    if stream:
        return prepare_data_loader(loader, accelerator.device, num_processes=1, process_index=0, put_on_device=True)
    return prepared[-1]


def lr_scheduler(optimizer: torch.optim.Optimizer, schedule: str, warmup_steps: int, total_steps: int,
                 min_lr_ratio: float = 0.0) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up over `warmup_steps`, then constant, or a half cosine down to `min_lr_ratio` times the
    optimizer's learning rate at `total_steps` (transformers' schedules; step it once per optimizer step)."""
    from transformers.optimization import (get_constant_schedule_with_warmup,
                                           get_cosine_with_min_lr_schedule_with_warmup)

    if schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup_steps)
    if schedule == "cosine":
        return get_cosine_with_min_lr_schedule_with_warmup(optimizer, warmup_steps, max(total_steps, 1),
                                                           min_lr_rate=min_lr_ratio)
    raise ConfigError(f"lr schedule must be one of {', '.join(LR_SCHEDULES)}, got {schedule!r}")


def clip_grad_norm(accelerator: Accelerator, params: Iterable[torch.nn.Parameter], max_norm: float) -> Optional[float]:
    """Clip to `max_norm` (0: no clipping) and return the norm before clipping (None where accelerate has none).
    Under DeepSpeed the engine clips; this reads its norm."""
    norm = accelerator.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf)
    return None if norm is None else float(norm)
