"""LeanVAE training (DESIGN.md §2): L1 pixel + wavelet + LPIPS + KL losses, a late per-frame PatchGAN with
its own optimizer, Adam (0.5, 0.9) with warm-up and cosine decay, EMA, validation PSNR/SSIM, sample videos,
exact resume and data-parallel / DeepSpeed ZeRO-2 training through accelerate.

`train_vae.py` is the command line; `train(config)` is the whole run and returns its summary.
"""

from __future__ import annotations

import math
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

import torch
from accelerate.utils import DistributedType
from diffusers.training_utils import EMAModel
from torch.utils.data import DataLoader, Subset

from vae import VAE_PRESETS, LeanVAE
from vae.discriminator import NLayerDiscriminator
from vae.losses import LeanVAELoss, LossConfig

from .config import ConfigError
from .data import DataConfig, SkippedVideoWarning, build_dataset, validate_num_frames_for_vae
from .training import (Checkpoints, EpochSeededDataset, RunConfig, RunningMeans, check_replicas, clip_grad_norm,
                       deepspeed_safe_parameters, ema_weights, endless_batches, export_pretrained, keyed_generator,
                       lr_scheduler, parse_cli, progress, setup_accelerator, state_checksum, write_json)
from .vae_eval import reconstruct, reconstruction_metrics, write_comparison

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "vae" / "default.yaml"
SAMPLE_FPS = 8


@dataclass
class VAEModelConfig:
    """A `VAE_PRESETS` entry; any other key set here replaces that preset argument of `LeanVAE`."""

    preset: str = "lean-small"
    latent_channels: Optional[int] = None
    lc_dim: Optional[int] = None
    hc_dim: Optional[int] = None
    branch_layers: Optional[int] = None
    fusion_layers: Optional[int] = None
    ista_phases: Optional[int] = None
    ista_depth: Optional[int] = None

    def __post_init__(self) -> None:
        if self.preset not in VAE_PRESETS:
            raise ConfigError(f"model.preset '{self.preset}' is not one of {', '.join(VAE_PRESETS)}")

    def kwargs(self) -> dict:
        overrides = {k: v for k, v in vars(self).items() if k != "preset" and v is not None}
        return {**VAE_PRESETS[self.preset], **overrides}


@dataclass
class VAETrainConfig(RunConfig):
    """A VAE training run; defaults are the official LeanVAE recipe (configs/vae/*.yaml set the rest)."""

    output_dir: str = "runs/vae"
    learning_rate: float = 5e-5
    lr_schedule: str = "cosine"
    lr_warmup_steps: int = 5000
    min_learning_rate: float = 1e-5
    adam_beta1: float = 0.5
    adam_beta2: float = 0.9
    disc_learning_rate: Optional[float] = None  # None: learning_rate; its schedule spans disc_start..max_steps
    val_every: int = 500  # 0: validate only at the end
    val_clips: int = 4  # held out from the end of the data set
    sample_every: int = 1000  # 0: write sample videos only at the end
    scaling_clips: int = 32  # training clips whose latent std sets the exported scaling_factor; 0: keep 1.0
    model: VAEModelConfig = field(default_factory=VAEModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("val_every", "val_clips", "sample_every", "scaling_clips"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        try:
            validate_num_frames_for_vae(self.data.num_frames)
        except ValueError as err:
            raise ConfigError(f"data.num_frames: {err}") from None
        if self.data.resolution % 8:
            raise ConfigError(f"data.resolution must be a multiple of 8 for the VAE, got {self.data.resolution}")
        for key in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"{key} must be in [0, 1), got {getattr(self, key)}")

    @property
    def gan_used(self) -> bool:
        """Whether the discriminator is ever switched on in this run (else it is not even built)."""
        return self.loss.disc_weight > 0 and self.loss.disc_start < self.max_steps


def build_datasets(cfg: DataConfig, val_clips: int):
    """(data set, training subset, held-out validation subset or None): the last `val_clips` items are held
    out, read deterministically (centre clips, no flip)."""
    full = build_dataset(cfg)
    if val_clips >= len(full):
        raise ConfigError(f"val_clips={val_clips} leaves no training clip: the data set has {len(full)}")
    train = Subset(full, range(len(full) - val_clips))
    if not val_clips:
        return full, train, None
    with warnings.catch_warnings():  # the same videos as `full`: their skips were reported already
        warnings.simplefilter("ignore", SkippedVideoWarning)
        held = build_dataset(replace(cfg, clip_sampling="center", random_flip=False)) if (
            cfg.clip_sampling == "random" or cfg.random_flip) else full
    return full, train, Subset(held, range(len(held) - val_clips, len(held)))


@contextmanager
def frozen(module: Optional[torch.nn.Module]):
    """No parameter gradients for `module` inside (gradients still flow through it to its inputs)."""
    if module is None:
        yield
        return
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


class VAETrainer:
    """Holds the prepared models, optimizers and schedules of one run; `run()` trains and exports."""

    def __init__(self, cfg: VAETrainConfig):
        self.cfg = cfg
        self.accelerator = acc = setup_accelerator(cfg, "train_vae")
        if acc.distributed_type == DistributedType.DEEPSPEED and cfg.gan_used:
            raise ConfigError(
                "under DeepSpeed only the autoencoder can be trained (one engine, one model), but the "
                f"discriminator comes on at loss.disc_start={cfg.loss.disc_start} < max_steps={cfg.max_steps}. "
                "Train with the GAN through configs/accelerate/multi_gpu.yaml (DDP), or keep DeepSpeed for a "
                "VAE-only run: loss.disc_start >= max_steps or loss.disc_weight=0.")
        with acc.main_process_first():
            self.dataset, train_set, val_set = build_datasets(cfg.data, cfg.val_clips)
        self.train_set = EpochSeededDataset(train_set, cfg.seed)
        self.val_videos = torch.stack([val_set[i]["video"] for i in range(len(val_set))]) if val_set else None

        self.loss_fn = LeanVAELoss(cfg.loss).to(acc.device)  # raises LPIPSWeightsMissing when asked for LPIPS
        vae = LeanVAE(**cfg.model.kwargs())
        if acc.distributed_type == DistributedType.DEEPSPEED:
            deepspeed_safe_parameters(vae)
        betas = (cfg.adam_beta1, cfg.adam_beta2)
        min_ratio = cfg.min_learning_rate / cfg.learning_rate
        opt = torch.optim.Adam(vae.parameters(), lr=cfg.learning_rate, betas=betas)
        sched = lr_scheduler(opt, cfg.lr_schedule, cfg.lr_warmup_steps, cfg.max_steps, min_ratio)
        loader = DataLoader(self.train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                            num_workers=cfg.num_workers)
        if cfg.gan_used:
            disc = NLayerDiscriminator(base_channels=cfg.loss.disc_channels, n_layers=cfg.loss.disc_layers,
                                       norm_groups=math.gcd(32, cfg.loss.disc_channels))
            d_opt = torch.optim.Adam(disc.parameters(), lr=cfg.disc_learning_rate or cfg.learning_rate, betas=betas)
            d_sched = lr_scheduler(d_opt, cfg.lr_schedule, cfg.lr_warmup_steps, cfg.max_steps - cfg.loss.disc_start,
                                   min_ratio)
            (self.vae, self.disc, self.opt, self.d_opt, self.sched, self.d_sched, self.loader) = acc.prepare(
                vae, disc, opt, d_opt, sched, d_sched, loader)
        else:
            self.vae, self.opt, self.sched, self.loader = acc.prepare(vae, opt, sched, loader)
            self.disc = self.d_opt = self.d_sched = None
        self.vae_module = acc.unwrap_model(self.vae)
        self.disc_module = acc.unwrap_model(self.disc) if self.disc is not None else None
        self.ema = EMAModel(self.vae_module.parameters(), decay=cfg.ema_decay, foreach=True,
                            model_cls=LeanVAE, model_config=self.vae_module.config)
        acc.register_for_checkpointing(self.ema)
        if cfg.gan_used:
            acc.register_for_checkpointing(self.loss_fn.lecam)
        self.checkpoints = Checkpoints(cfg.output_dir, cfg.checkpoints_total_limit)
        self.step = self.checkpoints.resume(acc, cfg.resume)
        # load_state puts registered objects on the CPU; float32 keeps small EMA updates of bf16 weights
        # (DeepSpeed bf16 keeps the module itself in bf16) from rounding away.
        self.ema.to(acc.device, dtype=torch.float32)
        self.last_logs: dict[str, float] = {}
        self.last_val: dict[str, float] = {}

    # ------------------------------------------------------------------ one micro-step
    def _micro_step(self, x: torch.Tensor, micro: int) -> dict[str, torch.Tensor | float]:
        cfg, acc = self.cfg, self.accelerator
        gan_on = self.disc is not None and self.loss_fn.gan_active(self.step)
        noise = keyed_generator(cfg.seed, acc.process_index, micro)  # posterior sample, no RNG state to save
        models = (self.vae, self.disc) if self.disc is not None else (self.vae,)
        with acc.accumulate(*models):
            out = self.vae(x, generator=noise)
            # The generator loss sees the bare, frozen discriminator: no gradients reach it, and its DDP
            # wrapper is used only by the discriminator's own step.
            with frozen(self.disc_module), acc.autocast():
                loss, logs = self.loss_fn(x, out.sample, out.latent_dist, self.step,
                                          self.disc_module if gan_on else None)
            acc.backward(loss)
            logs = {f"loss/{k}": v for k, v in logs.items()}
            grad_norm = clip_grad_norm(acc, self.vae.parameters(), cfg.grad_clip)
            self.opt.step()
            if acc.sync_gradients:
                self.sched.step()
            self.opt.zero_grad(set_to_none=True)
            if gan_on:
                with acc.autocast():
                    d_loss, d_logs = self.loss_fn.discriminator_loss(x, out.sample, self.disc)
                acc.backward(d_loss)
                logs.update({f"disc/{k}": v for k, v in d_logs.items()})
                d_norm = clip_grad_norm(acc, self.disc.parameters(), cfg.grad_clip)
                self.d_opt.step()
                if acc.sync_gradients:
                    self.d_sched.step()
                self.d_opt.zero_grad(set_to_none=True)
                if d_norm is not None:
                    logs["train/disc_grad_norm"] = d_norm
        if grad_norm is not None:
            logs["train/grad_norm"] = grad_norm
        return logs

    # ------------------------------------------------------------------ the run
    def run(self) -> dict:
        cfg, acc = self.cfg, self.accelerator
        clips_per_step = cfg.batch_size * cfg.gradient_accumulation_steps * acc.num_processes
        params = sum(p.numel() for p in self.vae_module.parameters())
        acc.print(f"LeanVAE {cfg.model.preset} ({params / 1e6:.2f} M parameters); {len(self.train_set)} training "
                  f"clips, {0 if self.val_videos is None else len(self.val_videos)} held out; {clips_per_step} "
                  f"clips per step on {acc.num_processes} process(es); GAN "
                  f"{'from step ' + str(cfg.loss.disc_start) if cfg.gan_used else 'off'}")
        micro = self.step * cfg.gradient_accumulation_steps
        batches = endless_batches(acc, self.loader, micro)
        means = RunningMeans()
        bar = progress(acc, self.step, cfg.max_steps, "train_vae")
        start_step, start_time = self.step, time.perf_counter()
        while self.step < cfg.max_steps:
            logs = self._micro_step(next(batches)["video"], micro)
            micro += 1
            means.add(logs)
            if not acc.sync_gradients:
                continue
            self.step += 1
            self.ema.step(self.vae_module.parameters())
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                rate = (self.step - start_step) * clips_per_step / (time.perf_counter() - start_time)
                self._log(means.pop(acc), rate, bar)
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self.checkpoints.save(acc, self.step)
            last = self.step == cfg.max_steps
            val_due = last or bool(cfg.val_every and self.step % cfg.val_every == 0)
            sample_due = last or bool(cfg.sample_every and self.step % cfg.sample_every == 0)
            if self.val_videos is not None and (val_due or sample_due):
                self._validate(write_samples=sample_due)
        bar.close()
        return self._finish(time.perf_counter() - start_time, start_step)

    def _log(self, values: dict[str, float], clips_per_s: float, bar) -> None:
        values["lr/vae"] = self.sched.get_last_lr()[0]
        if self.d_sched is not None:
            values["lr/disc"] = self.d_sched.get_last_lr()[0]
        values["train/clips_per_s"] = clips_per_s
        self.accelerator.log(values, step=self.step)
        self.last_logs = values
        shown = {k.split("/")[-1]: f"{values[k]:.4g}" for k in ("loss/total", "loss/pixel", "disc/disc_total")
                 if k in values}
        bar.set_postfix(**shown, clips_s=f"{clips_per_s:.2f}")

    def _validate(self, write_samples: bool) -> None:
        """PSNR/SSIM of the EMA weights on the held-out clips (main process); optionally a sample video."""
        acc = self.accelerator
        if acc.is_main_process:
            with ema_weights(self.ema, self.vae_module.parameters()), acc.autocast():
                recons = reconstruct(self.vae_module, self.val_videos, self.cfg.batch_size)
            self.last_val = reconstruction_metrics(self.val_videos, recons)
            acc.log({f"val/{k}": v for k, v in self.last_val.items()}, step=self.step)
            acc.print(f"step {self.step}: val PSNR {self.last_val['psnr']:.2f} dB, SSIM {self.last_val['ssim']:.4f}")
            if write_samples:
                write_comparison(Path(self.cfg.output_dir) / "samples" / f"step_{self.step:08d}.mp4",
                                 self.val_videos, recons, SAMPLE_FPS)
        acc.wait_for_everyone()

    def _scaling_factor(self, model: LeanVAE) -> float:
        """1 / std of the posterior means of the first `scaling_clips` training clips (diffusers convention:
        latents * scaling_factor have unit variance for the diffusion model)."""
        count = min(self.cfg.scaling_clips, len(self.train_set))
        if not count:
            return model.config.scaling_factor
        device = next(model.parameters()).device
        means = []
        with torch.no_grad():
            for start in range(0, count, self.cfg.batch_size):
                clips = torch.stack([self.train_set[i]["video"] for i in range(start, min(start + self.cfg.batch_size,
                                                                                           count))])
                means.append(model.encode(clips.to(device)).latent_dist.mean.float().flatten())
        return float(1.0 / torch.cat(means).std())

    def _finish(self, seconds: float, start_step: int) -> dict:
        cfg, acc = self.cfg, self.accelerator
        modules = [self.vae_module.parameters(), self.ema.shadow_params]
        if self.disc_module is not None:
            modules.append(self.disc_module.parameters())
        checksums = check_replicas(acc, state_checksum(*modules))
        summary = {}
        if acc.is_main_process:
            final = LeanVAE.from_config(self.vae_module.config).to(acc.device)
            with torch.no_grad():
                for param, shadow in zip(final.parameters(), self.ema.shadow_params):
                    param.copy_(shadow.reshape(param.shape))  # DeepSpeed runs hold 0-dim parameters as (1,)
            final.register_to_config(scaling_factor=self._scaling_factor(final))
            vae_path = export_pretrained(final.cpu(), Path(cfg.output_dir) / "vae")
            summary = {
                "step": self.step, "steps_this_run": self.step - start_step, "seconds": round(seconds, 2),
                "clips_per_s": round((self.step - start_step) * cfg.batch_size * cfg.gradient_accumulation_steps
                                     * acc.num_processes / max(seconds, 1e-9), 3),
                "num_processes": acc.num_processes, "distributed_type": str(acc.distributed_type),
                "logs": self.last_logs, "val": self.last_val, "scaling_factor": final.config.scaling_factor,
                "replica_checksums": checksums, "skipped": self.dataset.skip_summary(), "vae": str(vae_path),
            }
            write_json(Path(cfg.output_dir) / "train_summary.json", summary)
            acc.print(f"Saved the EMA model to {vae_path} (scaling_factor {final.config.scaling_factor:.4f}).")
            acc.print(f"Data: {self.dataset.skip_summary()}.")
        acc.wait_for_everyone()
        acc.end_training()
        return summary


def train(cfg: VAETrainConfig) -> dict:
    """Train (or resume) the run `cfg` describes, export `<output_dir>/vae`; returns the run summary."""
    return VAETrainer(cfg).run()


def main(argv: Optional[Sequence[str]] = None) -> dict:
    cfg = parse_cli(VAETrainConfig, DEFAULT_CONFIG, argv, description="Train the LeanVAE video autoencoder.")
    return train(cfg)
