"""Video VAE training for any bundled VAE preset: L1 pixel + wavelet + LPIPS + KL losses (+ WF-VAE's WL loss), a
PatchGAN (per frame or 3-D) with its own optimizer, AdamW with warm-up and a schedule, EMA, validation PSNR/SSIM
and sample videos. Defaults are LeanVAE's recipe (its paper and official code); configs/vae/wfvae-*.yaml hold WF-VAE's. The
exported EMA model carries its latent statistics (`latents_mean/std`).

`train_vae.py` is the command line; `train(config)` is the whole run and returns its summary.
"""

from __future__ import annotations

import itertools
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

import torch
from accelerate.utils import DistributedType
from torch.utils.data import Subset

from vae import build_autoencoder, channel_statistics, get_preset, load_autoencoder
from vae.discriminator import NLayerDiscriminator, NLayerDiscriminator3D
from vae.losses import LossConfig, VAELoss
from vae.lpips import LPIPSWeightsMissing
from vae.registry import check_arguments

from ..common.cli import parse_cli
from ..common.errors import ConfigError, MissingFileError, exit_on_user_error
from ..common.files import export_pretrained
from ..data import DataConfig, SkippedVideoWarning, build_dataset
from ..data.hub import HubVideoStream
from ..evaluation.reconstruction import reconstruct, reconstruction_metrics, write_comparison
from .accelerator import deepspeed_safe_parameters
from .batches import EpochSeededDataset
from .loop import Trainer
from .optim import Part, adamw, lr_scheduler
from .run_config import TRAINER_FLAGS, RunConfig

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "vae" / "default.yaml"
SAMPLE_FPS = 8
DEFAULT_PRESET = "lean-small"


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
    weight_decay: float = 0.0  # decoupled (AdamW); WF-VAE's recipe: 1e-4
    disc_learning_rate: Optional[float] = None  # None: learning_rate; its schedule spans disc_start..max_steps
    val_every: int = 500  # 0: validate only at the end
    val_clips: int = 4  # held out from the end of the data set
    sample_every: int = 1000  # 0: write sample videos only at the end
    # training clips whose latents give the exported latents_mean / latents_std (0: 0 / 1); 32 cost the default
    # run 5 points of class accuracy (BENCHMARKS.md)
    stats_clips: int = 256
    # the decoder's input gets Gaussian noise of this fraction of each latent channel's std, so that it learns to
    # tolerate a DiT's latent errors (vae.posterior.with_latent_noise); 0: the exact posterior sample
    latent_noise: float = 0.0
    # IV-VAE: a trained keyframe image VAE folder (its `-keyframes` preset) that initialises the keyframe half
    init_keyframes_from: Optional[str] = None
    # `preset` (a name in vae.VAE_PRESETS) and any constructor argument of its model, e.g. latent_channels: 8
    model: dict = field(default_factory=lambda: {"preset": DEFAULT_PRESET})
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("val_every", "val_clips", "sample_every", "stats_clips", "weight_decay", "latent_noise"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        for key in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"{key} must be in [0, 1), got {getattr(self, key)}")
        if not isinstance(self.model, dict):
            raise ConfigError(f"model must be a section (preset: ..., and model arguments), got {self.model!r}")
        self.model = {"preset": DEFAULT_PRESET, **self.model}
        try:
            check_arguments(self.model["preset"], self.model_arguments)
            model_class = get_preset(self.model["preset"]).model
            model_class.check_num_frames(self.data.num_frames)
        except ValueError as err:
            raise ConfigError(f"model / data.num_frames: {err}") from None
        if self.data.resolution % model_class.spatial_compression_ratio:
            raise ConfigError(f"data.resolution must be a multiple of {model_class.spatial_compression_ratio} for "
                              f"{model_class.__name__}, got {self.data.resolution}")

    @property
    def model_arguments(self) -> dict:
        return {key: value for key, value in self.model.items() if key != "preset"}

    @property
    def gan_used(self) -> bool:
        """Whether the discriminator is ever switched on in this run (else it is not even built)."""
        return self.loss.disc_weight > 0 and self.loss.disc_start < self.max_steps


def build_datasets(cfg: DataConfig, val_clips: int):
    """(data set, training subset, held-out validation subset or None): the last `val_clips` items are held
    out, read deterministically (centre clips, no flip)."""
    full = build_dataset(cfg)
    if isinstance(full, HubVideoStream):  # the first val_clips rows of the stream are held out
        held = build_dataset(replace(cfg, clip_sampling="center", random_flip=False)) if val_clips else None
        train = full.rows(skip=val_clips)
        return train, train, held and list(held.rows(take=val_clips, endless=False, every_process=True))
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


def adam_part(name: str, model: torch.nn.Module, cfg: VAETrainConfig, lr: float, steps: int,
              active_from: int = 0) -> Part:
    """A model with the recipe's AdamW and warm-up + schedule over its own `steps` (weight decay 0 is Adam)."""
    opt = adamw(model, lr, cfg.weight_decay, betas=(cfg.adam_beta1, cfg.adam_beta2))
    sched = lr_scheduler(opt, cfg.lr_schedule, cfg.lr_warmup_steps, steps, cfg.min_learning_rate / cfg.learning_rate)
    return Part(name, model, opt, sched, cfg.grad_clip, active_from=active_from)


def build_discriminator(loss: LossConfig) -> torch.nn.Module:
    groups = math.gcd(32, loss.disc_channels)
    if loss.disc_type == "3d":
        return NLayerDiscriminator3D(base_channels=loss.disc_channels, n_layers=loss.disc_layers, norm_groups=groups,
                                     dropout=loss.disc_dropout)
    return NLayerDiscriminator(base_channels=loss.disc_channels, n_layers=loss.disc_layers, norm_groups=groups)


@torch.no_grad()
def latent_statistics(model, clips, count: int, batch_size: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the posterior means of the first `count` clips: the model's latents_mean/std."""
    device, items, means = next(model.parameters()).device, iter(clips), []  # clips: a data set or a stream
    while batch := [item["video"] for item in itertools.islice(items, min(batch_size, count))]:
        count -= len(batch)
        means.append(model.encode(torch.stack(batch).to(device)).latent_dist.mean)  # (b, d, T', h, w)
    return channel_statistics(means)


def init_keyframes(vae, path: str) -> None:
    """The IV-VAE keyframe initialisation from the image VAE at `path` (a resumed run then loads its checkpoint
    over it)."""
    if not hasattr(vae, "init_keyframes_from"):
        raise ConfigError(f"init_keyframes_from is IV-VAE's keyframe initialisation; {type(vae).__name__} has none")
    if not (Path(path) / "config.json").is_file():
        raise MissingFileError(f"init_keyframes_from: no trained keyframe image VAE at {path} (train one with a "
                               f"'-keyframes' preset first, e.g. configs/vae/ivvae-keyframes-default.yaml)")
    image_vae = load_autoencoder(path)
    try:
        vae.init_keyframes_from(image_vae)
    except ValueError as err:
        raise ConfigError(f"init_keyframes_from={path}: {err}") from None


class VAETrainer(Trainer):
    name = "train_vae"
    postfix_keys = ("loss/total", "loss/pixel", "disc/disc_total")

    def build_dataset(self):
        self.dataset, train, val = build_datasets(self.cfg.data, self.cfg.val_clips)
        self.train_clips = train
        self.val_videos = torch.stack([val[i]["video"] for i in range(len(val))]) if val else None
        self.last_val: dict[str, float] = {}
        return train

    def build_parts(self) -> list[Part]:
        cfg, acc = self.cfg, self.accelerator
        if acc.distributed_type == DistributedType.DEEPSPEED and cfg.gan_used:
            raise ConfigError(
                "under DeepSpeed only the autoencoder can be trained (one engine, one model), but the "
                f"discriminator comes on at loss.disc_start={cfg.loss.disc_start} < max_steps={cfg.max_steps}. "
                "Train with the GAN through configs/accelerate/multi_gpu.yaml (DDP), or keep DeepSpeed for a "
                "VAE-only run: loss.disc_start >= max_steps or loss.disc_weight=0.")
        try:
            self.loss_fn = VAELoss(cfg.loss).to(acc.device)
        except LPIPSWeightsMissing as err:
            raise MissingFileError(str(err)) from None
        vae = build_autoencoder(cfg.model["preset"], **cfg.model_arguments)
        if cfg.init_keyframes_from:
            init_keyframes(vae, cfg.init_keyframes_from)
        if acc.distributed_type == DistributedType.DEEPSPEED:
            deepspeed_safe_parameters(vae)
        parts = [adam_part("vae", vae, cfg, cfg.learning_rate, cfg.max_steps)]
        if cfg.gan_used:
            parts.append(adam_part("disc", build_discriminator(cfg.loss), cfg, cfg.disc_learning_rate or cfg.learning_rate,
                                   cfg.max_steps - cfg.loss.disc_start, active_from=cfg.loss.disc_start))
        return parts

    def checkpointed_state(self) -> list:
        return [self.loss_fn.lecam] if self.cfg.gan_used else []

    def describe(self) -> str:
        held, gan = len(self.val_videos) if self.val_videos is not None else 0, self.cfg.loss.disc_start
        return (f"{self.cfg.model['preset']}: {super().describe()}, {held} held out; GAN "
                f"{f'from step {gan}' if self.cfg.gan_used else 'off'}")

    def micro_step(self, batch: dict, generator: torch.Generator) -> dict:
        acc, x = self.accelerator, batch["video"]
        disc = self.parts[1].model if len(self.parts) > 1 else None
        bare_disc = acc.unwrap_model(disc) if disc is not None else None
        gan_on = disc is not None and self.loss_fn.gan_active(self.step)
        out = self.parts[0].model(x, generator=generator, latent_noise=self.cfg.latent_noise)  # keyed noise
        # The generator loss sees the bare, frozen discriminator: no gradients reach it, and its DDP wrapper is
        # used only by the discriminator's own loss.
        with frozen(bare_disc), acc.autocast():
            last_layer = self.model.get_last_layer() if gan_on and self.cfg.loss.adaptive_disc_weight else None
            loss, logs = self.loss_fn(x, out.sample, out.latent_dist, self.step, bare_disc if gan_on else None,
                                      last_layer, getattr(out, "subbands", None))
        acc.backward(loss)
        logs = {f"loss/{k}": v for k, v in logs.items()}
        if gan_on:
            with acc.autocast():
                d_loss, d_logs = self.loss_fn.discriminator_loss(x, out.sample, disc)
            acc.backward(d_loss)
            logs |= {f"disc/{k}": v for k, v in d_logs.items()}
        return logs

    def after_step(self) -> None:
        cfg, last = self.cfg, self.step == self.cfg.max_steps
        val_due = last or bool(cfg.val_every and self.step % cfg.val_every == 0)
        sample_due = last or bool(cfg.sample_every and self.step % cfg.sample_every == 0)
        if self.val_videos is not None and (val_due or sample_due):
            self._validate(write_samples=sample_due)

    def _validate(self, write_samples: bool) -> None:
        """PSNR/SSIM of the EMA weights on the held-out clips (main process); optionally a sample video."""
        acc = self.accelerator
        if acc.is_main_process:
            with self.ema.weights(), acc.autocast():
                recons = reconstruct(self.model, self.val_videos, self.cfg.batch_size)
            self.last_val = reconstruction_metrics(self.val_videos, recons)
            acc.log({f"val/{k}": v for k, v in self.last_val.items()}, step=self.step)
            acc.print(f"step {self.step}: val PSNR {self.last_val['psnr']:.2f} dB, SSIM {self.last_val['ssim']:.4f}")
            if write_samples:
                write_comparison(self.layout.samples / f"step_{self.step:08d}.mp4", self.val_videos, recons, SAMPLE_FPS)
        acc.wait_for_everyone()

    def export(self, model) -> dict:
        if self.cfg.stats_clips:
            # epoch 0 from its start: the same clips in every run
            clips = self.train_clips.rows() if isinstance(self.train_clips, HubVideoStream) else EpochSeededDataset(
                self.train_clips, self.cfg.seed)
            mean, std = latent_statistics(model, clips, self.cfg.stats_clips, self.cfg.batch_size)
            model.register_to_config(latents_mean=mean, latents_std=std)
        path = export_pretrained(model.cpu(), self.layout.export("vae"))
        self.accelerator.print(f"Saved the EMA model to {path} (latents_std {_short(model.config.latents_std)}).")
        self.accelerator.print(f"Data: {self.dataset.skip_summary()}.")
        return {"val": self.last_val, "latents_mean": model.config.latents_mean,
                "latents_std": model.config.latents_std, "skipped": self.dataset.skip_summary(), "vae": str(path)}


def _short(values) -> str:
    return ", ".join(f"{v:.3g}" for v in values) if isinstance(values, (list, tuple)) else f"{values:.3g}"


def train(cfg: VAETrainConfig) -> dict:
    """Train (or resume) the run `cfg` describes, export `<output_dir>/vae`; returns the run summary."""
    return VAETrainer(cfg).run()


def main(argv: Optional[Sequence[str]] = None, prog: str = "train_vae.py") -> dict:
    with exit_on_user_error(prog):
        return train(parse_cli(VAETrainConfig, argv, "Train a video VAE.", DEFAULT_CONFIG, TRAINER_FLAGS))


if __name__ == "__main__":
    main()
