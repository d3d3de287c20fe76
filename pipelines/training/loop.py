"""`Trainer`: the one training loop. A trainer supplies its data, its models and its micro-step; the loop does
the rest - accelerate set-up and `prepare`, the float32 EMA of the main model, checkpoints and exact resume,
gradient accumulation, clipping and optimizer steps, logging, the replica check, the export and the summary.

One optimizer step reads as one block (`_train_step`): `gradient_accumulation_steps` micro-steps, each a
forward and backward inside `accelerator.accumulate` (which skips DDP's gradient sync until the last), then
clipping and a step of every active `Part`. In-step randomness comes from a generator keyed by (seed, rank,
micro-step) and the global RNG is seeded from the same keys around it, so a resumed run equals an
uninterrupted one bit for bit.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any, Iterator

import torch
from accelerate.utils import DistributedType
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ..common.files import write_json
from ..common.layout import TrainingRunLayout
from ..common.seeding import keyed_generator, keyed_global_rng, keyed_seed
from ..data.clip_dataset import collate_clips
from .accelerator import check_replicas, setup_accelerator, start_trackers, state_checksum
from .batches import EpochSeededDataset, endless_batches
from .checkpoints import Checkpoints, NonFiniteState, nonfinite_names
from .ema import FloatEMA
from .health import StepHealth
from .monitor import RunningMeans, Throughput, count_flops, progress
from .optim import Part, prepare_parts
from .run_config import RunConfig
from .run_folder import claim_run_folder


class Trainer(ABC):
    """One run of `cfg`. `parts[0]` is the main model: the one averaged by the EMA and exported."""

    name = "train"  # the tracker's project and the progress bar's label
    postfix_keys: tuple[str, ...] = ("loss/total",)  # logged values shown on the progress bar

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.layout = TrainingRunLayout(cfg.output_dir)
        self.accelerator = acc = setup_accelerator(cfg)
        self.lock, record, resume_from = claim_run_folder(acc, cfg, self.layout, self.inputs())
        try:
            self._build(record, resume_from)
        except BaseException:
            self.release()
            raise

    def _build(self, record, resume_from) -> None:
        cfg, acc = self.cfg, self.accelerator
        start_trackers(acc, cfg, self.name)
        with acc.main_process_first():
            data = self.build_dataset()
        # A stream (IterableDataset) is already this process's part, endless and deterministic (resumed by
        # fast-forwarding); an indexed data set is shuffled by accelerate's seedable sampler.
        self.streaming = isinstance(data, IterableDataset)
        self.train_set = data if self.streaming else EpochSeededDataset(data, cfg.seed)
        loader = DataLoader(self.train_set, batch_size=cfg.batch_size, shuffle=not self.streaming, drop_last=True,
                            num_workers=cfg.num_workers, collate_fn=collate_clips)
        self.parts = self.build_parts()
        self.loader = prepare_parts(acc, self.parts, loader)
        self.model = acc.unwrap_model(self.parts[0].model, keep_torch_compile=False)
        self.ema = FloatEMA(self.model, cfg.ema_decay)
        self.throughput = Throughput(acc, cfg.mixed_precision, cfg.batch_size * acc.num_processes)
        self.health = StepHealth(cfg.max_nonfinite_steps, check_gradients=cfg.mixed_precision != "fp16")
        for obj in (self.ema, self.throughput, self.health, *self.checkpointed_state()):
            acc.register_for_checkpointing(obj)
        self.checkpoints = Checkpoints(self.layout, cfg.checkpoints_total_limit, record)
        if cfg.resume and resume_from is None:
            acc.print(f"No checkpoint in {self.layout.checkpoints}; starting from step 0.")
        self.step = self.checkpoints.load(acc, resume_from) if resume_from else 0
        self.ema.to(acc.device)  # load_state puts registered objects on the CPU
        self.last_logs: dict[str, float] = {}

    # ------------------------------------------------------------------ what a trainer supplies
    def inputs(self) -> dict:
        """What the run reads besides its config, by content (hashes): a checkpoint resumes only with the same."""
        return {}

    @abstractmethod
    def build_dataset(self) -> Dataset:
        """The training data set (main process first; items may draw from torch's RNG: they are keyed)."""

    @abstractmethod
    def build_parts(self) -> list[Part]:
        """The models to optimise, unprepared; the first is the main model."""

    @abstractmethod
    def micro_step(self, batch: Any, generator: torch.Generator) -> dict[str, torch.Tensor | float]:
        """Forward and `accelerator.backward` on one micro-batch; returns the values to log. Draw any noise
        from `generator`."""

    @abstractmethod
    def export(self, model: torch.nn.Module) -> dict:
        """Save the final model (the main model with the EMA weights; main process only); returns summary entries."""

    def describe(self) -> str:
        """The line printed when the run starts."""
        params = sum(p.numel() for p in self.model.parameters())
        items = "streamed training items" if self.streaming else f"{len(self.train_set)} training items"
        return f"{type(self.model).__name__} ({params / 1e6:.2f} M parameters), {items}"

    def checkpointed_state(self) -> list:
        """Objects with state_dict() beyond models, optimizers and schedulers that checkpoints must hold."""
        return []

    def after_step(self) -> None:
        """Called after every optimizer step, on every process (validation, sample videos)."""

    # ------------------------------------------------------------------ the loop
    def release(self) -> None:
        """Give up the run folder (also when the process ends, however it ends)."""
        if self.lock is not None:
            self.lock.release()

    def run(self) -> dict:
        try:
            return self._run()
        finally:
            self.release()

    def _run(self) -> dict:
        cfg, acc = self.cfg, self.accelerator
        acc.print(f"{self.describe()}; {cfg.clips_per_step * acc.num_processes} clips per step on "
                  f"{acc.num_processes} process(es)")
        batches = endless_batches(acc, self.loader, self.step * cfg.gradient_accumulation_steps)
        means, bar = RunningMeans(), progress(acc, self.step, cfg.max_steps, self.name)
        start_step, start_time = self.step, time.perf_counter()
        self.throughput.start()
        with bar:  # closed (its line ended) before any error is printed
            while self.step < cfg.max_steps:
                self._train_step(batches, means)
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    self._log(means.pop(acc) | self.throughput.logs(), bar)
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.checkpoints.save(acc, self.step, self._weights())
                self.after_step()
        return self._finish(time.perf_counter() - start_time, start_step)

    def _train_step(self, batches: Iterator, means: RunningMeans) -> None:
        """One optimizer step: accumulate the micro-steps' gradients, then clip and step every active part, or
        drop the step if a loss or gradient norm is not finite on any process."""
        cfg, acc = self.cfg, self.accelerator
        active = [part for part in self.parts if self.step >= part.active_from]
        step_logs, failed_reads = [], 0
        for i in range(cfg.gradient_accumulation_steps):
            micro = self.step * cfg.gradient_accumulation_steps + i
            generator = keyed_generator(cfg.seed, acc.process_index, micro)
            batch = next(batches)
            failed_reads += len(batch.pop("read_failures"))
            # Dropout and any other global-RNG draw inside the step are keyed too.
            with acc.accumulate(*[part.model for part in active]), keyed_global_rng(
                    keyed_seed(cfg.seed, acc.process_index, micro, 1), acc.device):
                if self.step == 0 and i == 0:
                    logs, self.throughput.flops_per_micro_step = count_flops(lambda: self.micro_step(batch, generator))
                else:
                    logs = self.micro_step(batch, generator)
            step_logs.append(logs)
            self.throughput.add(1)
        norms = {f"grad_norm/{part.name}": part.clip(acc, self.step) for part in active}
        losses = [float(v) for logs in step_logs for k, v in logs.items() if k.startswith("loss/")]
        finite = self.health.finite(acc, losses, norms.values(), failed_reads)
        if finite:
            for part in active:
                part.apply()
            self.ema.step()
            for logs in step_logs:
                means.add(logs)
            means.add({k: v for k, v in norms.items() if v is not None})
            self.health.passed()
        else:
            for part in active:
                part.discard()
            last = self.checkpoints.mine()
            self.health.skip(self.step + 1, str(last[-1]) if last else "none (no checkpoint was saved)",
                             stop_now=acc.distributed_type == DistributedType.DEEPSPEED)
        self.step += 1

    def _weights(self) -> dict[str, torch.Tensor]:
        """Every tensor a checkpoint or an export holds that must be finite: the models' and the EMA's."""
        named = {f"{p.name}.{n}": t for p in self.parts for n, t in p.model.named_parameters()}
        return named | {f"ema.{i}": t for i, t in enumerate(self.ema.shadow_params)}

    def _log(self, values: dict[str, float], bar) -> None:
        for part in self.parts:
            values[f"lr/{part.name}"] = part.scheduler.get_last_lr()[0]
        self.accelerator.log(values, step=self.step)
        self.last_logs = values
        values["train/skipped_steps"], values["data/failed_reads"] = self.health.skipped, self.health.failed_reads
        shown = {key.split("/")[-1]: f"{values[key]:.4g}" for key in self.postfix_keys if key in values}
        bar.set_postfix(**shown, clips_s=f"{values['train/clips_per_s']:.2f}", mfu=f"{values['perf/mfu']:.0%}")

    # ------------------------------------------------------------------ the end of the run
    def _finish(self, seconds: float, start_step: int) -> dict:
        cfg, acc = self.cfg, self.accelerator
        checksums = check_replicas(acc, state_checksum(*[p.model.parameters() for p in self.parts],
                                                       self.ema.shadow_params))
        summary = {}
        if acc.is_main_process:
            steps = self.step - start_step
            final = self.ema.copy(acc.device)
            bad = nonfinite_names(final.named_parameters())
            if bad:
                raise NonFiniteState(f"refusing to export non-finite EMA weights ({', '.join(bad[:5])})")
            summary = {"step": self.step, "steps_this_run": steps, "seconds": round(seconds, 2),
                       "clips_per_s": round(steps * cfg.clips_per_step * acc.num_processes / max(seconds, 1e-9), 3),
                       "num_processes": acc.num_processes, "distributed_type": str(acc.distributed_type),
                       "logs": self.last_logs, "replica_checksums": checksums,
                       "skipped_steps": self.health.skipped, "failed_reads": self.health.failed_reads,
                       "run": self.checkpoints.record.to_json()}
            summary |= self.export(final)
            write_json(self.layout.summary, summary)
        acc.wait_for_everyone()
        acc.end_training()
        return summary
