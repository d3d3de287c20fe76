"""Sample a trained run and score it: FVD / IS by the StyleGAN-V protocol, plus class accuracy.

Benchmarks (UCF-101, SkyTimelapse) use the protocol's detectors: I3D features for FVD (`fvd2048_16f`) and the
UCF-101 C3D for IS (`isv2048_ucf`). The built-in synthetic data set has no such detector, so the project's
own video classifier, trained on that data (`python -m pipelines.classifier`), stands in for both and the
results are labelled as such; it also reports how often the requested class is recognised in the samples.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from vae.model import SPACE_STRIDE, TIME_STRIDE

from .classifier import ClassifierDetector, load_classifier
from .data import DataConfig, build_dataset, read_frames
from .data.clips import frames_to_tensor
from .detectors import C3D_UCF101, I3D, load_detector
from .metrics import (FVD2048_16F, ISV2048_UCF, LATTE_REAL_FRAME_STRIDE, classification_accuracy, detector_outputs,
                      fvd_from_features, inception_score_from_probs, real_clip_plan, to_probabilities,
                      videos_to_uint8)
from .sampling import find_pipeline, load_pipeline, save_grid, save_videos


@dataclass
class EvalConfig:
    run: str = "runs/default"
    dataset: str = "synthetic"  # synthetic | ucf101 | sky
    data_root: str = ""
    num_fake: Optional[int] = None  # None: the protocol's 2048 (synthetic: 16 per class)
    num_real: Optional[int] = None
    steps: int = 100
    scheduler: str = "ddpm"
    guidance_scale: Optional[float] = None  # None: the run's default
    batch_size: int = 32
    seed: int = 0
    device: Optional[str] = None
    precision: str = "fp32"
    detector_cache: Optional[str] = None
    videos_to_keep: int = 2  # mp4 files written per class (all scores use every sample)
    num_frames: int = FVD2048_16F.num_frames  # frames scored per video: the protocol's 16 (fewer: smoke tests)


def _generate(pipe, labels: list, cfg: EvalConfig) -> Iterator[torch.Tensor]:
    """Generated videos as uint8 (B, 3, n, H, W) batches: the protocol scores each video's first n = 16 frames."""
    generator = torch.Generator().manual_seed(cfg.seed)
    guidance = cfg.guidance_scale if cfg.guidance_scale is not None else pipe.default_guidance_scale
    for start in range(0, len(labels), cfg.batch_size):
        batch = labels[start:start + cfg.batch_size]
        videos = pipe(class_labels=batch if pipe.num_classes else None, num_videos=len(batch),
                      num_inference_steps=cfg.steps, guidance_scale=guidance, generator=generator,
                      progress=False).videos  # (B, 3, T, H, W) in [-1, 1]
        if videos.shape[2] < cfg.num_frames:
            raise ValueError(f"the model generates {videos.shape[2]} frames; {cfg.num_frames} are scored per video")
        yield videos_to_uint8(videos[:, :, :cfg.num_frames].cpu())


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
            items = [data[i] for i in range(start, min(start + cfg.batch_size, count))]
            x = torch.stack([item["video"] for item in items]).to(vae.device, vae.dtype)  # (B, 3, T, H, W)
            with torch.no_grad():
                z = vae.encode(x).latent_dist.mean  # (B, d, T', h, w)
                video = vae.decode(z, chunk_size=1).sample.clamp(-1, 1)  # (B, 3, T, H, W)
            yield video[:, :, :cfg.num_frames].float().cpu()

    probs = to_probabilities(detector_outputs(detector, reconstructions(), C3D_UCF101.call_kwargs, cfg.batch_size,
                                              desc="reconstructions"))
    return classification_accuracy(probs, [data[i]["label"] for i in range(count)])


def evaluate(cfg: EvalConfig) -> dict:
    run = Path(cfg.run)
    pipe = load_pipeline(find_pipeline(run), cfg.scheduler, cfg.device, cfg.precision)
    device = pipe.transformer.device
    resolution = pipe.transformer.config.sample_size * SPACE_STRIDE
    clip_frames = 1 + TIME_STRIDE * (pipe.transformer.config.num_frames - 1)  # what the VAE decodes the latents to
    k = pipe.num_classes
    synthetic = cfg.dataset == "synthetic"
    num_fake = cfg.num_fake or (16 * max(k, 1) if synthetic else FVD2048_16F.num_fake)
    num_real = cfg.num_real or (num_fake if synthetic else FVD2048_16F.num_real)
    labels = [i % k for i in range(num_fake)] if k else [None] * num_fake

    if synthetic:
        detector = ClassifierDetector(load_classifier(run / "classifier", device))
        fvd_detector, is_detector, note = detector, detector, (
            "offline stand-in: FVD and IS computed with the project's classifier trained on the synthetic data, "
            "not I3D / C3D; not comparable to published numbers")
    else:
        fvd_detector = load_detector(I3D, device, cfg.detector_cache)
        is_detector = load_detector(C3D_UCF101, device, cfg.detector_cache) if cfg.dataset == "ucf101" else None
        note = f"StyleGAN-V protocol: {FVD2048_16F.name}" + (f", {ISV2048_UCF.name}" if is_detector else "")

    samples_dir = run / "eval" / "samples"
    fake_features, fake_probs, kept = [], [], {}
    for batch_index, videos in enumerate(_generate(pipe, labels, cfg)):
        fake_features.append(detector_outputs(fvd_detector, [videos], I3D.call_kwargs, cfg.batch_size, desc="features"))
        if is_detector is not None:
            fake_probs.append(to_probabilities(detector_outputs(is_detector, [videos], C3D_UCF101.call_kwargs,
                                                                cfg.batch_size, desc="probabilities")))
        start = batch_index * cfg.batch_size
        for j, video in enumerate(videos):
            label = labels[start + j]
            if len(kept.setdefault(label, [])) < cfg.videos_to_keep:
                kept[label].append(video.permute(1, 2, 3, 0))  # (T, H, W, 3)
    real_clips = _real_clips(cfg, resolution, num_real, k, clip_frames)
    real_features = detector_outputs(fvd_detector, real_clips, I3D.call_kwargs, cfg.batch_size, desc="real features")
    fake_features = np.concatenate(fake_features)
    results = {f"FVD ({len(real_features)} real / {len(fake_features)} generated)":
               fvd_from_features(real_features, fake_features)}
    if fake_probs:
        probs = np.concatenate(fake_probs)
        mean, std = inception_score_from_probs(probs, num_splits=min(ISV2048_UCF.num_splits, len(probs)))
        results["IS"] = {"mean": mean, "std": std}
        if synthetic and k:
            results["class accuracy"] = classification_accuracy(probs, labels)
            results["class accuracy of VAE reconstructions"] = _reconstruction_accuracy(
                pipe, is_detector, cfg, resolution, num_real, k, clip_frames)
            results["chance"] = 1.0 / k

    names = pipe.class_names
    for label, videos in kept.items():
        tag = "unconditional" if label is None else f"class_{label:03d}" + (f"_{names[label]}" if names else "")
        stacked = torch.stack(videos)  # (n, T, H, W, 3)
        save_videos(stacked, samples_dir, [f"{tag}_{i}" for i in range(len(videos))])
    grid = torch.stack([v[0] for v in kept.values()][:16])
    save_grid(grid, samples_dir / "grid")
    report = {"results": results, "detector_note": note, "dataset": cfg.dataset, "num_fake": num_fake,
              "samples_dir": str(samples_dir), "config": dataclasses.asdict(cfg)}
    path = run / "eval" / "metrics.json"
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(report, indent=2, default=lambda x: None if isinstance(x, float) and math.isnan(x)
                              else str(x)))
    tmp.replace(path)
    return report
