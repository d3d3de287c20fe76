"""`LatteVideoPipeline`: class-conditional video generation with a Latte DiT, a diffusers scheduler and LeanVAE.

    pipe = LatteVideoPipeline.from_pretrained("runs/default/pipeline")
    videos = pipe(class_labels=[12, 12], guidance_scale=4.0, num_inference_steps=50,
                  generator=torch.Generator().manual_seed(0)).videos      # (2, 3, T, H, W) in [-1, 1]

The DiT predicts noise and (learned sigma) a variance interpolation: 2C channels. Classifier-free guidance
mixes the noise channels only. DDPM gets both halves (`variance_type="learned_range"` respaces IDDPM's learned
variance correctly); DDIM and DPM-Solver are given only the noise half. Latents are decoded with LeanVAE's
causal-cache chunked decoding, so memory is set by `decode_chunk_size`, not by the video's length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

# diffusers loads a saved pipeline's components only from modules already imported: these are ours.
import dit.model  # noqa: F401,E402
import vae.model  # noqa: F401,E402

SCHEDULERS = ("ddpm", "ddim", "dpm")
TRAIN_SCHEDULE = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")


def make_scheduler(name: str = "ddpm"):
    """The sampling scheduler `name` over the training noise schedule (linear betas, 1000 steps)."""
    if name == "ddpm":
        return DDPMScheduler(**TRAIN_SCHEDULE, variance_type="learned_range", clip_sample=False)
    if name == "ddim":
        return DDIMScheduler(**TRAIN_SCHEDULE, clip_sample=False, set_alpha_to_one=False)
    if name == "dpm":
        return DPMSolverMultistepScheduler(**TRAIN_SCHEDULE)
    raise ValueError(f"unknown scheduler '{name}': choose one of {', '.join(SCHEDULERS)}")


def _takes_variance(scheduler) -> bool:
    return getattr(scheduler.config, "variance_type", None) in ("learned", "learned_range") and isinstance(
        scheduler, DDPMScheduler
    )


@dataclass
class LatteVideoPipelineOutput(BaseOutput):
    videos: torch.Tensor  # (B, 3, T, H, W) in [-1, 1]; uint8 (B, T, H, W, 3) for output_type="np"; latents for "latent"


class LatteVideoPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "transformer->vae"

    def __init__(self, transformer, vae, scheduler, class_names: Optional[list] = None,
                 default_guidance_scale: float = 1.0):
        super().__init__()
        # Inference only: no label dropout (the DiT drops labels in training mode) even for models made in code.
        self.register_modules(transformer=transformer.eval(), vae=vae.eval(), scheduler=scheduler)
        # Saved in model_index.json: what the classes are called and the guidance the recipe samples with.
        self.register_to_config(class_names=list(class_names or []), default_guidance_scale=default_guidance_scale)

    @property
    def class_names(self) -> list:
        return list(self.config.class_names)

    @property
    def default_guidance_scale(self) -> float:
        return float(self.config.default_guidance_scale)

    @property
    def num_classes(self) -> int:
        return self.transformer.config.num_classes

    def check_inputs(self, class_labels, num_inference_steps: int, guidance_scale: float,
                     decode_chunk_size: int) -> None:
        k = self.num_classes
        if k == 0 and class_labels is not None and any(c is not None for c in class_labels):
            raise ValueError("this model is unconditional (num_classes=0): pass class_labels=None")
        if k > 0 and class_labels is not None:
            bad = [c for c in class_labels if not (isinstance(c, int) and 0 <= c < k)]
            if bad:
                raise ValueError(f"class labels must be integers in [0, {k - 1}] for this model, got {bad}")
        if num_inference_steps < 1 or num_inference_steps > self.scheduler.config.num_train_timesteps:
            raise ValueError(f"num_inference_steps must be in [1, {self.scheduler.config.num_train_timesteps}], "
                             f"got {num_inference_steps}")
        if guidance_scale < 1.0:
            raise ValueError(f"guidance_scale must be >= 1 (1 = no guidance), got {guidance_scale}")
        if guidance_scale > 1.0 and k == 0:
            raise ValueError("classifier-free guidance needs a class-conditional model; use guidance_scale=1")
        if decode_chunk_size is not None and decode_chunk_size < 1:
            raise ValueError(f"decode_chunk_size counts latent frames and must be >= 1, got {decode_chunk_size}")

    def _predict_noise(self, latents: torch.Tensor, t: torch.Tensor, labels: Optional[torch.Tensor],
                       guidance_scale: float) -> torch.Tensor:
        """Model output for the scheduler: noise (B, C, ...) or noise + variance (B, 2C, ...)."""
        c = latents.shape[1]
        guided = guidance_scale > 1.0
        model_in = torch.cat([latents, latents]) if guided else latents  # (B or 2B, C, F, h, w)
        if guided:
            labels = torch.cat([labels, torch.full_like(labels, self.num_classes)])  # last row: the null class
        timestep = t.expand(model_in.shape[0]).to(latents.device)
        out = self.transformer(model_in, timestep, class_labels=labels).sample  # (B or 2B, 2C, F, h, w)
        eps, variance = out[:, :c], out[:, c:]
        if guided:
            cond, uncond = eps.chunk(2)
            eps = uncond + guidance_scale * (cond - uncond)
            variance = variance.chunk(2)[0]
        return torch.cat([eps, variance], dim=1) if _takes_variance(self.scheduler) else eps

    @torch.no_grad()
    def __call__(
        self,
        class_labels: Optional[Sequence[int]] = None,
        num_videos: Optional[int] = None,
        num_inference_steps: int = 250,
        guidance_scale: float = 1.0,
        generator: Union[torch.Generator, list, None] = None,
        decode_chunk_size: Optional[int] = 1,
        output_type: str = "pt",
        progress: bool = True,
        return_dict: bool = True,
    ):
        """Generate one video per entry of `class_labels` (or `num_videos` unconditional ones)."""
        if class_labels is None:
            class_labels = [None] * (num_videos or 1)
        class_labels = list(class_labels)
        self.check_inputs(class_labels, num_inference_steps, guidance_scale, decode_chunk_size)
        if output_type not in ("pt", "np", "latent"):
            raise ValueError(f"output_type must be pt, np or latent, got {output_type!r}")
        cfg = self.transformer.config
        device, dtype = self._execution_device, self.transformer.dtype
        labels = None
        if self.num_classes > 0:
            labels = torch.tensor([self.num_classes if c is None else c for c in class_labels], device=device)
        shape = (len(class_labels), cfg.in_channels, cfg.num_frames, cfg.sample_size, cfg.sample_size)
        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        latents = latents * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        for t in tqdm(self.scheduler.timesteps, desc="sampling", disable=not progress, leave=False):
            model_in = self.scheduler.scale_model_input(latents, t)
            model_out = self._predict_noise(model_in, t, labels, guidance_scale)
            latents = self.scheduler.step(model_out, t, latents, generator=generator).prev_sample
        if output_type == "latent":
            return LatteVideoPipelineOutput(videos=latents) if return_dict else (latents,)
        z = latents.to(self.vae.dtype) / self.vae.config.scaling_factor
        video = self.vae.decode(z, chunk_size=decode_chunk_size).sample.clamp(-1, 1)  # (B, 3, T, H, W)
        if output_type == "np":
            video = ((video + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).cpu()  # (B, T, H, W, 3)
        return LatteVideoPipelineOutput(videos=video) if return_dict else (video,)
