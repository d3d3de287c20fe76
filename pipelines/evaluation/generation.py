"""Sample a trained run and score it: FVD / IS by the StyleGAN-V protocol, plus class accuracy.

Benchmarks (UCF-101, SkyTimelapse) use the protocol's detectors: I3D features for FVD (`fvd2048_16f`) and the
UCF-101 C3D for IS (`isv2048_ucf`). The built-in synthetic data set has no such detector, so the project's
own video classifier, trained on that data (`python -m pipelines.training.classifier_trainer`), stands in for
both and the results are labelled as such; it also reports how often the requested class is recognised in
the samples. Beside every FVD: its floor and the VAE's ceiling (`real_stats`). Generation runs on every process
of `accelerate launch` (video i seeded by i, so the videos and scores do not depend on the process count); the
main process scores the real side and writes the report. Each phase shows one progress bar.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, replace
from pathlib import Path
from itertools import islice
from typing import Iterator, Optional

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object
from tqdm.auto import tqdm

from dit import sampling_steps, scheduler_name

from ..common.errors import ConfigError
from ..common.files import write_json
from ..common.layout import RunLayout
from ..common.pixels import to_uint8
from ..common.seeding import keyed_generator
from ..inference.loading import find_pipeline, load_pipeline, resolve_precision, training_data
from ..inference.pipeline_latte import check_guidance_interval
from ..data.media import save_grid, save_videos
from .classifier import ClassifierDetector, load_classifier
from .detectors import C3D_UCF101, I3D, detector_cache_dir, detector_path, folder_sha256, load_detector, sha256_of
from .metrics import (FVD2048_16F, ISV2048_UCF, LATTE_REAL_FRAME_STRIDE, classification_accuracy, detector_outputs,
                      feature_statistics, frechet_distance, inception_score_from_probs, to_probabilities)
from .reconstruction import round_trip
from .real_stats import ClipSet, StatisticsCache, padded, real_videos, statistics_key, synthetic_clips

DATASETS = ("synthetic", "ucf101", "sky", "folder")


@dataclass
class EvalConfig:
    run: str = "runs/default"
    dataset: Optional[str] = None  # synthetic | ucf101 | sky | folder; None: what the run was trained on
    data_root: str = ""  # the real videos FVD compares against (ucf101 / sky / folder); "": the run's own
    real_frame_stride: Optional[int] = None  # None: Latte's 3 for ucf101 / sky, 1 for a folder (clips as cut)
    num_fake: Optional[int] = None  # None: the protocol's 2048 (synthetic: 16 per class)
    num_real: Optional[int] = None  # None: 2048 (synthetic: as many as generated)
    steps: Optional[int] = None  # None: the sampler's own (dit.SAMPLING_STEPS: DDPM 250 as Latte's protocol, Euler 50)
    scheduler: Optional[str] = None  # None: the run's own; ddpm | ddim | dpm (IDDPM models), euler (flow)
    guidance_scale: Optional[float] = None  # None: the run's default
    guidance_interval: Optional[list[float]] = None  # [low, high] noise levels guided; None: the run's default
    batch_size: int = 32
    seed: int = 0
    device: Optional[str] = None
    precision: str = "fp32"  # the DiT's: fp32 | bf16 | fp16 | auto (bf16 where it pays on the device)
    vae_precision: str = "fp32"
    compile: bool = False  # torch.compile the DiT
    detector_cache: Optional[str] = None  # folder of i3d_torchscript.pt / c3d_ucf101.pt
    stats_cache: Optional[str] = None  # real-clip statistics; None: <detector cache>/fvd_stats
    videos_to_keep: int = 2  # mp4 files written per class (all scores use every sample)
    num_frames: int = FVD2048_16F.num_frames  # frames scored per video: the protocol's 16 (fewer: smoke tests)

    def __post_init__(self) -> None:
        if self.dataset is not None and self.dataset not in DATASETS:
            raise ConfigError(f"dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        if self.dataset not in (None, "synthetic") and not self.data_root:
            raise ConfigError(f"data_root (--data-root) is needed for dataset {self.dataset}: the real videos FVD "
                              f"compares against")
        for key in ("steps", "batch_size", "num_frames", "real_frame_stride"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.guidance_interval is not None:
            check_guidance_interval(self.guidance_interval)


class _Scores:
    """The detectors of one evaluation and what they returned for the generated videos."""

    def __init__(self, fvd_detector, is_detector, note: str, sha256: str):
        self.fvd_detector, self.is_detector, self.note, self.sha256 = fvd_detector, is_detector, note, sha256
        self.features: list[np.ndarray] = []
        self.probs: list[np.ndarray] = []

    def add(self, videos: torch.Tensor) -> None:
        """Score uint8 (B, 3, n, H, W) generated videos."""
        self.features.append(self.fvd_features([videos]))
        if self.is_detector is not None:
            self.probs.append(self.class_probs([videos]))

    def fvd_features(self, videos, batch_size: int = 16, desc: Optional[str] = None, total=None) -> np.ndarray:
        """FVD detector features; a progress bar when `desc` names the phase."""
        return detector_outputs(self.fvd_detector, videos, I3D.call_kwargs, batch_size, desc=desc or "",
                                total=total, progress=desc is not None)

    def class_probs(self, videos, batch_size: int = 16) -> np.ndarray:
        return to_probabilities(detector_outputs(self.is_detector, videos, C3D_UCF101.call_kwargs, batch_size,
                                                 progress=False))


def _detectors(cfg: EvalConfig, run: RunLayout, device) -> _Scores:
    if cfg.dataset == "synthetic":
        detector = ClassifierDetector(load_classifier(run.classifier, device))
        return _Scores(detector, detector, "offline stand-in: FVD and IS computed with the project's classifier "
                       "trained on the synthetic data, not I3D / C3D; not comparable to published numbers",
                       folder_sha256(run.classifier))
    fvd_detector = load_detector(I3D, device, cfg.detector_cache)
    is_detector = load_detector(C3D_UCF101, device, cfg.detector_cache) if cfg.dataset == "ucf101" else None
    return _Scores(fvd_detector, is_detector,
                   f"StyleGAN-V protocol: {FVD2048_16F.name}" + (f", {ISV2048_UCF.name}" if is_detector else ""),
                   sha256_of(detector_path(I3D, cfg.detector_cache)))


def _generate(pipe, labels: list, indices: list[int], cfg: EvalConfig) -> Iterator[tuple[list, torch.Tensor]]:
    """(indices, uint8 (B, 3, n, H, W) videos) of the generated videos `indices`; the protocol scores each
    video's first n = 16 frames. Video i is drawn from a generator keyed by (seed, i): the same whatever the
    batch size or the number of processes."""
    guidance = cfg.guidance_scale if cfg.guidance_scale is not None else pipe.default_guidance_scale
    if pipe.num_frames < cfg.num_frames:
        raise ConfigError(f"the model generates {pipe.num_frames} frames; {cfg.num_frames} are scored per video")
    batches = [indices[i:i + cfg.batch_size] for i in range(0, len(indices), cfg.batch_size)]
    with tqdm(total=len(batches) * cfg.steps, desc=f"generating {len(labels)} videos", unit="step",
              disable=not PartialState().is_local_main_process) as bar:

        def tick(*_) -> dict:  # callback_on_step_end: one bar over every batch's denoising steps
            bar.update()
            return {}

        for batch in batches:
            latents = pipe(class_labels=[labels[i] for i in batch] if pipe.num_classes else None,
                           num_videos=len(batch), num_inference_steps=cfg.steps, guidance_scale=guidance,
                           guidance_interval=cfg.guidance_interval,
                           output_type="latent", generator=[keyed_generator(cfg.seed, i) for i in batch],
                           callback_on_step_end=tick).frames
            videos = pipe.decode_latents(latents)  # (B, 3, T, H, W) in [-1, 1]
            yield batch, to_uint8(videos[:, :, :cfg.num_frames].cpu())


def _score_generated(pipe, labels: list, cfg: EvalConfig, scores: _Scores) -> dict:
    """Generate and score every video, each process its share; the main process gathers the detector outputs
    in video order and keeps the first `videos_to_keep` of each class from its share for the sample files."""
    state, kept = PartialState(), {}
    with state.split_between_processes(list(range(len(labels)))) as mine:
        for batch, videos in _generate(pipe, labels, mine, cfg):
            scores.add(videos)
            for i, video in zip(batch, videos):
                if len(kept.setdefault(labels[i], [])) < cfg.videos_to_keep:
                    kept[labels[i]].append(video.permute(1, 2, 3, 0))  # (T, H, W, 3)
    scores.features = gather_object(scores.features)  # every process's batches, in rank (= video) order
    scores.probs = gather_object(scores.probs)
    return kept


def _write_samples(kept: dict, names: list, out) -> None:
    for label, videos in kept.items():
        tag = "unconditional" if label is None else f"class_{label:03d}" + (f"_{names[label]}" if names else "")
        save_videos(torch.stack(videos), out, [f"{tag}_{i}" for i in range(len(videos))])  # (n, T, H, W, 3)
    save_grid(torch.stack([v[0] for v in kept.values()][:16]), out / "grid")


def _reconstructions(vae, clips: ClipSet, cfg: EvalConfig) -> Iterator[torch.Tensor]:
    """The VAE's round trip of `clips`, in batches, cut to the scored frames: float (B, 3, n, H, W)."""
    source = clips.read()  # streamed: a benchmark's 2048 clips do not fit in memory at once
    while batch := list(islice(source, cfg.batch_size)):
        video = round_trip(vae, torch.stack(batch).to(vae.device, vae.dtype), chunk_size=1)  # (B, 3, T, H, W)
        yield video[:, :, :cfg.num_frames].cpu()


class _RealSide:
    """The real clip sets of one evaluation (module `real_stats`) and their cached statistics."""

    def __init__(self, cfg: EvalConfig, scores: _Scores, resolution: int, count: int, classes: int, frames: int):
        self.cfg, self.scores = cfg, scores
        self.cache = StatisticsCache(cfg.stats_cache or detector_cache_dir(cfg.detector_cache) / "fvd_stats")
        self.protocol = dict(metric=FVD2048_16F.name, frames=cfg.num_frames, resolution=resolution,
                             detector=I3D.name if cfg.dataset != "synthetic" else "classifier")
        self.cached: dict[str, bool] = {}
        if cfg.dataset == "synthetic":  # held-out seeds, apart from the training set's
            self.reference, _ = synthetic_clips(10_000 + cfg.seed, count, frames, resolution, classes)
            self.disjoint, self.labels = synthetic_clips(20_000 + cfg.seed, count, frames, resolution, classes)
            self.for_vae, self.too_short, self.skipped = self.disjoint, 0, "skipped no video"
        else:
            stride = cfg.real_frame_stride or (1 if cfg.dataset == "folder" else LATTE_REAL_FRAME_STRIDE)
            real = real_videos(cfg.dataset, cfg.data_root, cfg.seed, resolution, cfg.num_frames, stride, count)
            self.reference, self.disjoint = real.reference, real.disjoint
            # The ceiling codes the floor's own clips; a VAE that needs 1 + 4k frames gets the last one repeated.
            self.for_vae, self.too_short, self.skipped = padded(real.disjoint, frames), real.too_short, real.skipped

    def statistics(self, name: str, clips: ClipSet) -> tuple[np.ndarray, np.ndarray]:
        """Statistics of real `clips`, from the cache or computed (and stored) under their key."""
        key = statistics_key(clips.identity, self.protocol, self.scores.sha256)
        mu, sigma, hit = self.cache.statistics(
            key, lambda: self.scores.fvd_features((clip[:, :self.cfg.num_frames] for clip in clips.read()),
                                                  batch_size=self.cfg.batch_size, desc=name, total=clips.count),
            {"clips": clips.identity, "protocol": self.protocol, "detector_sha256": self.scores.sha256})
        self.cached[name] = hit
        return mu, sigma


def with_training_data(cfg: EvalConfig, pipeline_dir: Path) -> EvalConfig:
    """`cfg` with the data set FVD compares against, when not given, taken from what the run was trained on (a
    pipeline saved without that record: the synthetic set, as before)."""
    if cfg.dataset is not None:
        return cfg
    record = training_data(pipeline_dir)
    name = record.get("data", {}).get("name", "synthetic")
    if name not in DATASETS:
        raise ConfigError(f"the run was trained on a '{name}' data set; FVD here compares against "
                          f"{', '.join(DATASETS)}: pass --dataset (and --data-root)")
    return replace(cfg, dataset=name, data_root=cfg.data_root or record.get("source", {}).get("root", ""))


def _resolve_precisions(cfg: EvalConfig) -> EvalConfig:
    """"auto" decided once, on the main process, for all: each video then comes out the same whatever the process
    count. The report's config says what ran."""
    state, decision = PartialState(), [None, None]
    if state.is_main_process:
        device = cfg.device or state.device
        decision = [resolve_precision(cfg.precision, device), resolve_precision(cfg.vae_precision, device)]
    precision, vae_precision = broadcast_object_list(decision)
    return replace(cfg, precision=precision, vae_precision=vae_precision)


def evaluate(cfg: EvalConfig) -> dict:
    """Generate (on every process), score, and on the main process write <run>/eval/metrics.json."""
    # Processes started by accelerate launch / torchrun join here; without an accelerator they need the CPU
    # (gloo) backend, which accelerate only picks when told.
    PartialState(cpu=not torch.accelerator.is_available())
    run, pipeline_dir = RunLayout(cfg.run), find_pipeline(cfg.run)
    cfg = with_training_data(cfg, pipeline_dir)
    if cfg.dataset != "synthetic" and not Path(cfg.data_root).is_dir():  # before hours of sampling
        raise ConfigError(f"the real videos to compare against are not there: {cfg.data_root} is not a folder")
    cfg = _resolve_precisions(cfg)
    pipe = load_pipeline(pipeline_dir, cfg.scheduler, cfg.device, cfg.precision, cfg.vae_precision, cfg.compile)
    pipe.set_progress_bar_config(disable=True)  # one bar for the whole generation phase instead
    cfg = replace(cfg, steps=sampling_steps(pipe.scheduler, cfg.steps))
    resolution = pipe.transformer.config.sample_size * pipe.vae.spatial_compression_ratio
    k, synthetic = pipe.num_classes, cfg.dataset == "synthetic"
    num_fake = cfg.num_fake or (16 * max(k, 1) if synthetic else FVD2048_16F.num_fake)
    num_real = cfg.num_real or (num_fake if synthetic else FVD2048_16F.num_real)
    labels = [i % k for i in range(num_fake)] if k else [None] * num_fake
    scores = _detectors(cfg, run, pipe.transformer.device)
    kept = _score_generated(pipe, labels, cfg, scores)
    if not PartialState().is_main_process:
        return {}
    real = _RealSide(cfg, scores, resolution, num_real, k, pipe.num_frames)
    reference = real.statistics("real clips", real.reference)
    floor = real.statistics("other real clips", real.disjoint)
    recon = _reconstructions(pipe.vae, real.for_vae, cfg)  # the run's VAE: never cached
    if synthetic and k:
        recon = [to_uint8(video) for video in recon]  # scored twice: features, then classes
    ceiling = feature_statistics(scores.fvd_features(iter(recon), batch_size=cfg.batch_size, desc="reconstructions",
                                                     total=num_real))
    fake = feature_statistics(np.concatenate(scores.features))
    results = {f"FVD ({num_real} real / {num_fake} generated)": frechet_distance(*fake, *reference),
               "FVD floor (real vs other real clips)": frechet_distance(*floor, *reference),
               "FVD ceiling (VAE reconstructions)": frechet_distance(*ceiling, *reference)}
    if scores.probs:
        probs = np.concatenate(scores.probs)
        mean, std = inception_score_from_probs(probs, num_splits=min(ISV2048_UCF.num_splits, len(probs)))
        results["IS"] = {"mean": mean, "std": std}
        if synthetic and k:
            results["class accuracy"] = classification_accuracy(probs, labels)
            results["class accuracy of VAE reconstructions"] = classification_accuracy(
                scores.class_probs(recon, batch_size=cfg.batch_size), real.labels)
            results["chance"] = 1.0 / k
    _write_samples(kept, pipe.class_names, run.eval_samples)
    report = {"results": results, "detector_note": scores.note, "dataset": cfg.dataset, "num_fake": num_fake,
              "samples_dir": str(run.eval_samples), "protocol": _protocol(cfg, pipe, real, num_fake, num_real),
              "config": dataclasses.asdict(cfg)}
    write_json(run.metrics, {**report, "results": {k: None if isinstance(v, float) and math.isnan(v) else v
                                                   for k, v in results.items()}})
    return report


def _protocol(cfg: EvalConfig, pipe, real: _RealSide, num_fake: int, num_real: int) -> dict:
    """Everything a number depends on, so it can be re-derived."""
    guidance = cfg.guidance_scale if cfg.guidance_scale is not None else pipe.default_guidance_scale
    interval = cfg.guidance_interval if cfg.guidance_interval is not None else pipe.default_guidance_interval
    return {**real.protocol, "num_real": num_real, "num_fake": num_fake, "dataset": cfg.dataset,
            "split": real.reference.identity.get("split", "held-out synthetic"),
            "real_frame_stride": real.reference.identity.get("stride", 1), "real_clip_seed": cfg.seed,
            "real_videos_too_short": real.too_short, "real_videos_unreadable": real.skipped,
            "ceiling_clips_padded_to": real.for_vae.identity.get("padded_to"),
            "detector_sha256": real.scores.sha256, "sampler": scheduler_name(pipe.scheduler), "steps": cfg.steps,
            "guidance_scale": guidance, "guidance_interval": list(interval),
            "guidance_channels": pipe.config.guidance_channels, "seed": cfg.seed,
            "processes": PartialState().num_processes, "real_statistics_from_cache": real.cached}
