import numpy as np
import pytest
import torch

from pipelines.data import SyntheticVideoDataset
from pipelines.classifier import (ClassifierDetector, VideoClassifier, evaluate_classifier, load_classifier,
                                  preprocess, save_classifier, train_classifier)
from pipelines.metrics import detector_outputs, videos_to_uint8


class MovingBlobs:
    """4 classes: a bright 4x4 blob moving right / left / down / up from a random start, over noise."""

    num_classes = 4

    def __init__(self, num_samples, seed, num_frames=10, resolution=16):
        self.num_samples, self.seed, self.num_frames, self.resolution = num_samples, seed, num_frames, resolution

    def __len__(self):
        return self.num_samples

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.seed * 100_003 + i)
        label = i % 4
        dx, dy = [(1, 0), (-1, 0), (0, 1), (0, -1)][label]
        video = torch.rand(3, self.num_frames, self.resolution, self.resolution, generator=g) * 0.6 - 1
        x0, y0 = torch.randint(4, self.resolution - 8, (2,), generator=g).tolist()
        for t in range(self.num_frames):
            x, y = x0 + dx * t // 2, y0 + dy * t // 2
            video[:, t, y : y + 4, x : x + 4] = 1.0
        return {"video": video, "label": label}


TINY = dict(widths=(8, 16), clip_frames=8, progress=False)


def test_forward_shapes_and_zero_head():
    model = VideoClassifier(num_classes=5, widths=(8, 16), resolution=16, num_groups=4)
    features, logits = model(torch.randn(2, 3, 6, 16, 16))
    assert features.shape == (2, 32) and logits.shape == (2, 5)  # mean- and max-pooled features
    torch.testing.assert_close(logits, torch.zeros(2, 5))  # zero-initialised head
    with pytest.raises(ValueError, match="divisible"):
        VideoClassifier(widths=(12, 16))
    with pytest.raises(ValueError, match="num_classes"):
        VideoClassifier(num_classes=1)


def test_detector_signature_rescales_and_resizes():
    torch.manual_seed(0)
    model = VideoClassifier(num_classes=4, widths=(8, 16), resolution=16)
    torch.nn.init.normal_(model.head.weight)
    detector = ClassifierDetector(model)
    videos = torch.rand(3, 3, 6, 32, 32) * 2 - 1
    x = videos_to_uint8(videos)  # (B, 3, T, 32, 32)
    feats = detector(x, rescale=True, resize=True, return_features=True)
    expected = model(torch.nn.functional.interpolate(x.float() / 127.5 - 1, size=(6, 16, 16), mode="area"))[0]
    torch.testing.assert_close(feats, expected)
    probs = detector(x)
    assert probs.shape == (3, 4)
    torch.testing.assert_close(probs.sum(1), torch.ones(3))
    assert preprocess(x.float(), 64).shape == (3, 3, 6, 64, 64)
    out = detector_outputs(detector, videos, detector_kwargs=dict(rescale=True, resize=True, return_features=True))
    np.testing.assert_allclose(out, feats.double().numpy(), rtol=1e-5, atol=1e-6)


def test_motion_channels_see_only_change():
    torch.manual_seed(0)
    model = VideoClassifier(num_classes=2, widths=(8,), resolution=8, motion_gap=2)
    with torch.no_grad():
        model.blocks[0].weight[:, :3] = 0  # keep only the frame-difference input channels
    frame = torch.rand(1, 3, 1, 8, 8)
    still = frame.expand(1, 3, 6, 8, 8)
    moving = torch.cat([frame.roll(t, dims=-1) for t in range(6)], dim=2)  # (1, 3, 6, 8, 8)
    torch.testing.assert_close(model(still)[0], model(torch.zeros_like(still))[0])
    assert not torch.allclose(model(moving)[0], model(still)[0])


def test_training_learns_the_synthetic_classes():
    # 4 classes of the built-in data set: one shape moving in 4 directions, told apart only by motion.
    train = SyntheticVideoDataset(64, num_frames=10, resolution=16, seed=0, num_classes=4)
    model, losses = train_classifier(train, steps=80, batch_size=16, lr=1e-2, seed=0, **TINY)
    assert losses[0] == pytest.approx(np.log(4), rel=1e-4)
    assert np.mean(losses[-10:]) < 0.25 * losses[0]
    held_out = SyntheticVideoDataset(48, num_frames=10, resolution=16, seed=1, num_classes=4)
    assert evaluate_classifier(model, held_out, clip_frames=8) >= 0.75  # chance is 0.25


def test_training_is_seeded():
    data = MovingBlobs(16, seed=0)
    _, a = train_classifier(data, steps=3, batch_size=4, seed=3, **TINY)
    _, b = train_classifier(data, steps=3, batch_size=4, seed=3, **TINY)
    _, c = train_classifier(data, steps=3, batch_size=4, seed=4, **TINY)
    assert a == b and a != c


def test_training_rejects_bad_input():
    with pytest.raises(ValueError, match="num_classes"):
        train_classifier([{"video": torch.zeros(3, 8, 16, 16), "label": 0}], steps=1, **TINY)
    with pytest.raises(ValueError, match="clip_frames"):
        train_classifier(MovingBlobs(4, 0, num_frames=6), steps=1, batch_size=2, **TINY)
    with pytest.raises(ValueError, match="steps"):
        train_classifier(MovingBlobs(4, 0), steps=0, **TINY)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(1)
    model = VideoClassifier(num_classes=3, widths=(8, 16), resolution=16)
    torch.nn.init.normal_(model.head.weight)
    path = save_classifier(model, tmp_path / "clf")
    save_classifier(model, path)  # replacing an existing save
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf"]
    loaded = load_classifier(path)
    assert loaded.config.resolution == 16 and list(loaded.config.widths) == [8, 16]
    x = torch.randn(2, 3, 4, 16, 16)
    torch.testing.assert_close(loaded(x)[1], model(x)[1])
    with pytest.raises(FileNotFoundError, match="no saved classifier"):
        load_classifier(tmp_path / "missing")
