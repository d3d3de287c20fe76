"""What `assemble_pipeline.py` does: build a run folder's pipeline from released files, so that `sample.py --run
DIR` and `evaluate.py --run DIR` work on published weights as on a trained run.

    released Latte checkpoint (LatteDiT.from_official_checkpoint) + a VAE (vae.load_autoencoder: a released
    LeanVAE .ckpt, WF-VAE folder, IV-VAE .pth, an SD-VAE folder, or a trained one) + the latent scale the DiT was
    trained with -> <output_dir>/dit/pipeline (the layout of a train.sh run)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from dit import LatteDiT, make_scheduler
from vae import load_autoencoder

from ..common.errors import ConfigError, MissingFileError
from ..common.files import export_pretrained
from ..common.layout import RunLayout
from .pipeline_latte import LatteVideoPipeline


@dataclass
class AssembleConfig:
    dit: str = ""  # a released Latte checkpoint (.pt)
    vae: str = ""  # anything vae.load_autoencoder loads
    output_dir: str = "runs/released"  # the run folder: the pipeline goes to <output_dir>/dit/pipeline
    latent_scale: Optional[float] = None  # DiT latents = VAE latents x this (LeanVAE-4ch 0.7744, 16ch 1.0); None:
    # the VAE's own normalisation (SD-VAE: its scaling_factor 0.18215)
    class_names: str = ""  # a text file, one class per line or classInd.txt's "1 ApplyEyeMakeup"; "" for none
    guidance_scale: float = 1.0  # the pipeline's default (the published UCF-101 runs: 7.0)
    guidance_channels: Optional[int] = 4  # Latte's official sampler guides the first 4 noise channels; None: all
    num_heads: Optional[int] = None  # for a DiT width the presets do not name

    def __post_init__(self) -> None:
        if not self.dit or not self.vae:
            raise ConfigError("dit=PATH (a released Latte .pt) and vae=PATH are both needed")
        if self.latent_scale is not None and self.latent_scale <= 0:
            raise ConfigError(f"latent_scale must be > 0, got {self.latent_scale}")
        if self.guidance_channels is not None and self.guidance_channels < 1:
            raise ConfigError(f"guidance_channels must be >= 1 (null: all), got {self.guidance_channels}")
        if self.guidance_scale < 1:
            raise ConfigError(f"guidance_scale must be >= 1 (1 = none), got {self.guidance_scale}")


def read_class_names(path: str) -> list[str]:
    """One name per line; classInd.txt's "<index> <name>" lines keep the name."""
    try:
        lines = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as err:
        raise MissingFileError(f"class_names={path}: {err.strerror}") from None
    return [parts[-1] for parts in lines]


def assemble(cfg: AssembleConfig) -> dict:
    """Write the pipeline; returns {"pipeline": path, "num_classes", "num_frames", "resolution"}."""
    overrides = {"num_heads": cfg.num_heads} if cfg.num_heads else {}
    try:
        transformer = LatteDiT.from_official_checkpoint(cfg.dit, **overrides)
        vae = load_autoencoder(cfg.vae)
    except FileNotFoundError as err:
        raise MissingFileError(str(err)) from None
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if vae.latent_channels != transformer.config.in_channels:
        raise ConfigError(f"the DiT at {cfg.dit} takes {transformer.config.in_channels} latent channels, the VAE at "
                          f"{cfg.vae} makes {vae.latent_channels}")
    if cfg.latent_scale is not None:
        vae.register_to_config(latents_mean=0.0, latents_std=1.0 / cfg.latent_scale)
    names = read_class_names(cfg.class_names) if cfg.class_names else []
    k = transformer.config.num_classes
    if names and len(names) != k:
        raise ConfigError(f"{cfg.class_names} names {len(names)} classes, the DiT has {k}")
    pipe = LatteVideoPipeline(transformer, vae, make_scheduler("ddpm"), class_names=names,
                              default_guidance_scale=cfg.guidance_scale, guidance_channels=cfg.guidance_channels)
    path = export_pretrained(pipe, RunLayout(cfg.output_dir).pipeline)
    size = transformer.config.sample_size * vae.spatial_compression_ratio
    return {"pipeline": path, "num_classes": k, "num_frames": pipe.num_frames, "resolution": size}
