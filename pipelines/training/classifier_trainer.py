"""Train the video classifier that stands in for I3D / C3D on the built-in synthetic data set.

    python -m pipelines.training.classifier_trainer output_dir=runs/default/classifier [max_steps=400 ...]

It is trained on its own synthetic clips (another seed than the generator's training set) through the shared
training loop, checked on held-out ones, and exported to `<output_dir>/classifier`; evaluate.py then uses it
for offline FVD / IS / class accuracy.

The classifier is a fixed detector of the built-in data set, like I3D is of real video, so a run need not
train it again: the default recipe's ships with the package (`pipelines/evaluation/reference_classifier`), and
any other recipe's, once trained, is kept in the detector cache (`<detector cache>/classifiers/<key>/`, beside the
FVD statistics), keyed by everything that decides its weights (the config without the keys that only decide
how a run is watched, this code, the torch version), and a later run with the same key copies it instead of
training (`reuse_cached=false` trains anyway). Runs that share a classifier also share FVD statistics and score
on one scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..common.cli import parse_cli
from ..common.errors import ConfigError, exit_on_user_error
from ..common.files import export_pretrained, write_json
from ..evaluation.classifier_cache import REFERENCE, CachedClassifier
from ..common.pixels import to_uint8
from ..data import SyntheticVideoDataset
from ..evaluation.classifier import VideoClassifier, evaluate_classifier, preprocess
from .loop import Trainer
from .optim import Part, adamw, lr_scheduler
from .run_config import TRAINER_FLAGS, RunConfig

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "classifier" / "default.yaml"


@dataclass
class ClassifierTrainConfig(RunConfig):
    """The classifier's run; the defaults are the recipe of configs/classifier/default.yaml."""

    output_dir: str = "runs/default/classifier"
    max_steps: int = 400
    batch_size: int = 32
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    lr_schedule: str = "cosine"
    lr_warmup_steps: int = 20
    grad_clip: float = 0.0
    ema_decay: float = 0.0  # the exported weights are the trained ones
    checkpoint_every: int = 0
    num_samples: int = 2048  # synthetic training clips
    held_out: int = 256  # synthetic clips of another seed, for the reported accuracy
    num_frames: int = 17
    resolution: int = 64
    num_classes: int = 16
    data_seed: int = 1  # the DiT's data uses seed 0: the classifier sees other clips
    clip_frames: int = 16  # a random window of this many frames per clip: the protocol scores 16 frames
    widths: list = field(default_factory=lambda: [16, 32, 64, 128])
    colour_augment: bool = True  # random channel order and inversion (the synthetic colours are random)
    reuse_cached: bool = True  # copy the classifier an earlier run of this recipe left in the detector cache
    detector_cache: Optional[str] = None  # default: $LEANLATTE_DETECTOR_CACHE, else ~/.cache/leanlatte/detectors

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.clip_frames > self.num_frames:
            raise ConfigError(f"clip_frames={self.clip_frames} exceeds num_frames={self.num_frames}")
        for key in ("num_samples", "held_out", "clip_frames"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")


def colour_augment(video: torch.Tensor) -> torch.Tensor:
    """Random channel order and light/dark inversion of a uint8 (3, T, H, W) video, from torch's RNG.
    Label-preserving on the synthetic data, whose colours and polarity are random: the classifier then learns
    shape and motion, not colour, from fewer clips."""
    video = video[torch.randperm(3)]
    return 255 - video if bool(torch.rand(()) < 0.5) else video


class ClassifierClips(Dataset):
    """Items of a video data set as uint8 windows of `clip_frames` frames (random start), optionally colour-
    augmented. Each video is rendered once and kept in memory as uint8 (T * H * W * 3 bytes)."""

    def __init__(self, dataset: Dataset, clip_frames: int, augment: bool):
        self.dataset, self.clip_frames, self.augment = dataset, clip_frames, augment
        self.cache: dict[int, tuple[torch.Tensor, int]] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        if index not in self.cache:
            item = self.dataset[index]
            self.cache[index] = (to_uint8(torch.as_tensor(item["video"])), int(item["label"]))
        video, label = self.cache[index]  # (3, T, H, W) uint8
        start = int(torch.randint(0, video.shape[1] - self.clip_frames + 1, ()))
        video = video[:, start : start + self.clip_frames]
        return {"video": colour_augment(video) if self.augment else video, "label": label}


class ClassifierTrainer(Trainer):
    name = "train_classifier"

    def run(self) -> dict:
        """Train, or take the classifier this recipe gave before; a trained one is kept for later runs."""
        cached = CachedClassifier.of(self.cfg) if self.cfg.reuse_cached else None
        if cached is None or self.step > 0 or not cached.exists():
            summary = super().run()
            if cached is not None and self.accelerator.is_main_process:
                cached.store(self.layout.export("classifier"), summary)
            return summary
        try:
            summary = {}
            if self.accelerator.is_main_process:
                summary = cached.take(self.layout.export("classifier"), self.checkpoints.record.to_json())
                write_json(self.layout.summary, summary)
                origin = ("the reference classifier of the built-in data set" if cached.folder == REFERENCE
                          else "trained by an earlier run of this recipe")
                self.accelerator.print(f"classifier copied from {cached.folder} ({origin}): held-out accuracy "
                                       f"{summary['held_out_accuracy']:.3f}")
            self.accelerator.wait_for_everyone()
            self.accelerator.end_training()
            return summary
        finally:
            self.release()

    def build_dataset(self) -> Dataset:
        cfg = self.cfg
        synthetic = SyntheticVideoDataset(cfg.num_samples, cfg.num_frames, cfg.resolution, cfg.data_seed,
                                          cfg.num_classes)
        return ClassifierClips(synthetic, cfg.clip_frames, cfg.colour_augment)

    def build_parts(self) -> list[Part]:
        cfg = self.cfg
        model = VideoClassifier(num_classes=cfg.num_classes, widths=tuple(cfg.widths), resolution=cfg.resolution)
        opt = adamw(model, cfg.learning_rate, cfg.weight_decay)
        sched = lr_scheduler(opt, cfg.lr_schedule, cfg.lr_warmup_steps, cfg.max_steps,
                             cfg.min_learning_rate / cfg.learning_rate)
        return [Part("classifier", model, opt, sched, cfg.grad_clip)]

    def micro_step(self, batch: dict, generator: torch.Generator) -> dict:
        with self.accelerator.autocast():
            _, logits = self.parts[0].model(preprocess(batch["video"].float(), self.cfg.resolution))  # (B, K)
        loss = F.cross_entropy(logits.float(), batch["label"])
        self.accelerator.backward(loss)
        return {"loss/total": loss.detach()}

    def export(self, model: VideoClassifier) -> dict:
        cfg = self.cfg
        held = SyntheticVideoDataset(cfg.held_out, cfg.num_frames, cfg.resolution, cfg.data_seed + 1000,
                                     cfg.num_classes)
        accuracy = evaluate_classifier(model, held, clip_frames=cfg.clip_frames)
        path = export_pretrained(model.cpu(), self.layout.export("classifier"))
        self.accelerator.print(f"classifier saved to {path}: held-out accuracy {accuracy:.3f} on {cfg.held_out} "
                               f"clips ({cfg.num_classes} classes)")
        return {"held_out_accuracy": accuracy, "classifier": str(path)}


def train(cfg: ClassifierTrainConfig) -> dict:
    return ClassifierTrainer(cfg).run()


def main(argv: Optional[Sequence[str]] = None, prog: str = "classifier_trainer") -> dict:
    with exit_on_user_error(prog):
        return train(parse_cli(ClassifierTrainConfig, argv, __doc__, DEFAULT_CONFIG, TRAINER_FLAGS))


if __name__ == "__main__":
    main()
