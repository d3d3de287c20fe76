"""A small 3-D conv video classifier trained on the built-in synthetic data set.

It stands in for I3D / C3D where those can't be downloaded: its pooled features give an FVD and its class
probabilities an IS and the accuracy with which generated videos show the requested class. These numbers
are only comparable between runs on the synthetic data, never with published I3D / C3D results.
`ClassifierDetector` gives it the detectors' call signature so the evaluation code is the same.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from tqdm.auto import tqdm

from .metrics import classification_accuracy, detector_outputs, videos_to_uint8


class VideoClassifier(ModelMixin, ConfigMixin):
    """Conv3d-GroupNorm-SiLU blocks, each halving T, H and W, then mean- and max-pooling over (T, H, W).

    The input frames are joined by their differences `motion_gap` frames apart: on the synthetic data the
    class is shape x direction of motion, and handing the network the motion directly lets it learn both
    within a few hundred CPU steps. Max pooling keeps the small moving object's features from being averaged
    away by the background. forward(x) takes float videos in [-1, 1], (B, C, T, H, W), and returns
    (features (B, 2 * widths[-1]), logits (B, num_classes)).
    """

    @register_to_config
    def __init__(self, num_classes: int = 16, in_channels: int = 3, widths: Sequence[int] = (16, 32, 64, 128),
                 resolution: int = 64, num_groups: int = 8, motion_gap: int = 4):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if any(w % num_groups for w in widths):
            raise ValueError(f"every width must be divisible by num_groups={num_groups}, got widths={list(widths)}")
        if motion_gap < 1:
            raise ValueError(f"motion_gap must be >= 1, got {motion_gap}")
        blocks = []
        channels = 2 * in_channels
        for width in widths:
            blocks += [nn.Conv3d(channels, width, 3, stride=2, padding=1), nn.GroupNorm(num_groups, width), nn.SiLU()]
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(2 * channels, num_classes)
        # Zero head: training starts from uniform class probabilities (loss log K).
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gap = self.config.motion_gap
        motion = torch.zeros_like(x)  # (B, C, T, H, W); the last `gap` frames have no later frame
        if x.shape[2] > gap:
            motion[:, :, :-gap] = x[:, :, gap:] - x[:, :, :-gap]
        h = self.blocks(torch.cat([x, motion], dim=1))  # (B, D, T', H', W')
        features = torch.cat([h.mean(dim=(2, 3, 4)), h.amax(dim=(2, 3, 4))], dim=1)  # (B, 2D)
        return features, self.head(features)  # (B, 2D), (B, K)


def preprocess(x: torch.Tensor, resolution: int, rescale: bool = True, resize: bool = True) -> torch.Tensor:
    """[0, 255] videos (B, 3, T, H, W) -> the classifier's input: [-1, 1], H = W = `resolution` (area-
    downsampled, or trilinear-upsampled). Training and detection share it so they see the same pixels."""
    if rescale:
        x = x / 127.5 - 1.0
    if resize and tuple(x.shape[-2:]) != (resolution, resolution):
        mode = "area" if min(x.shape[-2:]) > resolution else "trilinear"
        x = F.interpolate(x, size=(x.shape[2], resolution, resolution), mode=mode)
    return x  # (B, 3, T, resolution, resolution)


class ClassifierDetector(nn.Module):
    """A VideoClassifier behind the I3D / C3D TorchScript call signature.

    detector(x, rescale=True, resize=True, return_features=True) -> pooled features, like I3D;
    detector(x) -> class probabilities, like the C3D. `x` holds [0, 255] values (uint8 or float),
    (B, 3, T, H, W); `rescale` maps it to [-1, 1] and `resize` scales H, W to the classifier's resolution.
    """

    def __init__(self, classifier: VideoClassifier):
        super().__init__()
        self.classifier = classifier

    @torch.no_grad()
    def forward(self, x: torch.Tensor, rescale: bool = True, resize: bool = True,
                return_features: bool = False) -> torch.Tensor:
        param = next(self.classifier.parameters())
        x = x.to(device=param.device, dtype=param.dtype)  # (B, 3, T, H, W)
        x = preprocess(x, self.classifier.config.resolution, rescale, resize)
        features, logits = self.classifier(x)  # (B, D), (B, K)
        return features if return_features else logits.float().softmax(dim=1)


def _random_clips(videos: torch.Tensor, clip_frames: int, generator: torch.Generator) -> torch.Tensor:
    """One random window of `clip_frames` consecutive frames per video."""
    num_frames = videos.shape[2]
    if num_frames < clip_frames:
        raise ValueError(f"videos have {num_frames} frames, fewer than clip_frames={clip_frames}")
    starts = torch.randint(0, num_frames - clip_frames + 1, (videos.shape[0],), generator=generator)
    return torch.stack([v[:, s : s + clip_frames] for v, s in zip(videos, starts.tolist())])  # (B, C, clip, H, W)


def _colour_augment(videos: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random channel order and light/dark inversion per uint8 video. Label-preserving on the synthetic data,
    whose colours and polarity are random: the classifier then learns shape and motion, not colour, from
    fewer clips."""
    batch = videos.shape[0]
    order = torch.argsort(torch.rand(batch, 3, generator=generator), dim=1)  # (B, 3)
    videos = videos[torch.arange(batch)[:, None], order]  # (B, 3, T, H, W)
    invert = torch.rand(batch, generator=generator) < 0.5  # (B,)
    return torch.where(invert[:, None, None, None, None], 255 - videos, videos)


class _ItemCache:
    """Data set items as uint8 videos (what the detector sees at evaluation), each rendered once."""

    def __init__(self, dataset: Any):
        self.dataset = dataset
        self.items: dict[int, tuple[torch.Tensor, int]] = {}

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        for i in indices:
            if i not in self.items:
                item = self.dataset[i]
                self.items[i] = (videos_to_uint8(torch.as_tensor(item["video"])), int(item["label"]))
        videos = torch.stack([self.items[i][0] for i in indices])  # (B, 3, T, H, W) uint8
        labels = torch.tensor([self.items[i][1] for i in indices])  # (B,)
        return videos, labels


def _num_classes(dataset: Any, num_classes: int | None) -> int:
    if num_classes is None:
        num_classes = getattr(dataset, "num_classes", None)
    if num_classes is None:
        raise ValueError("pass num_classes: the dataset has no `num_classes` attribute")
    return int(num_classes)


def train_classifier(dataset: Any, steps: int = 400, batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
                     device: torch.device | str | None = None, num_classes: int | None = None,
                     resolution: int | None = None, clip_frames: int = 16,
                     widths: Sequence[int] = (16, 32, 64, 128), colour_augment: bool = True,
                     progress: bool = True) -> tuple[VideoClassifier, list[float]]:
    """Train a VideoClassifier on a data set of {"video": (3, T, H, W) in [-1, 1], "label": int} items.

    Each step draws `batch_size` random items (seeded) and one random `clip_frames`-frame window of each,
    with random channel order and colour inversion if `colour_augment` (turn it off for data whose colours
    carry the class). Items are kept in memory as uint8 after their first use (T * H * W * 3 bytes each).
    `resolution` (default: the data's) is the size the classifier works at. AdamW with a short warm-up and
    cosine decay. Returns the model in eval mode and the loss of every step.
    """
    if steps < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"steps and batch_size must be >= 1 and lr > 0, got {steps}, {batch_size}, {lr}")
    if len(dataset) == 0:
        raise ValueError("the dataset is empty")
    device = torch.device(device) if device is not None else torch.device("cpu")
    cache = _ItemCache(dataset)
    if resolution is None:
        resolution = int(cache.batch([0])[0].shape[-1])
    with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the caller's RNG
        torch.manual_seed(seed)
        model = VideoClassifier(num_classes=_num_classes(dataset, num_classes), widths=tuple(widths),
                                resolution=resolution).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: min(1.0, (t + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * t / steps)))
    generator = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for _ in tqdm(range(steps), desc="classifier", disable=not progress, leave=False):
        indices = torch.randint(0, len(dataset), (batch_size,), generator=generator).tolist()
        videos, labels = cache.batch(indices)
        videos = _random_clips(videos, clip_frames, generator)  # (B, 3, clip, H, W) uint8
        if colour_augment:
            videos = _colour_augment(videos, generator)
        videos = videos.to(device)
        _, logits = model(preprocess(videos.float(), resolution))  # (B, K)
        loss = F.cross_entropy(logits, labels.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return model.eval(), losses


def evaluate_classifier(model: VideoClassifier, dataset: Any, batch_size: int = 64, clip_frames: int = 16) -> float:
    """Accuracy on every item of `dataset`, on each video's first `clip_frames` frames, through the same
    uint8 detector path that scores generated samples."""
    labels: list[int] = []

    def videos():
        for i in range(len(dataset)):
            item = dataset[i]
            labels.append(int(item["label"]))
            yield torch.as_tensor(item["video"])[:, :clip_frames]  # (3, clip, H, W)

    probs = detector_outputs(ClassifierDetector(model), videos(), batch_size=batch_size, desc="accuracy")
    return classification_accuracy(probs, labels)


def save_classifier(model: VideoClassifier, path: str | os.PathLike) -> Path:
    """save_pretrained (safetensors + config.json) into `path`, replacing it only once fully written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        if path.exists():
            old = path.with_name(f".{path.name}.old.{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_classifier(path: str | os.PathLike, device: torch.device | str | None = None) -> VideoClassifier:
    """A saved VideoClassifier in eval mode, on `device` (CPU by default)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no saved classifier at {path} (expected {path / 'config.json'}); "
                                f"train one with train_classifier and save_classifier")
    model = VideoClassifier.from_pretrained(path)
    return model.to(device).eval() if device is not None else model.eval()
