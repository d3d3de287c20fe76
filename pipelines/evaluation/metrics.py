"""FVD and video Inception Score, computed exactly as StyleGAN-V's `fvd2048_16f` and `isv2048_ucf` protocols.

The detectors (I3D for FVD, C3D-UCF101 for IS, or the project's synthetic-data classifier) live in
`pipelines/evaluation/detectors.py`; this file holds the statistics, the protocol's sampling rules and the loop that
runs a detector over videos. Feature and probability arrays may be numpy or torch; all statistics are
computed in float64.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import scipy.linalg
import scipy.special
import torch
from tqdm.auto import tqdm

from ..common.pixels import to_uint8


@dataclass(frozen=True)
class MetricProtocol:
    """Sample counts of one StyleGAN-V metric (`num_real` is 0 for metrics without real data)."""

    name: str
    num_real: int
    num_fake: int
    num_frames: int
    num_splits: int = 1


FVD2048_16F = MetricProtocol("fvd2048_16f", num_real=2048, num_fake=2048, num_frames=16)
ISV2048_UCF = MetricProtocol("isv2048_ucf", num_real=0, num_fake=2048, num_frames=16, num_splits=10)
PROTOCOLS = {p.name: p for p in (FVD2048_16F, ISV2048_UCF)}

# StyleGAN-V shuffles the generated probabilities with this seed before splitting them for the IS.
IS_SHUFFLE_SEED = 42
# Latte reads its real UCF-101 / SkyTimelapse clips at this frame stride.
LATTE_REAL_FRAME_STRIDE = 3


def _as_float64_2d(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {tuple(x.shape)}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def feature_statistics(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean and biased (divide-by-N) covariance of (N, D) features, in float64."""
    x = _as_float64_2d(features, "features")  # (N, D)
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {x.shape[0]}")
    mu = x.mean(axis=0)  # (D,)
    centered = x - mu  # (N, D)
    sigma = centered.T @ centered / x.shape[0]  # (D, D)
    return mu, sigma


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)), real part, as StyleGAN-V's compute_fvd."""
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics disagree in size: {mu1.shape}/{sigma1.shape} vs {mu2.shape}/{sigma2.shape}")
    m = np.square(mu1 - mu2).sum()
    s = scipy.linalg.sqrtm(sigma1 @ sigma2)
    return float(np.real(m + np.trace(sigma1 + sigma2 - 2.0 * s)))


def fvd_from_features(real: Any, fake: Any) -> float:
    """Fréchet distance between the Gaussians fitted to two (N, D) sets of detector features."""
    real = _as_float64_2d(real, "real features")
    fake = _as_float64_2d(fake, "fake features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sizes differ: real has D={real.shape[1]}, fake has D={fake.shape[1]}")
    mu_real, sigma_real = feature_statistics(real)
    mu_fake, sigma_fake = feature_statistics(fake)
    return frechet_distance(mu_fake, sigma_fake, mu_real, sigma_real)


def inception_score_from_probs(probs: Any, num_splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) over `num_splits` splits after StyleGAN-V's RandomState(42) shuffle.

    Returns (mean, std) over the splits. Uses 0 * log 0 = 0, so exact one-hot rows are allowed; on strictly
    positive probabilities this equals StyleGAN-V's formula.
    """
    p = _as_float64_2d(probs, "probs")  # (N, K)
    if not isinstance(num_splits, int) or num_splits < 1:
        raise ValueError(f"num_splits must be a positive int, got {num_splits!r}")
    n = p.shape[0]
    if n < num_splits:
        raise ValueError(f"need at least num_splits={num_splits} rows of probabilities, got {n}")
    if p.min() < 0 or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("probs must be class probabilities (non-negative rows summing to 1); apply softmax first")
    p = p.copy()
    np.random.RandomState(IS_SHUFFLE_SEED).shuffle(p)
    scores = []
    for i in range(num_splits):
        part = p[i * n // num_splits : (i + 1) * n // num_splits]  # (n / splits, K)
        marginal = part.mean(axis=0, keepdims=True)  # (1, K)
        kl = scipy.special.xlogy(part, part) - scipy.special.xlogy(part, marginal)  # (n / splits, K)
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def to_probabilities(outputs: Any, atol: float = 1e-3) -> np.ndarray:
    """(N, K) detector outputs as probabilities: kept if the rows already are, softmax of logits otherwise.

    The published C3D TorchScript ends in a softmax (StyleGAN-V takes the log of its outputs directly);
    detectors that return logits, like the tgan2 C3D it was converted from, get the softmax here.
    """
    x = _as_float64_2d(outputs, "detector outputs")  # (N, K)
    if x.min() >= 0 and np.allclose(x.sum(axis=1), 1.0, atol=atol):
        return x
    return scipy.special.softmax(x, axis=1)


def classification_accuracy(probs: Any, labels: Any) -> float:
    """Fraction of rows whose arg-max class equals the label."""
    p = _as_float64_2d(probs, "probs")
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"got {p.shape[0]} rows of probabilities but {y.shape[0]} labels")
    return float(np.mean(p.argmax(axis=1) == y))


def clip_frame_indices(video_length: int, num_frames: int = 16, stride: int = 1,
                       rng: random.Random | None = None) -> np.ndarray:
    """Frame indices of one protocol clip: `num_frames` frames `stride` apart.

    With `rng` the start is uniform over every start that fits (StyleGAN-V's real clips); without it the
    clip starts at frame 0 (its generated clips). A video shorter than num_frames * stride is an error, as
    the protocol discards such videos.
    """
    if num_frames < 1 or stride < 1:
        raise ValueError(f"num_frames and stride must be >= 1, got num_frames={num_frames}, stride={stride}")
    if video_length < num_frames * stride:
        raise ValueError(f"video has {video_length} frames; a clip of {num_frames} frames at stride {stride} "
                         f"needs at least {num_frames * stride}")
    start = 0 if rng is None else rng.randint(0, video_length - num_frames * stride + stride - 1)
    return np.arange(num_frames) * stride + start


def real_clip_plan(video_lengths: Iterable[int], num_clips: int, num_frames: int = 16, stride: int = 1,
                   seed: int = 0) -> list[tuple[int, np.ndarray]]:
    """(video index, frame indices) for the real clips of a protocol, seeded.

    Like StyleGAN-V: videos too short for a clip are discarded, the first `num_clips` remaining videos are
    used in order (fewer if the data set has fewer), and each gets one clip from a random start.
    """
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    rng = random.Random(seed)
    plan = []
    for idx, length in enumerate(video_lengths):
        if len(plan) == num_clips:
            break
        if length >= num_frames * stride:
            plan.append((idx, clip_frame_indices(length, num_frames, stride, rng)))
    if not plan:
        raise ValueError(f"no video has the {num_frames * stride} frames a clip of {num_frames} frames at "
                         f"stride {stride} needs")
    return plan


def _device_of(module: Callable) -> torch.device:
    if isinstance(module, torch.nn.Module):
        for tensor in list(module.parameters()) + list(module.buffers()):
            return tensor.device
    return torch.device("cpu")


def _as_batch(item: Any) -> torch.Tensor:
    video = item["video"] if isinstance(item, Mapping) else item
    if not isinstance(video, torch.Tensor):
        video = torch.as_tensor(np.asarray(video))
    if video.ndim == 4:
        video = video.unsqueeze(0)
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"videos must be (3, T, H, W) or (B, 3, T, H, W), got shape {tuple(video.shape)}")
    return video  # (B, 3, T, H, W)


@torch.no_grad()
def detector_outputs(detector: Callable, videos: Iterable[Any], detector_kwargs: Mapping[str, Any] | None = None,
                     batch_size: int = 16, max_items: int | None = None, device: torch.device | str | None = None,
                     desc: str = "detector", total: int | None = None, progress: bool = True) -> np.ndarray:
    """Run `detector` over videos in batches and stack its outputs into an (N, D) float64 array.

    `videos` yields (3, T, H, W) or (B, 3, T, H, W) tensors (or dicts with a "video" entry), float in
    [-1, 1] or uint8; they reach the detector as uint8 (B, 3, T, H, W), as in StyleGAN-V. Stops after
    `max_items` videos. The device defaults to the detector's.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device) if device is not None else _device_of(detector)
    kwargs = dict(detector_kwargs or {})
    outputs: list[np.ndarray] = []
    pending: list[torch.Tensor] = []
    num_pending = num_done = 0

    def flush() -> None:
        nonlocal pending, num_pending, num_done
        batch = torch.cat(pending).to(device)  # (B, 3, T, H, W) uint8
        out = detector(batch, **kwargs)  # (B, D)
        if out.ndim != 2 or out.shape[0] != batch.shape[0]:
            raise ValueError(f"detector must return (B, D) outputs, got shape {tuple(out.shape)}")
        outputs.append(out.float().cpu().numpy())
        num_done += batch.shape[0]
        bar.update(batch.shape[0])
        pending, num_pending = [], 0

    with tqdm(total=total or max_items, desc=desc, unit="video", leave=False, disable=not progress) as bar:
        for item in videos:
            video = to_uint8(_as_batch(item))
            if max_items is not None:
                video = video[: max_items - num_done - num_pending]
            while video.shape[0]:
                take = video[: batch_size - num_pending]
                pending.append(take)
                num_pending += take.shape[0]
                video = video[take.shape[0]:]
                if num_pending == batch_size:
                    flush()
            if max_items is not None and num_done + num_pending >= max_items:
                break
        if pending:
            flush()
    if not outputs:
        raise ValueError("no videos were given to the detector")
    return np.concatenate(outputs).astype(np.float64)  # (N, D)
