"""What every training script here shares: config + CLI, accelerate setup, atomic checkpoints with exact
resume, an endless seeded batch stream, learning-rate schedules, EMA, replica checks and model export.

Exact resume: `accelerator.save_state` stores models, optimizers, schedulers and registered objects (EMA,
GAN balance terms). Nothing in a run draws from a global RNG after set-up: the data order comes from
accelerate's seedable sampler (seed + epoch), each data item from a generator keyed by (seed, epoch, index)
(`EpochSeededDataset`), and in-step noise from generators keyed by (seed, rank, micro-step)
(`keyed_generator`). A resumed run skips the batches it had already consumed in the current epoch, so it
sees exactly the batches and noise of an uninterrupted run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, TypeVar

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import (DataLoaderConfiguration, DistributedType, GradientAccumulationPlugin, ProjectConfiguration,
                               gather_object, set_seed)
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .config import ConfigError, load_config, save_config, to_dict

T = TypeVar("T")
CHECKPOINT_PREFIX = "step_"
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class RunConfig:
    """Keys every training run has (top level of the YAML file, overridable as `key=value`)."""

    output_dir: str = "runs/default"
    seed: int = 0
    max_steps: int = 1000  # optimizer steps
    batch_size: int = 4  # per process and micro-step
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # no | bf16 | fp16
    num_workers: int = 0
    learning_rate: float = 1e-4
    lr_schedule: str = "constant"  # constant | cosine (to min_learning_rate at max_steps); both after warm-up
    lr_warmup_steps: int = 0
    min_learning_rate: float = 0.0
    grad_clip: float = 1.0  # max global grad norm; 0 turns clipping off
    ema_decay: float = 0.999  # 0 makes the EMA a copy of the weights
    log_every: int = 10
    checkpoint_every: int = 500  # 0: no intermediate checkpoints
    checkpoints_total_limit: int = 3
    resume: Optional[str] = None  # None | "latest" | a checkpoint folder
    report_to: str = "tensorboard"  # tensorboard | none

    def __post_init__(self) -> None:
        for key in ("max_steps", "batch_size", "gradient_accumulation_steps", "log_every", "checkpoints_total_limit"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("num_workers", "lr_warmup_steps", "checkpoint_every", "grad_clip", "min_learning_rate"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        choices = {"mixed_precision": ("no", "bf16", "fp16"), "lr_schedule": LR_SCHEDULES,
                   "report_to": ("tensorboard", "none")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.min_learning_rate > self.learning_rate:
            raise ConfigError(f"min_learning_rate {self.min_learning_rate} exceeds learning_rate {self.learning_rate}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


def parse_cli(config_cls: type[T], default_config: Path, argv: Optional[Sequence[str]] = None,
              description: str = "") -> T:
    """`script.py [--config FILE] [--resume latest|PATH] [key=value ...]` -> a resolved config."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", type=Path, default=default_config, help=f"YAML config (default: {default_config})")
    parser.add_argument("--resume", default=None, help="'latest' or a checkpoint folder to continue from")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override any config key, e.g. max_steps=100")
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + ([f"resume={args.resume}"] if args.resume else [])
    try:
        return load_config(config_cls, args.config, overrides)
    except ValueError as err:  # ConfigError, or a section's own check (e.g. LossConfig)
        parser.error(str(err))


def setup_accelerator(cfg: RunConfig, project: str) -> Accelerator:
    """An Accelerator for `cfg`: the run config wins over launcher settings (accumulation, clipping, batch)."""
    output = Path(cfg.output_dir)
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        # A step is always `gradient_accumulation_steps` micro-steps, also across an epoch's end: that keeps
        # step <-> batch bookkeeping (and so exact resume) simple.
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=cfg.gradient_accumulation_steps,
                                                                sync_with_dataloader=False),
        log_with=None if cfg.report_to == "none" else cfg.report_to,
        project_config=ProjectConfiguration(project_dir=str(output), logging_dir=str(output / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
        # Schedules count optimizer steps, whatever the number of processes.
        step_scheduler_with_optimizer=False,
    )
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        _configure_deepspeed(accelerator, cfg)
    set_seed(cfg.seed)  # same seed on every process: replicas start identical, DDP keeps them so
    if accelerator.is_main_process:
        save_config(cfg, output / "config.yaml")
    if cfg.report_to != "none":
        accelerator.init_trackers(project, config=_flat_hparams(to_dict(cfg)))
    return accelerator


def _configure_deepspeed(accelerator: Accelerator, cfg: RunConfig) -> None:
    """Write the run's batch, accumulation and clipping into the DeepSpeed config before `prepare`.

    Giving the micro-batch explicitly also keeps DeepSpeed's train-batch check happy on several processes.
    """
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    wanted = {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "train_batch_size": cfg.batch_size * cfg.gradient_accumulation_steps * accelerator.num_processes,
        "gradient_clipping": cfg.grad_clip,
    }
    for key, value in wanted.items():
        if ds.get(key, "auto") not in ("auto", value):
            accelerator.print(f"DeepSpeed config {key}={ds[key]} replaced by the run config's {value}")
        ds[key] = value


def _flat_hparams(tree: dict, prefix: str = "") -> dict:
    """Tensorboard hparams take scalars only: flatten sections, stringify the rest."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat_hparams(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


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


class Checkpoints:
    """`<output_dir>/checkpoints/step_<N>` folders written atomically, newest `limit` kept."""

    def __init__(self, output_dir: str | Path, limit: int):
        self.root = Path(output_dir) / "checkpoints"
        self.limit = limit

    def all(self) -> list[tuple[int, Path]]:
        if not self.root.is_dir():
            return []
        found = [(int(p.name[len(CHECKPOINT_PREFIX):]), p) for p in self.root.glob(f"{CHECKPOINT_PREFIX}*")
                 if p.is_dir() and p.name[len(CHECKPOINT_PREFIX):].isdigit()]
        return sorted(found)

    def save(self, accelerator: Accelerator, step: int) -> Path:
        final = self.root / f"{CHECKPOINT_PREFIX}{step:08d}"
        tmp = self.root / f".tmp-{CHECKPOINT_PREFIX}{step:08d}"
        if accelerator.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))  # a kill here leaves only a .tmp folder, never a half checkpoint
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            for _, old in self.all()[: -self.limit]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final

    def resume(self, accelerator: Accelerator, which: Optional[str]) -> int:
        """Load `which` ('latest' or a folder) and return its step; 0 when there is nothing to resume."""
        if not which:
            return 0
        if which == "latest":
            found = self.all()
            if not found:
                accelerator.print(f"No checkpoint in {self.root}; starting from step 0.")
                return 0
            step, path = found[-1]
        else:
            path = Path(which)
            name = path.name[len(CHECKPOINT_PREFIX):]
            if not path.is_dir() or not path.name.startswith(CHECKPOINT_PREFIX) or not name.isdigit():
                raise FileNotFoundError(f"resume={which}: expected 'latest' or a folder {self.root}/step_<N>")
            step = int(name)
        accelerator.load_state(str(path))
        accelerator.print(f"Resumed from {path} (step {step}).")
        return step


def keyed_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed that depends only on (seed, *keys), well mixed even for neighbouring keys."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(1, dtype=np.uint64)[0]
    return int(state) & 0x7FFF_FFFF_FFFF_FFFF


def keyed_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator seeded by (seed, *keys): randomness that needs no state to checkpoint."""
    return torch.Generator().manual_seed(keyed_seed(seed, *keys))


class EpochSeededDataset(Dataset):
    """Wraps a data set so that item i of epoch e draws from torch's RNG seeded by (seed, e, i).

    Random crops and flips of the wrapped data set then depend neither on the worker that loads the item
    nor on what was loaded before: an item is the same in an interrupted and an uninterrupted run.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(keyed_seed(self.seed, self.epoch, index))
            return self.dataset[index]


def endless_batches(accelerator: Accelerator, loader, start_micro_step: int) -> Iterator:
    """Batches forever, epoch after epoch, starting at micro-step `start_micro_step` of that stream.

    The seedable sampler shuffles epoch e with seed + e, and an `EpochSeededDataset` is told the epoch, so
    the stream is the same whether or not the run was interrupted.
    """
    per_epoch = len(loader)
    if per_epoch == 0:
        raise ValueError("the data loader is empty: the data set has fewer clips than one batch per process "
                         f"({len(loader.dataset)} clips)")
    epoch, skip = divmod(start_micro_step, per_epoch)
    while True:
        if hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(epoch)  # before the iterator starts: workers get a copy with this epoch
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        batches.set_epoch(epoch)
        yield from batches
        epoch, skip = epoch + 1, 0


class RunningMeans:
    """Sums of logged scalars between two log steps, averaged over steps and processes on `pop`."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, values: dict[str, torch.Tensor | float]) -> None:
        for key, value in values.items():
            value = torch.as_tensor(value, dtype=torch.float64).detach()
            self.sums[key] = self.sums.get(key, 0) + value.cpu()
            self.counts[key] = self.counts.get(key, 0) + 1

    def pop(self, accelerator: Accelerator) -> dict[str, float]:
        """Means since the last pop; a collective call: every process must call it at the same step."""
        keys = sorted(self.sums)
        local = torch.stack([self.sums[k] / self.counts[k] for k in keys]) if keys else torch.zeros(0)
        means = accelerator.reduce(local.to(accelerator.device), reduction="mean") if keys else local
        self.sums, self.counts = {}, {}
        return dict(zip(keys, means.tolist()))


def progress(accelerator: Accelerator, start: int, total: int, desc: str) -> tqdm:
    return tqdm(total=total, initial=start, desc=desc, disable=not accelerator.is_local_main_process,
                dynamic_ncols=True, unit="step")


def clip_grad_norm(accelerator: Accelerator, params: Iterable[torch.nn.Parameter], max_norm: float) -> Optional[float]:
    """Clip to `max_norm` (0: no clipping) on the last micro-step of an accumulation; returns the norm
    before clipping (None on other micro-steps). Under DeepSpeed the engine clips; this reads its norm."""
    if not accelerator.sync_gradients:
        return None
    norm = accelerator.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf)
    return None if norm is None else float(norm)


@contextmanager
def ema_weights(ema, params: Sequence[torch.nn.Parameter]):
    """Temporarily load an EMAModel's weights into `params` (bit-exact restore afterwards)."""
    params = list(params)
    ema.store(params)
    ema.copy_to(params)
    try:
        yield
    finally:
        ema.restore(params)


def state_checksum(*tensor_groups: Iterable[torch.Tensor]) -> str:
    """sha256 over the bytes of every tensor, in order: equal iff the states are bit-identical."""
    digest = hashlib.sha256()
    for group in tensor_groups:
        for tensor in group:
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_replicas(accelerator: Accelerator, checksum: str) -> list[str]:
    """Gather every process's state checksum; raise if data-parallel replicas have drifted apart."""
    checksums = gather_object([checksum])
    if len(set(checksums)) > 1:
        raise RuntimeError(f"data-parallel replicas differ after training: checksums per rank {checksums}")
    return checksums


def deepspeed_safe_parameters(model: torch.nn.Module) -> torch.nn.Module:
    """Make `model` acceptable to DeepSpeed, in place: its engine broadcasts every parameter as a byte view,
    which fails for non-contiguous and for 0-dim tensors, so those become contiguous and shape (1,).
    Values are unchanged, and (1,) broadcasts like a scalar in the forward pass; copy weights back into an
    unmodified model with `param.copy_(other.reshape(param.shape))`."""
    for param in model.parameters():
        if not param.is_contiguous() or param.ndim == 0:
            param.data = param.data.contiguous().reshape(param.shape or (1,))
    return model


def export_pretrained(model, path: str | Path) -> Path:
    """`save_pretrained` into a temp folder, then rename: a reader never sees a half-written model."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path


def write_json(path: str | Path, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)
    return path
