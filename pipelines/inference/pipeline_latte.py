"""`LatteVideoPipeline`: class-conditional video generation with a Latte DiT, a diffusers scheduler and any
bundled video VAE.

    pipe = LatteVideoPipeline.from_pretrained("runs/default/dit/pipeline")
    frames = pipe(class_labels=[12, 12], guidance_scale=4.0, num_inference_steps=50,
                  generator=torch.Generator().manual_seed(0), output_type="np").frames   # (2, T, H, W, 3) in [0, 1]

The DiT predicts noise and (learned sigma) a variance interpolation: 2C channels; or, trained with rectified
flow, a velocity (C channels) that `FlowMatchEulerDiscreteScheduler` integrates. Classifier-free guidance
mixes the noise (velocity) channels only (all of them, or the first `guidance_channels` as Latte's official
sampler), at the steps whose noise level t / T lies in `guidance_interval` (default: all of them). DDPM gets both
halves (`variance_type="learned_range"` respaces IDDPM's learned variance correctly); DDIM and
DPM-Solver are given only the noise half. Latents are denormalised with the
VAE's `latents_mean/std` and decoded with causal-cache chunks, so memory is set by `decode_chunk_size`, not by
the video's length. Outputs follow diffusers' video pipelines (`VideoProcessor`): "pt" (B, T, 3, H, W) and
"np" (B, T, H, W, 3) in [0, 1], "pil" lists of frames, "latent" the DiT's (normalised) latents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import torch
from diffusers import DDPMScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor

# diffusers loads a saved pipeline's components only from modules already imported (model_index.json names them,
# e.g. "vae.leanvae.model"): import every bundled model.
import dit as _dit  # noqa: F401
import vae as _vae  # noqa: F401

from ..common.errors import ConfigError

OUTPUT_TYPES = ("pt", "np", "pil", "latent")


def check_guidance_interval(interval: Sequence[float]) -> tuple[float, float]:
    """(low, high) of a guidance interval: noise levels t / T, 0 <= low < high <= 1; a ConfigError (a ValueError)
    otherwise."""
    if len(interval) != 2 or not 0.0 <= interval[0] < interval[1] <= 1.0:
        raise ConfigError(f"guidance_interval is [low, high] noise levels with 0 <= low < high <= 1, "
                         f"got {list(interval)}")
    return float(interval[0]), float(interval[1])


@dataclass
class LatteVideoPipelineOutput(BaseOutput):
    frames: Any  # see the module docstring for each output_type's layout


class LatteVideoPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "transformer->vae"
    _callback_tensor_inputs = ["latents"]

    def __init__(self, transformer, vae, scheduler, class_names: Optional[list] = None,
                 default_guidance_scale: float = 1.0, guidance_channels: Optional[int] = None,
                 default_guidance_interval: Union[tuple, list] = (0.0, 1.0)):
        # (Union[tuple, list], not Sequence[float]: diffusers reads these annotations and warns on Sequence.)
        super().__init__()
        # Inference only: no label dropout (the DiT drops labels in training mode) even for models made in code.
        self.register_modules(transformer=transformer.eval(), vae=vae.eval(), scheduler=scheduler)
        # Saved in model_index.json: what the classes are called and the guidance the recipe samples with.
        # guidance_channels=4 guides only the first 4 noise channels, as Latte's official sampler does (it matters
        # for 16-channel latents; published numbers were made so); None guides them all. The interval limits
        # guidance to middle noise levels (Kynkaanniemi et al. 2024): at the noisiest steps it pulls every video
        # of a class towards one layout, at the last ones it only sharpens what is already decided.
        self.register_to_config(class_names=list(class_names or []), default_guidance_scale=default_guidance_scale,
                                guidance_channels=guidance_channels,
                                default_guidance_interval=list(check_guidance_interval(default_guidance_interval)))
        self.video_processor = VideoProcessor(vae_scale_factor=vae.spatial_compression_ratio)

    @property
    def class_names(self) -> list:
        return list(self.config.class_names)

    @property
    def default_guidance_scale(self) -> float:
        return float(self.config.default_guidance_scale)

    @property
    def default_guidance_interval(self) -> tuple[float, float]:
        lo, hi = self.config.default_guidance_interval
        return float(lo), float(hi)

    @property
    def num_classes(self) -> int:
        return self.transformer.config.num_classes

    @property
    def num_frames(self) -> int:
        """Frames of a generated video."""
        return self.vae.video_num_frames(self.transformer.config.num_frames)

    @property
    def _scales_input(self) -> bool:
        return hasattr(self.scheduler, "scale_model_input")

    def check_inputs(self, class_labels: list, num_inference_steps: int, guidance_scale: float,
                     decode_chunk_size: Optional[int], output_type: str, generator,
                     callback_on_step_end_tensor_inputs: Sequence[str],
                     guidance_interval: Sequence[float] = (0.0, 1.0)) -> None:
        k = self.num_classes
        if k == 0 and any(c is not None for c in class_labels):
            raise ValueError("this model is unconditional (num_classes=0): pass class_labels=None")
        bad = [c for c in class_labels if k > 0 and not (isinstance(c, int) and 0 <= c < k)]
        if bad:
            raise ValueError(f"class labels must be integers in [0, {k - 1}] for this model, got {bad}")
        if not 1 <= num_inference_steps <= self.scheduler.config.num_train_timesteps:
            raise ValueError(f"num_inference_steps must be in [1, {self.scheduler.config.num_train_timesteps}], "
                             f"got {num_inference_steps}")
        if guidance_scale < 1.0 or (guidance_scale > 1.0 and k == 0):
            raise ValueError(f"guidance_scale must be >= 1 (1 = no guidance), and 1 for an unconditional model; "
                             f"got {guidance_scale}")
        check_guidance_interval(guidance_interval)
        if decode_chunk_size is not None and decode_chunk_size < 1:
            raise ValueError(f"decode_chunk_size counts latent frames and must be >= 1, got {decode_chunk_size}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
        if isinstance(generator, list) and len(generator) != len(class_labels):
            raise ValueError(f"got {len(generator)} generators for {len(class_labels)} videos: pass one per video")
        unknown = [name for name in callback_on_step_end_tensor_inputs if name not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs must be in {self._callback_tensor_inputs}, "
                             f"got {unknown}")

    def prepare_latents(self, batch: int, dtype: torch.dtype, device: torch.device, generator,
                        latents: Optional[torch.Tensor] = None) -> torch.Tensor:
        cfg = self.transformer.config
        shape = (batch, cfg.in_channels, cfg.num_frames, cfg.sample_size, cfg.sample_size)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        # Flow-matching schedulers start from unit noise and have no init_noise_sigma / scale_model_input.
        return latents.to(device=device, dtype=dtype) * getattr(self.scheduler, "init_noise_sigma", 1.0)

    def _model_output(self, latents: torch.Tensor, t: torch.Tensor, labels: Optional[torch.Tensor],
                      guidance_scale: float) -> torch.Tensor:
        """What the scheduler steps with, guided: the predicted noise (IDDPM; with the learned variance, (B, 2C, ...),
        for a DDPM scheduler that uses it) or the velocity (rectified flow), (B, C, ...)."""
        c = latents.shape[1]
        guided = guidance_scale > 1.0
        model_in = torch.cat([latents, latents]) if guided else latents  # (B or 2B, C, F, h, w)
        if guided:
            labels = torch.cat([labels, torch.full_like(labels, self.num_classes)])  # last row: the null class
        timestep = t.expand(model_in.shape[0]).to(latents.device)
        out = self.transformer(model_in, timestep, class_labels=labels).sample  # (B or 2B, 2C, F, h, w)
        pred, variance = out[:, :c], out[:, c:]
        if guided:
            cond, uncond = pred.chunk(2)
            k = self.config.guidance_channels or c
            pred = torch.cat([uncond[:, :k] + guidance_scale * (cond[:, :k] - uncond[:, :k]), cond[:, k:]], dim=1)
            variance = variance.chunk(2)[0]
        takes_variance = isinstance(self.scheduler, DDPMScheduler) and self.scheduler.config.variance_type in (
            "learned", "learned_range")
        return torch.cat([pred, variance], dim=1) if takes_variance else pred

    def decode_latents(self, latents: torch.Tensor, decode_chunk_size: Optional[int] = 1) -> torch.Tensor:
        """The DiT's latents (B, C, F, h, w) -> video (B, 3, T, H, W) in [-1, 1], float32."""
        z = self.vae.denormalize_latents(latents.to(self.vae.dtype))
        return self.vae.decode(z, chunk_size=decode_chunk_size).sample.float().clamp(-1, 1)

    @torch.no_grad()
    def __call__(
        self,
        class_labels: Optional[Sequence[int]] = None,
        num_videos: Optional[int] = None,
        num_inference_steps: int = 250,
        guidance_scale: Optional[float] = None,
        guidance_interval: Optional[Sequence[float]] = None,
        generator: Union[torch.Generator, list[torch.Generator], None] = None,
        latents: Optional[torch.Tensor] = None,
        decode_chunk_size: Optional[int] = 1,
        output_type: str = "pt",
        return_dict: bool = True,
        callback_on_step_end: Optional[Callable[["LatteVideoPipeline", int, torch.Tensor, dict], dict]] = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ):
        """Generate one video per entry of `class_labels` (or `num_videos` unconditional ones).

        `guidance_scale` defaults to the pipeline's `default_guidance_scale`, `guidance_interval` ([low, high]:
        guide only the steps at noise levels t / T within it) to its `default_guidance_interval`; `generator` may
        be a list, one per video, which makes each video the same whatever batch it is generated in.
        `callback_on_step_end(pipe, i, t, tensors)` runs after every denoising step and may return replacements
        for `tensors`.
        """
        class_labels = list(class_labels) if class_labels is not None else [None] * (num_videos or 1)
        guidance_scale = self.default_guidance_scale if guidance_scale is None else guidance_scale
        interval = self.default_guidance_interval if guidance_interval is None else guidance_interval
        self.check_inputs(class_labels, num_inference_steps, guidance_scale, decode_chunk_size, output_type,
                          generator, callback_on_step_end_tensor_inputs, interval)
        low, high = interval  # checked by check_inputs
        device, dtype = self._execution_device, self.transformer.dtype
        labels = None
        if self.num_classes > 0:
            labels = torch.tensor([self.num_classes if c is None else c for c in class_labels], device=device)
        latents = self.prepare_latents(len(class_labels), dtype, device, generator, latents)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        with self.progress_bar(total=len(self.scheduler.timesteps)) as bar:
            for i, t in enumerate(self.scheduler.timesteps):
                model_in = self.scheduler.scale_model_input(latents, t) if self._scales_input else latents
                level = float(t) / self.scheduler.config.num_train_timesteps  # 0: data, 1: noise
                scale = guidance_scale if low <= level <= high else 1.0  # 1: one unguided pass
                model_out = self._model_output(model_in, t, labels, scale)
                latents = self.scheduler.step(model_out, t, latents, generator=generator).prev_sample
                if callback_on_step_end is not None:
                    available = {"latents": latents}
                    tensors = {name: available[name] for name in callback_on_step_end_tensor_inputs}
                    latents = callback_on_step_end(self, i, t, tensors).get("latents", latents)
                bar.update()
        frames = latents
        if output_type != "latent":
            frames = self.video_processor.postprocess_video(self.decode_latents(latents, decode_chunk_size),
                                                            output_type)
        self.maybe_free_model_hooks()
        return LatteVideoPipelineOutput(frames=frames) if return_dict else (frames,)
