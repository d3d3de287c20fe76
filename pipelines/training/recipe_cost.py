"""What a benchmark recipe costs on GPUs: the FLOPs of one training step counted from the real models, the latent
cache's encoding, and the GPU-hours they take at a stated MFU.

The models are built and run on PyTorch's meta device: every operation computes its output's shape, none its
values, so a traced step of Latte-XL/2 or WF-VAE-L at 256 px costs no memory and under two seconds on a laptop.
FLOPs are counted as the training loop counts them for its MFU (`monitor.flop_counter`: a multiply-add is 2 FLOPs;
matmuls, convolutions and attention; a step's backward included). They are model FLOPs: gradient checkpointing's
recomputed forward is not counted, so it shows up as a lower MFU, as in every MFU report.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dit import DIT_PRESETS, LatteDiT, make_objective
from vae import PerFrameVAE, VideoAutoencoder, build_autoencoder

from ..common.config import load_config
from .dit_trainer import DiTTrainConfig
from .monitor import count_flops
from .vae_trainer import VAETrainConfig

# Dense bfloat16 tensor-core peaks of the SXM parts (NVIDIA's datasheets, without structured sparsity), FLOP/s.
# H200 has H100's compute; its larger, faster memory buys batch size (or no checkpointing), not peak.
GPU_PEAKS = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12}

# The recipes' own scale: Latte's, LeanVAE's and WF-VAE's official runs use 8 GPUs (Latte: batch 5 per GPU; its
# +IMG configs 4), which the configs' per-process `batch_size` is multiplied by.
RECIPE_GPUS = 8

# Videos each data set's latent cache encodes (one clip per video per pass): UCF-101's 13,320 (split "all", as
# Latte trains), SkyTimelapse's 35,392 training clips (Xiong et al., CVPR 2018).
DATASET_VIDEOS = {"ucf101": 13_320, "sky": 35_392}

# stabilityai/sd-vae-ft-ema's config.json (a diffusers AutoencoderKL): the original Latte's per-frame VAE.
SD_VAE_CONFIG = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
    "act_fn": "silu", "sample_size": 256, "scaling_factor": 0.18215, "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
}
SD_VAE = "sd-vae"


def meta_vae(name: str) -> VideoAutoencoder:
    """A bundled VAE preset, or `sd-vae` (SD-VAE per frame), on the meta device."""
    with torch.device("meta"):
        return PerFrameVAE(SD_VAE_CONFIG) if name == SD_VAE else build_autoencoder(name)


def latent_shape(vae: VideoAutoencoder, num_frames: int, resolution: int) -> tuple[int, int, int, int]:
    """(C, F, H, W) of one clip's latent."""
    vae.check_frame_size(resolution, resolution)
    size = resolution // vae.spatial_compression_ratio
    return vae.latent_channels, vae.latent_num_frames(num_frames), size, size


def encode_flops(vae: VideoAutoencoder, num_frames: int, resolution: int) -> int:
    """FLOPs of encoding one clip (what the latent cache pays per clip)."""
    video = torch.empty(1, 3, num_frames, resolution, resolution, device="meta")
    return count_flops(lambda: vae.encode(video).latent_dist.mode())[1]


def vae_step_flops(vae: VideoAutoencoder, num_frames: int, resolution: int) -> int:
    """FLOPs of one clip's autoencoder training step: encode, decode, backward (without LPIPS and the GAN)."""
    video = torch.empty(1, 3, num_frames, resolution, resolution, device="meta")
    return count_flops(lambda: vae.train()(video).sample.sum().backward())[1]


def dit_step_flops(cfg: DiTTrainConfig, shape: tuple[int, int, int, int], num_classes: int) -> int:
    """FLOPs of one clip's DiT training step (forward and backward) on latents of `shape` (C, F, H, W), with
    `cfg.num_images` images beside it as Latte+IMG trains. Class labels are left out: a label is a table lookup,
    no FLOPs, and reading label values is what the meta device cannot do."""
    channels, frames, height, _ = shape
    with torch.device("meta"):
        dit = LatteDiT(**DIT_PRESETS[cfg.model.preset], in_channels=channels, num_frames=frames, sample_size=height,
                       num_classes=num_classes, learn_sigma=make_objective(cfg.objective).learn_sigma)
        x = torch.empty(1, channels, frames + cfg.num_images, height, height)
        t = torch.zeros(1, dtype=torch.long)
    return count_flops(lambda: dit(x, t, num_images=cfg.num_images).sample.sum().backward())[1]


@dataclass
class RecipeCost:
    """One DiT recipe with one VAE: per-step and total FLOPs of training, and the latent cache's."""

    recipe: str
    vae: str
    latent: tuple[int, int, int, int]
    steps: int
    batch: int  # clips per step over all RECIPE_GPUS
    step_flops: int
    cache_flops: int

    @property
    def train_flops(self) -> float:
        return float(self.steps) * self.step_flops

    def gpu_hours(self, gpu: str, mfu: float) -> float:
        return (self.train_flops + self.cache_flops) / (GPU_PEAKS[gpu] * mfu) / 3600


def dit_recipe_cost(config_path: str, vae_name: str, dataset_videos: dict[str, int] = DATASET_VIDEOS) -> RecipeCost:
    """The cost of the DiT recipe at `config_path` (configs/dit/latte-xl2-*.yaml) on `vae_name`'s latents; the
    SD-VAE per frame takes Latte's 16 frames, the video VAEs the recipe's 17."""
    cfg = load_config(DiTTrainConfig, config_path, ["data.num_frames=16"] if vae_name == SD_VAE else [])
    vae = meta_vae(vae_name)
    num_frames, resolution, name = cfg.data["num_frames"], cfg.data["resolution"], cfg.data["name"]
    shape = latent_shape(vae, num_frames, resolution)
    batch = cfg.clips_per_step * RECIPE_GPUS
    num_classes = 101 if cfg.conditional else 0  # UCF-101's; the count does not change the FLOPs
    return RecipeCost(recipe=config_path, vae=vae_name, latent=shape, steps=cfg.max_steps, batch=batch,
                      step_flops=batch * dit_step_flops(cfg, shape, num_classes),
                      cache_flops=dataset_videos[name] * encode_flops(vae, num_frames, resolution))


def vae_recipe_cost(config_path: str) -> RecipeCost:
    """The cost of training a VAE by its recipe (configs/vae/<official size>.yaml); no latent cache."""
    cfg = load_config(VAETrainConfig, config_path, ["data.root=."])  # a folder recipe: the cost reads no video
    vae = meta_vae(cfg.model["preset"])
    shape = latent_shape(vae, cfg.data.num_frames, cfg.data.resolution)
    batch = cfg.clips_per_step * RECIPE_GPUS
    return RecipeCost(recipe=config_path, vae=cfg.model["preset"], latent=shape, steps=cfg.max_steps, batch=batch,
                      step_flops=batch * vae_step_flops(vae, cfg.data.num_frames, cfg.data.resolution),
                      cache_flops=0)
