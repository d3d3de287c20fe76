"""`pipelines.training.recipe_cost`: the FLOPs a step is counted at on the meta device are those of a real step."""

import torch

from dit import DIT_PRESETS, LatteDiT
from pipelines.training.dit_trainer import DiTModelConfig, DiTTrainConfig
from pipelines.training.monitor import count_flops
from pipelines.training.recipe_cost import (GPU_PEAKS, RECIPE_GPUS, dit_recipe_cost, dit_step_flops, encode_flops,
                                            latent_shape, meta_vae, vae_step_flops)
from vae import build_autoencoder


def test_a_dit_step_counted_on_the_meta_device_is_a_real_step():
    cfg = DiTTrainConfig(num_images=2, model=DiTModelConfig("Latte-tiny"))
    shape = (4, 3, 8, 8)
    torch.manual_seed(0)
    dit = LatteDiT(**DIT_PRESETS["Latte-tiny"], in_channels=4, num_frames=3, sample_size=8, num_classes=5)
    x, labels = torch.randn(1, 4, 3 + 2, 8, 8), torch.tensor([3])  # real labels: the meta count leaves them out
    _, real = count_flops(lambda: dit(x, torch.tensor([7]), labels, num_images=2,
                                      image_labels=torch.tensor([[1, 2]])).sample.sum().backward())
    assert dit_step_flops(cfg, shape, num_classes=5) == real > 0


def test_a_vae_encode_and_step_counted_on_the_meta_device_are_real_ones():
    torch.manual_seed(0)
    vae, video = build_autoencoder("lean-tiny"), torch.rand(1, 3, 5, 32, 32) * 2 - 1
    _, encode = count_flops(lambda: vae.encode(video).latent_dist.mode())
    _, step = count_flops(lambda: vae(video).sample.sum().backward())
    meta = meta_vae("lean-tiny")
    assert latent_shape(meta, 5, 32) == (meta.latent_channels, 2, 4, 4)
    assert encode_flops(meta, 5, 32) == encode > 0
    assert vae_step_flops(meta, 5, 32) == step > 2 * encode


def test_a_recipe_costs_its_steps_times_its_step_and_its_cache():
    cost = dit_recipe_cost("configs/dit/latte-xl2-ucf101.yaml", "sd-vae", {"ucf101": 10, "sky": 1})
    assert cost.latent == (4, 16, 32, 32) and cost.batch == 5 * RECIPE_GPUS and cost.steps == 150_000
    cfg = DiTTrainConfig(model=DiTModelConfig("Latte-XL/2"))
    assert cost.step_flops == cost.batch * dit_step_flops(cfg, cost.latent, 101)
    assert cost.cache_flops == 10 * encode_flops(meta_vae("sd-vae"), 16, 256)
    hours = (cost.steps * cost.step_flops + cost.cache_flops) / (GPU_PEAKS["A100"] * 0.5) / 3600
    assert abs(cost.gpu_hours("A100", 0.5) - hours) < 1e-9 * hours
