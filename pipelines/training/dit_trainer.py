"""Latte DiT training on cached VAE latents (the Latte paper's recipe): IDDPM hybrid loss over the DDPM noise
schedule (or rectified flow, `objective: flow`), class dropout for classifier-free guidance, AdamW, EMA, clipping
from a start step, sample videos at intervals.

The latents are normalised with the VAE's own `latents_mean/std`. The run exports the EMA model to
`<output_dir>/dit` and a ready-to-sample `LatteVideoPipeline` (DiT + VAE + scheduler) to `<output_dir>/pipeline`.
`train_dit.py` is the command line; `train(config)` is the whole run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from dit import DIT_PRESETS, OBJECTIVES, LatteDiT, make_objective
from vae import load_autoencoder

from ..common.cli import parse_cli
from ..common.config import check_section
from ..common.errors import ConfigError, MissingFileError, exit_on_user_error
from ..common.files import export_pretrained, write_json
from ..data import DataConfig
from ..data.media import save_grid
from ..inference.loading import TRAINING_DATA
from ..inference.pipeline_latte import LatteVideoPipeline, check_guidance_interval
from .latent_cache import check_cache
from .joint_images import WithImages
from .latent_hub import open_latents
from .loop import Trainer
from .optim import Part, adamw, lr_scheduler
from .run_config import TRAINER_FLAGS, RunConfig

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "dit" / "default.yaml"


@dataclass
class DiTModelConfig:
    preset: str = "Latte-T/2"
    class_dropout_prob: float = 0.1
    class_embed_std: float = 0.02  # Latte's; short CPU runs use ~1 (see LatteDiT)
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.preset not in DIT_PRESETS:
            raise ConfigError(f"model.preset '{self.preset}' is not one of {', '.join(DIT_PRESETS)}")
        if not 0.0 <= self.class_dropout_prob < 1.0:
            raise ConfigError(f"model.class_dropout_prob must be in [0, 1), got {self.class_dropout_prob}")


@dataclass
class DiTTrainConfig(RunConfig):
    """A DiT training run; defaults are Latte's recipe (configs/dit/*.yaml set the rest)."""

    output_dir: str = "runs/dit"
    vae: Optional[str] = None  # None: the VAE the cache records; given or not, checked against the cache's hash
    cache_dir: str = "runs/default/latents"  # a latent cache, an exported one (export_latents.py) or its Hub id
    objective: str = "iddpm"  # iddpm (Latte's: noise + learned variance) | flow (rectified flow, velocity)
    flow_shift: float = 1.0  # flow: noise levels moved towards noise in training and sampling; iddpm ignores it
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.9999
    grad_clip: float = 0.1
    grad_clip_start: int = 0  # Latte clips gradients only from this step on
    conditional: bool = True  # False: ignore labels (unconditional model, e.g. SkyTimelapse)
    # Latte+IMG: this many single images of other clips per sample, trained jointly (spatial blocks only);
    # Latte's best UCF-101 recipe uses 8. Sampling always makes videos.
    num_images: int = 0
    sample_latents: bool = True  # draw latents from the cached posterior (Latte's) instead of taking its mean
    guidance_scale: float = 1.0  # the exported pipeline's default for sample.py (UCF-101: 7.0)
    guidance_interval: list[float] = field(default_factory=lambda: [0.0, 1.0])  # noise levels guided: all (Latte's)
    sample_every: int = 1000  # 0: sample videos only at the end
    sample_steps: int = 50
    sample_classes: list = field(default_factory=lambda: [0, 1, 2, 3])
    model: DiTModelConfig = field(default_factory=DiTModelConfig)
    # Clip settings the cache must have been made with (DataConfig keys, e.g. num_frames: 17), checked against
    # its manifest; {} (the default): whatever the cache holds.
    data: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("grad_clip_start", "sample_every", "sample_steps", "num_images"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.flow_shift <= 0:
            raise ConfigError(f"flow_shift must be > 0 (1: no shift), got {self.flow_shift}")
        if self.guidance_scale < 1:
            raise ConfigError(f"guidance_scale must be >= 1 (1 = no guidance), got {self.guidance_scale}")
        check_guidance_interval(self.guidance_interval)
        self.data = check_section(DataConfig, self.data, "data.")


def save_sample_grid(pipe: LatteVideoPipeline, cfg: DiTTrainConfig, path: Path) -> None:
    """A grid of videos of `cfg.sample_classes` (unconditional: as many videos) next to the run's samples."""
    labels = [c % pipe.num_classes for c in cfg.sample_classes] if pipe.num_classes else None
    pipe.set_progress_bar_config(disable=True)
    frames = pipe(class_labels=labels, num_videos=len(cfg.sample_classes), num_inference_steps=cfg.sample_steps,
                  guidance_scale=cfg.guidance_scale, guidance_interval=cfg.guidance_interval,
                  generator=torch.Generator().manual_seed(cfg.seed),
                  output_type="np").frames  # (B, T, H, W, 3) in [0, 1]
    save_grid(frames, path)


class DiTTrainer(Trainer):
    name = "train_dit"
    postfix_keys = ("loss/total", "loss/mse")

    def inputs(self) -> dict:
        with self.accelerator.main_process_first():  # a Hub id downloads once, not once per process
            self.latents = open_latents(self.cfg.cache_dir)
        return {"latent_cache": self.latents.manifest.get("cache_sha256")}

    def build_dataset(self):
        cfg, latents = self.cfg, self.latents
        vae_dir = cfg.vae or latents.manifest["vae"]["path"]
        if not Path(vae_dir).exists():
            raise MissingFileError(f"vae={cfg.vae}: no VAE there" if cfg.vae else
                                   f"the latent cache records its VAE at {vae_dir}, which is not there: pass "
                                   f"vae=<the VAE's folder> (checked against the cache's hash)")
        check_cache(latents.manifest, vae_dir, cfg.data)
        try:
            self.vae = load_autoencoder(vae_dir).eval()
        except FileNotFoundError as err:
            raise MissingFileError(f"vae={vae_dir}: {err}") from None
        self.num_classes = latents.manifest["num_classes"] if cfg.conditional else 0
        self.class_names = latents.manifest["class_names"] if cfg.conditional else []
        self.latent_shape = tuple(latents.manifest["latent_shape"])
        self.training_data = {key: latents.manifest[key] for key in ("data", "source")}
        if cfg.num_images:  # a per-frame image VAE: every latent frame is an image; a causal one: the first
            return WithImages(latents, cfg.num_images, any_frame=self.vae.temporal_compression_ratio == 1)
        return latents

    def build_parts(self) -> list[Part]:
        cfg = self.cfg
        self.objective = make_objective(cfg.objective, cfg.flow_shift)
        channels, frames, height, width = self.latent_shape
        if height != width:
            raise ConfigError(f"the DiT takes square latents; the cache holds {height}x{width}")
        dit = LatteDiT(**DIT_PRESETS[cfg.model.preset], in_channels=channels, num_frames=frames, sample_size=height,
                       num_classes=self.num_classes, class_dropout_prob=cfg.model.class_dropout_prob,
                       class_embed_std=cfg.model.class_embed_std, learn_sigma=self.objective.learn_sigma)
        if cfg.model.gradient_checkpointing:
            dit.enable_gradient_checkpointing()
        opt = adamw(dit, cfg.learning_rate, cfg.weight_decay)
        sched = lr_scheduler(opt, cfg.lr_schedule, cfg.lr_warmup_steps, cfg.max_steps,
                             cfg.min_learning_rate / cfg.learning_rate)
        return [Part("dit", dit, opt, sched, cfg.grad_clip, clip_from=cfg.grad_clip_start)]

    def describe(self) -> str:
        return (f"Latte DiT {self.cfg.model.preset}: {super().describe()} (cached latents {self.latent_shape}), "
                f"{self.num_classes or 'no'} classes" + (f", {self.cfg.num_images} images per video (Latte+IMG)"
                                                         if self.cfg.num_images else ""))

    def micro_step(self, batch: dict, generator: torch.Generator) -> dict:
        acc, dit = self.accelerator, self.parts[0].model
        z = batch["mean"]  # (B, C, F, h, w)
        if self.cfg.sample_latents and "std" in batch:
            z = z + batch["std"] * torch.randn(z.shape, generator=generator).to(z)
        x0 = self.vae.normalize_latents(z)
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        xt, t = self.objective.noisy(x0, noise, generator)
        labels = drop = image_labels = None
        images = self.cfg.num_images
        if self.num_classes:
            labels = batch["label"].to(x0.device)
            if images:  # as the official code: one draw for the video's label, one for all of its images' labels
                drop = (torch.rand(x0.shape[0], 2, generator=generator) < self.cfg.model.class_dropout_prob).long()
                drop = torch.cat([drop[:, :1], drop[:, 1:].expand(-1, images)], dim=1)  # (B, 1 + I)
            else:
                drop = (torch.rand(x0.shape[0], generator=generator) < self.cfg.model.class_dropout_prob).long()
            image_labels = batch["image_labels"].to(x0.device) if images else None
        with acc.autocast():
            out = dit(xt, t, class_labels=labels, force_drop_ids=drop, num_images=images,
                      image_labels=image_labels).sample  # (B, 2C or C, F + I, h, w)
        losses = self.objective.loss(out.float(), x0, noise, t)
        loss = losses.pop("loss")
        acc.backward(loss)
        return {"loss/total": loss.detach(), **{f"loss/{name}": terms.mean().detach() for name, terms in losses.items()}}

    def after_step(self) -> None:
        cfg = self.cfg
        if self.step < cfg.max_steps and cfg.sample_every and self.step % cfg.sample_every == 0:
            if self.accelerator.is_main_process:
                with self.ema.weights():
                    self._save_grid(self._pipeline(self.model))
                self.model.train()  # the pipeline put it in eval mode
            self.accelerator.wait_for_everyone()

    def _pipeline(self, transformer: LatteDiT) -> LatteVideoPipeline:
        sampler = self.objective.sampler()
        return LatteVideoPipeline(transformer, self.vae.to(self.accelerator.device), sampler,
                                  class_names=self.class_names, default_guidance_scale=self.cfg.guidance_scale,
                                  default_guidance_interval=self.cfg.guidance_interval)

    def _save_grid(self, pipe: LatteVideoPipeline) -> None:
        save_sample_grid(pipe, self.cfg, self.layout.samples / f"step_{self.step:08d}")

    def export(self, model: LatteDiT) -> dict:
        dit_path = export_pretrained(model, self.layout.export("dit"))
        pipe = self._pipeline(model)
        pipe_path = export_pretrained(pipe, self.layout.export("pipeline"))
        write_json(pipe_path / TRAINING_DATA, self.training_data)  # evaluate.py --run needs no --dataset
        self._save_grid(pipe)
        self.accelerator.print(f"Saved the EMA DiT to {dit_path} and the sampling pipeline to {pipe_path}.")
        return {"dit": str(dit_path), "pipeline": str(pipe_path)}


def train(cfg: DiTTrainConfig) -> dict:
    return DiTTrainer(cfg).run()


def main(argv: Optional[Sequence[str]] = None, prog: str = "train_dit.py") -> dict:
    with exit_on_user_error(prog):
        return train(parse_cli(DiTTrainConfig, argv, "Train a Latte DiT on cached latents.", DEFAULT_CONFIG,
                               TRAINER_FLAGS))


if __name__ == "__main__":
    main()
