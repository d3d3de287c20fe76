import numpy as np
import pytest
import torch

from pipelines.classifier import (ClassifierDetector, VideoClassifier, _colour_augment, evaluate_classifier,
                                  load_classifier, preprocess, save_classifier, train_classifier)
from pipelines.data import SyntheticVideoDataset
from pipelines.metrics import detector_outputs, videos_to_uint8


def tiny_synthetic(num_samples, seed, num_frames=10):
    return SyntheticVideoDataset(num_samples, num_frames=num_frames, resolution=16, seed=seed, num_classes=4)


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
    model, losses = train_classifier(tiny_synthetic(64, seed=0), steps=80, batch_size=16, lr=1e-2, seed=0, **TINY)
    assert losses[0] == pytest.approx(np.log(4), rel=1e-4)
    assert np.mean(losses[-10:]) < 0.25 * losses[0]
    assert evaluate_classifier(model, tiny_synthetic(48, seed=1), clip_frames=8) >= 0.75  # chance is 0.25


def test_training_is_seeded():
    data = tiny_synthetic(16, seed=0)
    _, a = train_classifier(data, steps=3, batch_size=4, seed=3, **TINY)
    _, b = train_classifier(data, steps=3, batch_size=4, seed=3, **TINY)
    _, c = train_classifier(data, steps=3, batch_size=4, seed=4, **TINY)
    assert a == b and a != c


def test_training_rejects_bad_input():
    with pytest.raises(ValueError, match="num_classes"):
        train_classifier([{"video": torch.zeros(3, 8, 16, 16), "label": 0}], steps=1, **TINY)
    with pytest.raises(ValueError, match="clip_frames"):
        train_classifier(tiny_synthetic(4, 0, num_frames=6), steps=1, batch_size=2, **TINY)
    with pytest.raises(ValueError, match="steps"):
        train_classifier(tiny_synthetic(4, 0), steps=0, **TINY)


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



def test_colour_augment_permutes_channels_and_inverts():
    videos = torch.randint(0, 256, (64, 3, 2, 4, 4), dtype=torch.uint8)
    out = _colour_augment(videos, torch.Generator().manual_seed(0))
    kinds = set()
    for v, o in zip(videos, out):
        inverted = not any(torch.equal(o[0], v[c]) for c in range(3))
        plain = 255 - o if inverted else o
        order = tuple(next(c for c in range(3) if torch.equal(plain[k], v[c])) for k in range(3))
        assert sorted(order) == [0, 1, 2]
        kinds.add((inverted, order))
    assert len(kinds) > 6  # both polarities and several channel orders occur
