"""A small 3-D conv video classifier of the built-in synthetic data set (trained by
`pipelines.training.classifier_trainer`).

It stands in for I3D / C3D where those can't be downloaded: its pooled features give an FVD and its class
probabilities an IS and the accuracy with which generated videos show the requested class. These numbers
are only comparable between runs on the synthetic data, never with published I3D / C3D results.
`ClassifierDetector` gives it the detectors' call signature so the evaluation code is the same.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from ..common.errors import MissingFileError
from .metrics import classification_accuracy, detector_outputs


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


def evaluate_classifier(model: VideoClassifier, dataset: Any, batch_size: int = 64, clip_frames: int = 16) -> float:
    """Accuracy on every item of `dataset`, on each video's first `clip_frames` frames, through the same
    uint8 detector path that scores generated samples."""
    labels: list[int] = []

    def videos():
        for i in range(len(dataset)):
            item = dataset[i]
            labels.append(int(item["label"]))
            yield torch.as_tensor(item["video"])[:, :clip_frames]  # (3, clip, H, W)

    probs = detector_outputs(ClassifierDetector(model), videos(), batch_size=batch_size, desc="accuracy",
                             total=len(dataset))
    return classification_accuracy(probs, labels)


def load_classifier(path: str | os.PathLike, device: torch.device | str | None = None) -> VideoClassifier:
    """A saved VideoClassifier in eval mode, on `device` (CPU by default)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise MissingFileError(f"no saved classifier at {path} (expected {path / 'config.json'}); train one with "
                               f"`python -m pipelines.training.classifier_trainer` (train.sh's stage 4)")
    model = VideoClassifier.from_pretrained(path)
    return model.to(device).eval() if device is not None else model.eval()
