"""Setting up accelerate for a run (the run config wins over launcher settings), DeepSpeed's needs, and the
check that data-parallel replicas ended bit-identical."""

from __future__ import annotations

import hashlib
from typing import Callable, Iterable, TypeVar

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import (DataLoaderConfiguration, DistributedType, GradientAccumulationPlugin, ProjectConfiguration,
                              TorchDynamoPlugin, broadcast_object_list, gather_object, parse_flag_from_env, set_seed)

from ..common.config import to_dict
from ..common.device_speed import AUTO_BF16_SPEEDUP, bf16_speedup
from ..common.errors import UserError
from ..common.layout import TrainingRunLayout
from .run_config import RunConfig


T = TypeVar("T")


def resolve_mixed_precision(requested: str) -> tuple[str, str]:
    """(the precision to run, a line saying why): "auto" becomes "bf16" or "no" as the main process measures on
    its device, and every process runs that decision; the rest stays."""
    if requested != "auto":
        return requested, ""
    # The state exactly as the Accelerator will make it (CPU processes of a launcher need the flag to find
    # each other), made first so that the main process can measure and tell the others.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    decision = [None, None]
    if state.is_main_process:
        speedup = bf16_speedup(state.device)
        precision = "bf16" if speedup >= AUTO_BF16_SPEEDUP else "no"
        decision = [precision, f"mixed_precision=auto: {precision} (a bfloat16 matmul runs {speedup:.1f}x a "
                               f"float32 one)"]
    return tuple(broadcast_object_list(decision))


def setup_accelerator(cfg: RunConfig) -> Accelerator:
    """An Accelerator for `cfg`: its accumulation, precision, seeded data order and tracker settings."""
    layout = TrainingRunLayout(cfg.output_dir)
    cfg.mixed_precision, note = resolve_mixed_precision(cfg.mixed_precision)  # the saved config says what ran
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        # A step is always `gradient_accumulation_steps` micro-steps, also across an epoch's end: that keeps
        # step <-> batch bookkeeping (and so exact resume) simple.
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=cfg.gradient_accumulation_steps,
                                                                sync_with_dataloader=False),
        log_with=None if cfg.report_to == "none" else cfg.report_to,
        project_config=ProjectConfiguration(project_dir=str(layout.root), logging_dir=str(layout.logs)),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
        # Schedules count optimizer steps, whatever the number of processes.
        step_scheduler_with_optimizer=False,
        # `prepare` compiles the models or not as the run config says, whatever `accelerate config` chose.
        dynamo_plugin=TorchDynamoPlugin(backend="inductor" if cfg.compile else "no"),
    )
    if note:
        accelerator.print(note)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        _configure_deepspeed(accelerator, cfg)
    set_seed(cfg.seed)  # same seed on every process: replicas start identical, DDP keeps them so
    return accelerator


def decide_on_main(accelerator: Accelerator, decide: Callable[[], T]) -> T:
    """Run `decide` on the main process only and hand its (picklable) result to every process; a UserError it
    raises is raised on every process, so all of them stop together instead of waiting for the main one."""
    outcome: list = [None, None]
    if accelerator.is_main_process:
        try:
            outcome = [decide(), None]
        except UserError as err:
            outcome = [None, (type(err), str(err))]
    result, error = broadcast_object_list(outcome)
    if error:
        raise error[0](error[1])
    return result


def start_trackers(accelerator: Accelerator, cfg: RunConfig, project: str) -> None:
    """Open the run's trackers (tensorboard logs); only once the run owns its folder."""
    if cfg.report_to != "none":
        accelerator.init_trackers(project, config=_flat_hparams(to_dict(cfg)))


def _configure_deepspeed(accelerator: Accelerator, cfg: RunConfig) -> None:
    """Write the run's batch, accumulation and clipping into the DeepSpeed config before `prepare`.

    Giving the micro-batch explicitly also keeps DeepSpeed's train-batch check happy on several processes.
    """
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    wanted = {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "train_batch_size": cfg.clips_per_step * accelerator.num_processes,
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


def deepspeed_safe_parameters(model: torch.nn.Module) -> torch.nn.Module:
    """Make `model` acceptable to DeepSpeed, in place: its engine broadcasts every parameter as a byte view,
    which fails for non-contiguous and for 0-dim tensors, so those become contiguous and shape (1,).
    Values are unchanged, and (1,) broadcasts like a scalar in the forward pass; copy weights back into an
    unmodified model with `param.copy_(other.reshape(param.shape))`."""
    for param in model.parameters():
        if not param.is_contiguous() or param.ndim == 0:
            param.data = param.data.contiguous().reshape(param.shape or (1,))
    return model


def state_checksum(*tensor_groups: Iterable[torch.Tensor]) -> str:
    """sha256 over the bytes of every tensor, in order: equal iff the states are bit-identical."""
    digest = hashlib.sha256()
    for group in tensor_groups:
        for tensor in group:
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class ReplicasDiverged(RuntimeError):
    """Data-parallel replicas hold different weights at the end of a run: a bug, never a user's mistake."""


def check_replicas(accelerator: Accelerator, checksum: str) -> list[str]:
    """Gather every process's state checksum (a collective call); raise on every process if any differ."""
    checksums = gather_object([checksum])
    if len(set(checksums)) > 1:
        raise ReplicasDiverged(f"data-parallel replicas differ after training: checksums per rank {checksums}")
    return checksums
