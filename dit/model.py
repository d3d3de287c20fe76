"""Latte (variant 1) video diffusion transformer as a diffusers model.

Each frame is patch-embedded in 2-D with a fixed sin-cos position embedding; spatial blocks (attention within
a frame) and temporal blocks (attention across frames at one position) alternate, both conditioned with
adaLN-Zero on c = timestep embedding + class embedding. The output has 2C channels (noise, variance range).
"""

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import (
    TimestepEmbedding,
    Timesteps,
    get_1d_sincos_pos_embed_from_grid,
    get_2d_sincos_pos_embed,
)
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import nn

from .layers import FinalLayer, LabelEmbedder, LatteBlock
from .official import load_official

TIMESTEP_FREQ_DIM = 256


class LatteDiT(ModelMixin, ConfigMixin):
    """`model(x, timestep, class_labels=None).sample`: (B, C, F, H, W) -> (B, 2C, F, H, W) (C if not learn_sigma).

    `num_classes=0` builds an unconditional model; otherwise class index `num_classes` is the null class, used
    for all samples when `class_labels` is None and for the labels `force_drop_ids` marks (in training mode
    without it, a `class_dropout_prob` share of labels drawn from the global RNG).
    `gelu="tanh"` is the official Latte's approximate GELU (imported checkpoints, `from_official_checkpoint`).
    `class_embed_std` is the class table's initial spread: DiT and Latte use 0.02, which leaves the classes
    nearly indistinguishable to the zero-initialised adaLN layers until the table has grown, a wait that runs of
    a few thousand steps cannot afford; ~1 lets them condition on the class from the start.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["LatteBlock"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        num_frames: int = 16,
        sample_size: int = 32,
        patch_size: int = 2,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_classes: int = 0,
        class_dropout_prob: float = 0.1,
        learn_sigma: bool = True,
        class_embed_std: float = 0.02,
        gelu: str = "none",
    ):
        super().__init__()
        _check_config(sample_size, patch_size, hidden_size, depth, num_heads, num_classes, class_dropout_prob,
                      class_embed_std, gelu)
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        grid = sample_size // patch_size

        # Per-frame patch embedding as a linear map of flattened p x p patches: the maths of a stride-p Conv2d,
        # but tokens come out in the (B, F, N, D) layout without a permute of the D-wide output.
        self.x_embedder = nn.Linear(in_channels * patch_size * patch_size, hidden_size)
        self.time_proj = Timesteps(TIMESTEP_FREQ_DIM, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.t_embedder = TimestepEmbedding(TIMESTEP_FREQ_DIM, hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob) if num_classes > 0 else None
        self.blocks = nn.ModuleList(
            [LatteBlock(hidden_size, num_heads, mlp_ratio, temporal=i % 2 == 1, gelu=gelu) for i in range(depth)]
        )
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)

        # Fixed embeddings are recomputed at construction, so they stay out of checkpoints.
        pos = get_2d_sincos_pos_embed(hidden_size, grid, base_size=grid, output_type="pt")  # (N, D)
        frames = torch.arange(num_frames, dtype=torch.float64)
        temp = get_1d_sincos_pos_embed_from_grid(hidden_size, frames, output_type="pt")  # (F, D)
        self.register_buffer("pos_embed", pos.float(), persistent=False)
        self.register_buffer("temp_embed", temp.float()[:, None], persistent=False)  # (F, 1, D)

        self.gradient_checkpointing = False
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.t_embedder.linear_1.weight, std=0.02)
        nn.init.normal_(self.t_embedder.linear_2.weight, std=0.02)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=self.config.class_embed_std)
        # adaLN-Zero: every block starts as the identity and the model output starts at exactly zero.
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor | int | float,
        class_labels: torch.Tensor | None = None,
        force_drop_ids: torch.Tensor | None = None,
        return_dict: bool = True,
        num_images: int = 0,
        image_labels: torch.Tensor | None = None,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """`force_drop_ids` (B,), or (B, 1 + num_images) with images: 1 where a label is replaced by the null
        class, training's label dropout. `num_images` > 0 (Latte+IMG's joint training): the last num_images
        frames of hidden_states are single images, each with its label in `image_labels` (B, num_images); the
        spatial blocks see every frame with its own conditioning, the temporal blocks only the video's frames."""
        self._check_input(hidden_states, num_images)
        B, p, F = hidden_states.shape[0], self.config.patch_size, self.config.num_frames
        x = rearrange(hidden_states, "b c f (h p) (w q) -> b f (h w) (c p q)", p=p, q=p)  # (B, F+I, N, C*p*p)
        x = self.x_embedder(x)  # (B, F+I, N, D)
        x = x + self.pos_embed.to(x.dtype)

        t_freq = self.time_proj(self._timesteps(timestep, B, x.device))  # (B, 256) float32
        t = self.t_embedder(t_freq.to(self.t_embedder.linear_1.weight.dtype))  # (B, D)
        c, c_frames = self._conditioning(t, class_labels, force_drop_ids, num_images, image_labels)

        checkpoint = torch.is_grad_enabled() and self.gradient_checkpointing

        def run(block: nn.Module, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
            return self._gradient_checkpointing_func(block, h, cond) if checkpoint else block(h, cond)

        for i, block in enumerate(self.blocks):
            if not block.temporal:
                x = run(block, x, c_frames)
                continue
            video = x[:, :F] + self.temp_embed.to(x.dtype) if i == 1 else x[:, :F]  # before the first temporal block
            video = run(block, video, c)  # (B, F, N, D): images skip the temporal blocks
            x = torch.cat([video, x[:, F:]], dim=1) if num_images else video

        x = self.final_layer(x, c_frames)  # (B, F+I, N, p*p*C_out)
        grid = self.config.sample_size // p
        out = rearrange(x, "b f (h w) (c p q) -> b c f (h p) (w q)", h=grid, p=p, q=p)  # (B, C_out, F+I, H, W)
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)

    def _conditioning(self, t: torch.Tensor, class_labels, force_drop_ids, num_images: int, image_labels):
        """c (B, D) of the video, and the per-frame conditioning of the spatial blocks: c itself without images,
        else (B, F + I, D) with each image's own label."""
        B = t.shape[0]
        if self.y_embedder is None:
            if class_labels is not None or image_labels is not None:
                raise ValueError("this model is unconditional (num_classes=0): pass class_labels=None")
            return t, (t if not num_images else t[:, None].expand(B, self.config.num_frames + num_images, -1))
        if force_drop_ids is not None and force_drop_ids.ndim == 2:
            force_drop_ids, image_drop = force_drop_ids[:, 0], force_drop_ids[:, 1:]
        else:
            image_drop = None if force_drop_ids is None else force_drop_ids[:, None].expand(B, num_images)
        c = t + self.y_embedder(self._labels(class_labels, (B,), t.device), force_drop_ids)  # (B, D)
        if not num_images:
            return c, c
        images = t[:, None] + self.y_embedder(self._labels(image_labels, (B, num_images), t.device), image_drop)
        return c, torch.cat([c[:, None].expand(B, self.config.num_frames, -1), images], dim=1)  # (B, F + I, D)

    @classmethod
    def from_official_checkpoint(cls, path, **overrides) -> "LatteDiT":
        """The released Latte weights (Vchitect/Latte's ucf101.pt, skytimelapse.pt, ...; LeanVAE's ucf-dim4.pt,
        sky-dim16.pt, ...), EMA preferred; the configuration is read from the tensors, `overrides` add to it (e.g.
        `num_heads` for a width the presets do not name). Outputs equal the official model's."""
        return load_official(cls, path, **overrides)

    def _check_input(self, x: torch.Tensor, num_images: int) -> None:
        cfg = self.config
        if num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        expected = (cfg.in_channels, cfg.num_frames + num_images, cfg.sample_size, cfg.sample_size)
        if x.ndim != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"expected latents of shape (B, C, F, H, W) = (B, {', '.join(map(str, expected))}) "
                f"(in_channels, num_frames{' + num_images' if num_images else ''}, sample_size, sample_size), "
                f"got {tuple(x.shape)}"
            )

    @staticmethod
    def _timesteps(timestep: torch.Tensor | int | float, batch: int, device: torch.device) -> torch.Tensor:
        t = torch.as_tensor(timestep, device=device)
        if t.ndim == 0:
            return t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"timestep must be a scalar or of shape ({batch},), got {tuple(t.shape)}")
        return t

    def _labels(self, class_labels: torch.Tensor | None, shape: tuple, device: torch.device) -> torch.Tensor:
        null = self.config.num_classes
        if class_labels is None:
            return torch.full(shape, null, dtype=torch.long, device=device)
        if tuple(class_labels.shape) != shape or class_labels.is_floating_point() or class_labels.is_complex():
            raise ValueError(
                f"class labels must be an integer tensor of shape {shape}, "
                f"got {class_labels.dtype} of shape {tuple(class_labels.shape)}"
            )
        if bool(((class_labels < 0) | (class_labels > null)).any()):
            raise ValueError(f"class_labels must lie in [0, {null}] ({null} is the null class)")
        return class_labels.to(device)


def _check_config(sample_size, patch_size, hidden_size, depth, num_heads, num_classes, class_dropout_prob,
                  class_embed_std, gelu) -> None:
    if gelu not in ("none", "tanh"):
        raise ValueError(f"gelu must be 'none' (exact) or 'tanh' (the approximation of the official Latte), got {gelu!r}")
    if sample_size % patch_size != 0:
        raise ValueError(f"sample_size ({sample_size}) must be a multiple of patch_size ({patch_size})")
    if depth < 2 or depth % 2 != 0:
        raise ValueError(f"depth counts spatial + temporal blocks, so it must be even and >= 2, got {depth}")
    if hidden_size % num_heads != 0 or hidden_size % 4 != 0:
        raise ValueError(f"hidden_size ({hidden_size}) must be a multiple of 4 and of num_heads ({num_heads})")
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0 (0 = unconditional), got {num_classes}")
    if not 0.0 <= class_dropout_prob < 1.0:
        raise ValueError(f"class_dropout_prob must lie in [0, 1), got {class_dropout_prob}")
    if class_embed_std <= 0:
        raise ValueError(f"class_embed_std must be > 0, got {class_embed_std}")
