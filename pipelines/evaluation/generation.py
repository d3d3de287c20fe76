"""Sample a trained run and score it: FVD / IS by the StyleGAN-V protocol, plus class accuracy.

Benchmarks (UCF-101, SkyTimelapse) use the protocol's detectors: I3D features for FVD (`fvd2048_16f`) and the
UCF-101 C3D for IS (`isv2048_ucf`). The built-in synthetic data set has no such detector, so the project's
own video classifier, trained on that data (`python -m pipelines.training.classifier_trainer`), stands in for
both and the results are labelled as such; it also reports how often the requested class is recognised in
the samples. Each phase (generating, real clips, reconstructions) shows one progress bar.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from ..common.errors import ConfigError
from ..common.files import write_json
from ..common.layout import RunLayout
from ..common.pixels import to_uint8
from ..common.seeding import keyed_generator
from ..data import DataConfig, build_dataset, read_frames
from ..data.clips import frames_to_tensor
from ..inference.loading import find_pipeline, load_pipeline
from ..inference.media import save_grid, save_videos
from .classifier import ClassifierDetector, load_classifier
from .detectors import C3D_UCF101, I3D, load_detector
from .metrics import (FVD2048_16F, ISV2048_UCF, LATTE_REAL_FRAME_STRIDE, classification_accuracy, detector_outputs,
                      fvd_from_features, inception_score_from_probs, real_clip_plan, to_probabilities)

DATASETS = ("synthetic", "ucf101", "sky")


@dataclass
class EvalConfig:
    run: str = "runs/default"
    dataset: str = "synthetic"  # synthetic | ucf101 | sky
    data_root: str = ""  # the real videos FVD compares against (ucf101 / sky)
    num_fake: Optional[int] = None  # None: the protocol's 2048 (synthetic: 16 per class)
    num_real: Optional[int] = None  # None: 2048 (synthetic: as many as generated)
    steps: int = 100
    scheduler: str = "ddpm"
    guidance_scale: Optional[float] = None  # None: the run's default
    batch_size: int = 32
    seed: int = 0
    device: Optional[str] = None
    precision: str = "fp32"  # the DiT's
    vae_precision: str = "fp32"
    detector_cache: Optional[str] = None  # folder of i3d_torchscript.pt / c3d_ucf101.pt
    videos_to_keep: int = 2  # mp4 files written per class (all scores use every sample)
    num_frames: int = FVD2048_16F.num_frames  # frames scored per video: the protocol's 16 (fewer: smoke tests)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ConfigError(f"dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        if self.dataset != "synthetic" and not self.data_root:
            raise ConfigError(f"data_root (--data-root) is needed for dataset {self.dataset}: the real videos FVD "
                              f"compares against")
        for key in ("steps", "batch_size", "num_frames"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")


class _Scores:
    """The detectors of one evaluation and what they returned for the generated videos."""

    def __init__(self, fvd_detector, is_detector, note: str):
        self.fvd_detector, self.is_detector, self.note = fvd_detector, is_detector, note
        self.features: list[np.ndarray] = []
        self.probs: list[np.ndarray] = []

    def add(self, videos: torch.Tensor) -> None:
        """Score uint8 (B, 3, n, H, W) generated videos."""
        self.features.append(detector_outputs(self.fvd_detector, [videos], I3D.call_kwargs, progress=False))
        if self.is_detector is not None:
            self.probs.append(to_probabilities(detector_outputs(self.is_detector, [videos], C3D_UCF101.call_kwargs,
                                                                progress=False)))


def _detectors(cfg: EvalConfig, run: RunLayout, device) -> _Scores:
    if cfg.dataset == "synthetic":
        detector = ClassifierDetector(load_classifier(run.classifier, device))
        return _Scores(detector, detector, "offline stand-in: FVD and IS computed with the project's classifier "
                       "trained on the synthetic data, not I3D / C3D; not comparable to published numbers")
    fvd_detector = load_detector(I3D, device, cfg.detector_cache)
    is_detector = load_detector(C3D_UCF101, device, cfg.detector_cache) if cfg.dataset == "ucf101" else None
    return _Scores(fvd_detector, is_detector,
                   f"StyleGAN-V protocol: {FVD2048_16F.name}" + (f", {ISV2048_UCF.name}" if is_detector else ""))


def _generate(pipe, labels: list, cfg: EvalConfig) -> Iterator[torch.Tensor]:
    """Generated videos as uint8 (B, 3, n, H, W) batches; the protocol scores each video's first n = 16 frames.
    Video i is drawn from a generator keyed by (seed, i): the same whatever the batch size."""
    guidance = cfg.guidance_scale if cfg.guidance_scale is not None else pipe.default_guidance_scale
    if pipe.num_frames < cfg.num_frames:
        raise ConfigError(f"the model generates {pipe.num_frames} frames; {cfg.num_frames} are scored per video")
    batches = range(0, len(labels), cfg.batch_size)
    with tqdm(total=len(batches) * cfg.steps, desc=f"generating {len(labels)} videos", unit="step") as bar:

        def tick(*_) -> dict:  # callback_on_step_end: one bar over every batch's denoising steps
            bar.update()
            return {}

        for start in batches:
            batch = labels[start:start + cfg.batch_size]
            latents = pipe(class_labels=batch if pipe.num_classes else None, num_videos=len(batch),
                           num_inference_steps=cfg.steps, guidance_scale=guidance, output_type="latent",
                           generator=[keyed_generator(cfg.seed, start + i) for i in range(len(batch))],
                           callback_on_step_end=tick).frames
            videos = pipe.decode_latents(latents)  # (B, 3, T, H, W) in [-1, 1]
            yield to_uint8(videos[:, :, :cfg.num_frames].cpu())


def _held_out_synthetic(cfg: EvalConfig, resolution: int, count: int, classes: int, clip_frames: int):
    """Synthetic clips of another seed than the training set's, as long as the clips the models were trained on."""
    return build_dataset(DataConfig(name="synthetic", num_samples=count, num_frames=clip_frames,
                                    resolution=resolution, synthetic_classes=classes or 16, seed=10_000 + cfg.seed))


def _real_clips(cfg: EvalConfig, resolution: int, count: int, classes: int,
                clip_frames: int) -> Iterator[torch.Tensor]:
    """Real clips as the protocol cuts them: 16 frames from a seeded random start (Latte's stride 3); synthetic
    clips are cut like the generated ones: the first 16 frames of a `clip_frames`-frame clip."""
    if cfg.dataset == "synthetic":
        data = _held_out_synthetic(cfg, resolution, count, classes, clip_frames)
        for i in range(count):
            yield data[i]["video"][:, :cfg.num_frames]
        return
    data = build_dataset(DataConfig(name=cfg.dataset, root=cfg.data_root, split="train" if cfg.dataset == "sky"
                                    else "all", num_frames=1, resolution=resolution, clip_sampling="center"))
    plan = real_clip_plan([s.num_frames for s in data.samples], count, cfg.num_frames, LATTE_REAL_FRAME_STRIDE,
                          seed=cfg.seed)
    for video_index, frames in plan:
        yield frames_to_tensor(read_frames(data.samples[video_index].path, frames.tolist()), resolution)


def _reconstruction_accuracy(pipe, detector, cfg: EvalConfig, resolution: int, count: int, classes: int,
                             clip_frames: int) -> float:
    """How often the detector recognises the class of held-out synthetic clips after a VAE round trip: the
    ceiling for generated clips, which the same decoder makes; it tells a VAE that loses the class from a weak DiT."""
    vae = pipe.vae
    data = _held_out_synthetic(cfg, resolution, count, classes, clip_frames)

    def reconstructions() -> Iterator[torch.Tensor]:
        for start in range(0, count, cfg.batch_size):
            x = torch.stack([data[i]["video"] for i in range(start, min(start + cfg.batch_size, count))])
            with torch.no_grad():
                z = vae.encode(x.to(vae.device, vae.dtype)).latent_dist.mean  # (B, d, T', h, w)
                video = vae.decode(z, chunk_size=1).sample.clamp(-1, 1)  # (B, 3, T, H, W)
            yield video[:, :, :cfg.num_frames].float().cpu()

    probs = to_probabilities(detector_outputs(detector, reconstructions(), C3D_UCF101.call_kwargs, cfg.batch_size,
                                              desc="reconstructions", total=count))
    return classification_accuracy(probs, [data[i]["label"] for i in range(count)])


def _write_samples(kept: dict, names: list, out) -> None:
    for label, videos in kept.items():
        tag = "unconditional" if label is None else f"class_{label:03d}" + (f"_{names[label]}" if names else "")
        save_videos(torch.stack(videos), out, [f"{tag}_{i}" for i in range(len(videos))])  # (n, T, H, W, 3)
    save_grid(torch.stack([v[0] for v in kept.values()][:16]), out / "grid")


def evaluate(cfg: EvalConfig) -> dict:
    run = RunLayout(cfg.run)
    pipe = load_pipeline(find_pipeline(cfg.run), cfg.scheduler, cfg.device, cfg.precision,
                         cfg.vae_precision)
    pipe.set_progress_bar_config(disable=True)  # one bar for the whole generation phase instead
    resolution = pipe.transformer.config.sample_size * pipe.vae.spatial_compression_ratio
    k, synthetic = pipe.num_classes, cfg.dataset == "synthetic"
    num_fake = cfg.num_fake or (16 * max(k, 1) if synthetic else FVD2048_16F.num_fake)
    num_real = cfg.num_real or (num_fake if synthetic else FVD2048_16F.num_real)
    labels = [i % k for i in range(num_fake)] if k else [None] * num_fake
    scores, kept = _detectors(cfg, run, pipe.transformer.device), {}
    for start, videos in zip(range(0, num_fake, cfg.batch_size), _generate(pipe, labels, cfg)):
        scores.add(videos)
        for label, video in zip(labels[start:], videos):
            if len(kept.setdefault(label, [])) < cfg.videos_to_keep:
                kept[label].append(video.permute(1, 2, 3, 0))  # (T, H, W, 3)
    real = detector_outputs(scores.fvd_detector, _real_clips(cfg, resolution, num_real, k, pipe.num_frames),
                            I3D.call_kwargs, cfg.batch_size, desc="real clips", total=num_real)
    fake = np.concatenate(scores.features)
    results = {f"FVD ({len(real)} real / {len(fake)} generated)": fvd_from_features(real, fake)}
    if scores.probs:
        probs = np.concatenate(scores.probs)
        mean, std = inception_score_from_probs(probs, num_splits=min(ISV2048_UCF.num_splits, len(probs)))
        results["IS"] = {"mean": mean, "std": std}
        if synthetic and k:
            results["class accuracy"] = classification_accuracy(probs, labels)
            results["class accuracy of VAE reconstructions"] = _reconstruction_accuracy(
                pipe, scores.is_detector, cfg, resolution, num_real, k, pipe.num_frames)
            results["chance"] = 1.0 / k
    _write_samples(kept, pipe.class_names, run.eval_samples)
    report = {"results": results, "detector_note": scores.note, "dataset": cfg.dataset, "num_fake": num_fake,
              "samples_dir": str(run.eval_samples), "config": dataclasses.asdict(cfg)}
    write_json(run.metrics, {**report, "results": {k: None if isinstance(v, float) and math.isnan(v) else v
                                                   for k, v in results.items()}})
    return report
