"""Latte DiT training on cached LeanVAE latents (DESIGN.md §5): IDDPM hybrid loss over diffusers' DDPM
schedule, class dropout for classifier-free guidance, AdamW, EMA, clipping from a start step, sample videos
at intervals, exact resume, data-parallel / DeepSpeed through accelerate.

`train_dit.py` is the command line; `train(config)` is the whole run. The run exports the EMA model to
`<output_dir>/dit` and a ready-to-sample `LatteVideoPipeline` (DiT + VAE + scheduler) to `<output_dir>/pipeline`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
from diffusers.training_utils import EMAModel
from torch.utils.data import DataLoader

from dit import DIT_PRESETS, LatteDiT, diffusion_loss, training_scheduler
from vae import LeanVAE

from .config import ConfigError
from .data import DataConfig
from .latent_cache import LatentDataset, check_cache
from .pipeline_latte import LatteVideoPipeline, make_scheduler
from .sampling import save_grid
from .training import (Checkpoints, RunConfig, RunningMeans, check_replicas, clip_grad_norm, ema_weights,
                       endless_batches, export_pretrained, keyed_generator, lr_scheduler, parse_cli, progress,
                       setup_accelerator, state_checksum, write_json)

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "dit" / "default.yaml"


@dataclass
class DiTModelConfig:
    preset: str = "Latte-T/2"
    class_dropout_prob: float = 0.1
    class_embed_std: float = 0.02  # Latte's; short CPU runs use ~1 (see LatteDiT)
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.preset not in DIT_PRESETS:
            raise ConfigError(f"model.preset '{self.preset}' is not one of {', '.join(DIT_PRESETS)}")


@dataclass
class DiTTrainConfig(RunConfig):
    """A DiT training run; defaults are Latte's recipe (configs/dit/*.yaml set the rest)."""

    output_dir: str = "runs/dit"
    vae: str = "runs/default/vae/vae"  # the VAE that made the cache (checked) and decodes samples
    cache_dir: str = "runs/default/latents"
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.9999
    grad_clip: float = 0.1
    grad_clip_start: int = 0  # Latte clips gradients only from this step on
    conditional: bool = True  # False: ignore labels (unconditional model, e.g. SkyTimelapse)
    sample_latents: bool = True  # draw latents from the cached posterior instead of taking its mean
    scaling_factor: Optional[float] = None  # None: the cache's 1 / std
    guidance_scale: float = 1.0  # the exported pipeline's default for sample.py (UCF-101: 7.0)
    sample_every: int = 1000  # 0: sample videos only at the end
    sample_steps: int = 50
    sample_classes: list = field(default_factory=lambda: [0, 1, 2, 3])
    model: DiTModelConfig = field(default_factory=DiTModelConfig)
    data: DataConfig = field(default_factory=DataConfig)  # the clip settings the cache must have been made with

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("grad_clip_start", "sample_every", "sample_steps"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.guidance_scale < 1:
            raise ConfigError(f"guidance_scale must be >= 1 (1 = no guidance), got {self.guidance_scale}")


class DiTTrainer:
    def __init__(self, cfg: DiTTrainConfig):
        self.cfg = cfg
        self.accelerator = acc = setup_accelerator(cfg, "train_dit")
        self.latents = LatentDataset(cfg.cache_dir)
        manifest = self.latents.manifest
        check_cache(manifest, cfg.vae, cfg.data)
        self.scaling_factor = cfg.scaling_factor or manifest["stats"]["scaling_factor"]
        self.num_classes = manifest["num_classes"] if cfg.conditional else 0
        self.class_names = manifest["class_names"] if cfg.conditional else []
        channels, frames, height, width = manifest["latent_shape"]
        if height != width:
            raise ConfigError(f"the DiT takes square latents; the cache holds {height}x{width}")
        dit = LatteDiT(**DIT_PRESETS[cfg.model.preset], in_channels=channels, num_frames=frames, sample_size=height,
                       num_classes=self.num_classes, class_dropout_prob=cfg.model.class_dropout_prob,
                       class_embed_std=cfg.model.class_embed_std)
        if cfg.model.gradient_checkpointing:
            dit.enable_gradient_checkpointing()
        opt = torch.optim.AdamW(dit.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=True)
        sched = lr_scheduler(opt, cfg.lr_schedule, cfg.lr_warmup_steps, cfg.max_steps,
                             cfg.min_learning_rate / cfg.learning_rate)
        loader = DataLoader(self.latents, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                            num_workers=cfg.num_workers)
        self.dit, self.opt, self.sched, self.loader = acc.prepare(dit, opt, sched, loader)
        self.dit_module = acc.unwrap_model(self.dit)
        self.ema = EMAModel(self.dit_module.parameters(), decay=cfg.ema_decay, foreach=True,
                            model_cls=LatteDiT, model_config=self.dit_module.config)
        acc.register_for_checkpointing(self.ema)
        self.scheduler = training_scheduler()
        self.checkpoints = Checkpoints(cfg.output_dir, cfg.checkpoints_total_limit)
        self.step = self.checkpoints.resume(acc, cfg.resume)
        self.ema.to(acc.device)
        self.last_logs: dict[str, float] = {}

    def _micro_step(self, batch: dict, micro: int) -> dict:
        cfg, acc = self.cfg, self.accelerator
        g = keyed_generator(cfg.seed, acc.process_index, micro)  # noise and timesteps: no RNG state to save
        mean = batch["mean"]  # (B, C, F, h, w)
        if cfg.sample_latents and "std" in batch:
            mean = mean + batch["std"] * torch.randn(mean.shape, generator=g).to(mean)
        x0 = mean * self.scaling_factor
        noise = torch.randn(x0.shape, generator=g).to(x0)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (x0.shape[0],), generator=g).to(x0.device)
        xt = self.scheduler.add_noise(x0, noise, t)
        labels = batch["label"].to(x0.device) if self.num_classes else None
        with acc.accumulate(self.dit):
            with acc.autocast():
                out = self.dit(xt, t, class_labels=labels).sample  # (B, 2C, F, h, w)
            losses = diffusion_loss(out.float(), x0, noise, t, self.scheduler)
            acc.backward(losses["loss"])
            max_norm = cfg.grad_clip if self.step >= cfg.grad_clip_start else 0.0
            grad_norm = clip_grad_norm(acc, self.dit.parameters(), max_norm)
            self.opt.step()
            if acc.sync_gradients:
                self.sched.step()
            self.opt.zero_grad(set_to_none=True)
        logs = {"loss/total": losses["loss"].detach(), "loss/mse": losses["mse"].mean().detach(),
                "loss/vb": losses["vb"].mean().detach()}
        if grad_norm is not None:
            logs["train/grad_norm"] = grad_norm
        return logs

    def run(self) -> dict:
        cfg, acc = self.cfg, self.accelerator
        params = sum(p.numel() for p in self.dit_module.parameters())
        per_step = cfg.batch_size * cfg.gradient_accumulation_steps * acc.num_processes
        acc.print(f"Latte DiT {cfg.model.preset} ({params / 1e6:.2f} M parameters) on {len(self.latents)} cached "
                  f"clips of latent shape {tuple(self.latents.manifest['latent_shape'])}, "
                  f"{self.num_classes or 'no'} classes, scaling factor {self.scaling_factor:.4f}")
        micro = self.step * cfg.gradient_accumulation_steps
        batches = endless_batches(acc, self.loader, micro)
        means, bar = RunningMeans(), progress(acc, self.step, cfg.max_steps, "train_dit")
        start_step, start_time = self.step, time.perf_counter()
        while self.step < cfg.max_steps:
            means.add(self._micro_step(next(batches), micro))
            micro += 1
            if not self.accelerator.sync_gradients:
                continue
            self.step += 1
            self.ema.step(self.dit_module.parameters())
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                logs = means.pop(acc)
                logs["lr"] = self.sched.get_last_lr()[0]
                logs["train/clips_per_s"] = (self.step - start_step) * per_step / (time.perf_counter() - start_time)
                acc.log(logs, step=self.step)
                self.last_logs = logs
                bar.set_postfix(loss=f"{logs['loss/total']:.4g}", mse=f"{logs['loss/mse']:.4g}",
                                clips_s=f"{logs['train/clips_per_s']:.1f}")
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self.checkpoints.save(acc, self.step)
            if self.step < cfg.max_steps and cfg.sample_every and self.step % cfg.sample_every == 0:
                self._write_samples()
        bar.close()
        return self._finish(time.perf_counter() - start_time, start_step)

    def _pipeline(self, transformer: LatteDiT) -> LatteVideoPipeline:
        vae = LeanVAE.from_pretrained(self.cfg.vae)
        vae.register_to_config(scaling_factor=self.scaling_factor)
        return LatteVideoPipeline(transformer, vae.to(self.accelerator.device), make_scheduler("ddpm"),
                                  class_names=self.class_names, default_guidance_scale=self.cfg.guidance_scale)

    def _write_samples(self) -> None:
        """A grid of sample videos from the EMA weights, during training (main process)."""
        if self.accelerator.is_main_process:
            with ema_weights(self.ema, self.dit_module.parameters()):
                self._save_grid(self._pipeline(self.dit_module))
            self.dit_module.train()  # the pipeline put it in eval mode
        self.accelerator.wait_for_everyone()

    def _save_grid(self, pipe: LatteVideoPipeline) -> None:
        cfg = self.cfg
        labels = [c % self.num_classes for c in cfg.sample_classes] if self.num_classes else None
        videos = pipe(class_labels=labels, num_videos=len(cfg.sample_classes), num_inference_steps=cfg.sample_steps,
                      guidance_scale=cfg.guidance_scale, generator=torch.Generator().manual_seed(cfg.seed),
                      output_type="np", progress=False).videos  # (B, T, H, W, 3)
        save_grid(videos, Path(cfg.output_dir) / "samples" / f"step_{self.step:08d}")

    def _finish(self, seconds: float, start_step: int) -> dict:
        cfg, acc = self.cfg, self.accelerator
        checksums = check_replicas(acc, state_checksum(self.dit_module.parameters(), self.ema.shadow_params))
        summary = {}
        if acc.is_main_process:
            final = LatteDiT.from_config(self.dit_module.config)
            with torch.no_grad():
                for param, shadow in zip(final.parameters(), self.ema.shadow_params):
                    param.copy_(shadow.reshape(param.shape))
            dit_path = export_pretrained(final, Path(cfg.output_dir) / "dit")
            pipe = self._pipeline(final.to(acc.device))
            pipe_path = export_pretrained(pipe, Path(cfg.output_dir) / "pipeline")
            self._save_grid(pipe)
            summary = {"step": self.step, "steps_this_run": self.step - start_step, "seconds": round(seconds, 2),
                       "num_processes": acc.num_processes, "logs": self.last_logs,
                       "scaling_factor": self.scaling_factor, "replica_checksums": checksums,
                       "dit": str(dit_path), "pipeline": str(pipe_path)}
            write_json(Path(cfg.output_dir) / "train_summary.json", summary)
            acc.print(f"Saved the EMA DiT to {dit_path} and the sampling pipeline to {pipe_path}.")
        acc.wait_for_everyone()
        acc.end_training()
        return summary


def train(cfg: DiTTrainConfig) -> dict:
    return DiTTrainer(cfg).run()


def main(argv: Optional[Sequence[str]] = None) -> dict:
    return train(parse_cli(DiTTrainConfig, DEFAULT_CONFIG, argv, description="Train a Latte DiT on cached latents."))
