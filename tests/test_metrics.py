import random

import numpy as np
import pytest
import scipy.linalg
import torch

from pipelines.common.pixels import to_uint8
from pipelines.evaluation.metrics import (FVD2048_16F, ISV2048_UCF, PROTOCOLS, classification_accuracy, clip_frame_indices,
                               detector_outputs, feature_statistics, fvd_from_features, inception_score_from_probs,
                               real_clip_plan, to_probabilities)


def _whitened(n, d, seed):
    """n points whose sample mean is exactly 0 and biased covariance exactly I."""
    x = np.random.default_rng(seed).standard_normal((n, d))
    x -= x.mean(axis=0)
    chol = np.linalg.cholesky(x.T @ x / n)
    return x @ np.linalg.inv(chol).T


def _reference_fvd(real, fake):
    """Straightforward numpy/scipy FVD: np.cov(bias=True), StyleGAN-V's sqrtm(S_gen S_real)."""
    mu_r, mu_f = real.mean(0), fake.mean(0)
    s_r, s_f = np.cov(real, rowvar=False, bias=True), np.cov(fake, rowvar=False, bias=True)
    s = scipy.linalg.sqrtm(s_f @ s_r)
    return float(np.real(np.square(mu_f - mu_r).sum() + np.trace(s_f + s_r - 2 * s)))


def _reference_is(probs, num_splits):
    """StyleGAN-V's compute_isv loop, written out."""
    probs = probs.copy()
    np.random.RandomState(42).shuffle(probs)
    n, scores = len(probs), []
    for i in range(num_splits):
        part = probs[i * n // num_splits : (i + 1) * n // num_splits]
        kl = part * (np.log(part) - np.log(np.mean(part, axis=0, keepdims=True)))
        scores.append(np.exp(np.mean(np.sum(kl, axis=1))))
    return float(np.mean(scores)), float(np.std(scores))


def test_protocol_constants():
    assert (FVD2048_16F.num_real, FVD2048_16F.num_fake, FVD2048_16F.num_frames) == (2048, 2048, 16)
    assert (ISV2048_UCF.num_fake, ISV2048_UCF.num_frames, ISV2048_UCF.num_splits) == (2048, 16, 10)
    assert set(PROTOCOLS) == {"fvd2048_16f", "isv2048_ucf"}


def test_fvd_identical_sets_is_zero():
    x = np.random.default_rng(0).standard_normal((300, 12))
    assert abs(fvd_from_features(x, x)) < 1e-6


def test_fvd_closed_form_gaussians_with_diagonal_covariances():
    d = 6
    m1, m2 = np.arange(d) * 0.5, np.arange(d)[::-1] * 0.25
    v1, v2 = np.linspace(0.5, 3.0, d), np.linspace(2.0, 0.2, d)
    real = _whitened(400, d, 1) * np.sqrt(v1) + m1
    fake = _whitened(400, d, 2) * np.sqrt(v2) + m2
    expected = np.square(m1 - m2).sum() + np.square(np.sqrt(v1) - np.sqrt(v2)).sum()
    assert fvd_from_features(real, fake) == pytest.approx(expected, rel=1e-9)


def test_fvd_matches_numpy_scipy_reference_and_torch_input():
    rng = np.random.default_rng(3)
    real = rng.standard_normal((200, 16)) @ rng.standard_normal((16, 16))
    fake = rng.standard_normal((150, 16)) * 1.3 + 0.2
    expected = _reference_fvd(real, fake)
    assert fvd_from_features(real, fake) == pytest.approx(expected, rel=1e-9)
    assert fvd_from_features(torch.from_numpy(real).float(), torch.from_numpy(fake).float()) == pytest.approx(
        _reference_fvd(real.astype(np.float32).astype(np.float64), fake.astype(np.float32).astype(np.float64)),
        rel=1e-9)


def test_fvd_uses_biased_covariance():
    x = np.random.default_rng(4).standard_normal((10, 3))
    mu, sigma = feature_statistics(x)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False, bias=True), atol=1e-12)
    assert not np.allclose(sigma, np.cov(x, rowvar=False, bias=False))
    assert mu.dtype == sigma.dtype == np.float64


def test_fvd_rejects_bad_input():
    x = np.zeros((10, 4))
    with pytest.raises(ValueError, match="feature sizes differ"):
        fvd_from_features(x, np.zeros((10, 5)))
    with pytest.raises(ValueError, match="2-D"):
        fvd_from_features(np.zeros(10), x)
    with pytest.raises(ValueError, match="NaN"):
        fvd_from_features(np.full((10, 4), np.nan), x)


def test_is_uniform_probs_is_one():
    mean, std = inception_score_from_probs(np.full((100, 7), 1 / 7))
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_is_one_hot_evenly_used_is_num_classes():
    k = 5
    probs = np.eye(k)[np.arange(50) % k]
    assert inception_score_from_probs(probs, num_splits=1) == pytest.approx((k, 0.0), abs=1e-9)


@pytest.mark.parametrize("n", [200, 205])
def test_is_matches_reference_loop_with_seeded_shuffle(n):
    probs = np.random.default_rng(5).dirichlet(np.full(9, 0.3), size=n)
    mean, std = inception_score_from_probs(probs, num_splits=10)
    ref_mean, ref_std = _reference_is(probs, 10)
    assert mean == pytest.approx(ref_mean, rel=1e-12) and std == pytest.approx(ref_std, rel=1e-10)
    unshuffled = [np.exp(np.mean(np.sum(p * (np.log(p) - np.log(p.mean(0, keepdims=True))), 1)))
                  for p in np.array_split(probs, 10)]
    assert std != pytest.approx(float(np.std(unshuffled)), rel=1e-6)
    assert inception_score_from_probs(torch.from_numpy(probs), 10) == pytest.approx((mean, std), rel=1e-12)


def test_is_rejects_logits_and_too_few_rows():
    with pytest.raises(ValueError, match="softmax"):
        inception_score_from_probs(np.random.default_rng(0).standard_normal((20, 4)))
    with pytest.raises(ValueError, match="num_splits"):
        inception_score_from_probs(np.full((5, 2), 0.5), num_splits=10)


def test_to_probabilities_keeps_probs_and_softmaxes_logits():
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(to_probabilities(logits), probs, atol=1e-12)
    np.testing.assert_allclose(to_probabilities(probs), probs, atol=0)
    assert classification_accuracy(probs, [0, 2]) == 1.0
    assert classification_accuracy(probs, torch.tensor([1, 2])) == 0.5


def test_to_uint8_matches_stylegan_v_and_latte():
    noise = torch.rand(3, 20, 5, 6) * 2.2 - 1.1
    out = to_uint8(noise)
    assert out.dtype == torch.uint8
    torch.testing.assert_close(out, (noise * 127.5 + 128).clamp(0, 255).to(torch.uint8), rtol=0, atol=0)
    latte = ((noise * 0.5 + 0.5) * 255).add(0.5).clamp(0, 255).to(torch.uint8)
    torch.testing.assert_close(out, latte, rtol=0, atol=0)
    # On exact ties (x = j / 255, j odd) float rounding splits the two formulas; the protocol's is StyleGAN-V's.
    grid = (torch.arange(-255, 256, dtype=torch.float64) / 255).float()
    torch.testing.assert_close(to_uint8(grid), (grid * 127.5 + 128).clamp(0, 255).to(torch.uint8),
                               rtol=0, atol=0)
    ties = ((grid + 1) * 127.5 - ((grid + 1) * 127.5).floor()) == 0.5
    assert ties.sum() > 100 and (to_uint8(grid)[ties] != ((grid + 1) * 127.5).round()[ties]).any()
    assert to_uint8(torch.tensor([-1.0, 0.0, 1.0, 1.05, -1.05])).tolist() == [0, 128, 255, 255, 0]
    assert to_uint8(out) is out


def test_to_uint8_rejects_wrong_range_and_dtype():
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        to_uint8(torch.full((3, 2, 4, 4), 200.0))
    with pytest.raises(ValueError, match="NaN"):
        to_uint8(torch.full((3, 2, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="dtype"):
        to_uint8(torch.zeros(3, 2, 4, 4, dtype=torch.int64))


def test_clip_frame_indices_cover_every_valid_start():
    rng = random.Random(0)
    starts = set()
    for _ in range(300):
        idx = clip_frame_indices(20, num_frames=16, stride=1, rng=rng)
        assert np.array_equal(np.diff(idx), np.ones(15)) and idx[-1] <= 19
        starts.add(int(idx[0]))
    assert starts == {0, 1, 2, 3, 4}
    strided = {int(clip_frame_indices(50, 16, 3, rng)[0]) for _ in range(300)}
    assert strided == {0, 1, 2, 3, 4}  # last frame 4 + 15 * 3 = 49
    assert np.array_equal(clip_frame_indices(50, 16, 3), np.arange(0, 48, 3))


def test_clip_frame_indices_reject_short_videos():
    with pytest.raises(ValueError, match="at least 16"):
        clip_frame_indices(15, 16)
    with pytest.raises(ValueError, match="at least 48"):
        clip_frame_indices(47, 16, stride=3)


def test_real_clip_plan_discards_short_videos_and_is_seeded():
    lengths = [40, 10, 16, 100, 30, 64]
    plan = real_clip_plan(lengths, num_clips=4, num_frames=16, seed=7)
    assert [i for i, _ in plan] == [0, 2, 3, 4]
    assert all(len(idx) == 16 and idx[-1] < lengths[i] for i, idx in plan)
    again = real_clip_plan(lengths, num_clips=4, num_frames=16, seed=7)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(plan, again))
    others = [real_clip_plan(lengths, 4, 16, seed=s) for s in range(1, 6)]
    assert any(not np.array_equal(p[3][1], plan[3][1]) for p in others)
    assert len(real_clip_plan(lengths, num_clips=100, num_frames=16)) == 5
    with pytest.raises(ValueError, match="no video"):
        real_clip_plan([5, 6], num_clips=2, num_frames=16)


class _Recorder(torch.nn.Module):
    """Mean colour per video as 3-d features; records what it was called with."""

    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.ones(3))
        self.calls = []

    def forward(self, x, rescale: bool = False):
        self.calls.append((x.dtype, x.shape[0], rescale))
        return x.float().mean(dim=(2, 3, 4)) * self.scale  # (B, 3)


def test_detector_outputs_batches_converts_and_truncates():
    g = torch.Generator().manual_seed(0)
    videos = torch.rand(11, 3, 4, 8, 8, generator=g) * 2 - 1
    items = [videos[0], videos[1:6], {"video": videos[6]}, videos[7:11]]
    det = _Recorder()
    out = detector_outputs(det, items, detector_kwargs={"rescale": True}, batch_size=4)
    expected = to_uint8(videos).float().mean(dim=(2, 3, 4)).double().numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert out.dtype == np.float64 and out.shape == (11, 3)
    assert det.calls == [(torch.uint8, 4, True), (torch.uint8, 4, True), (torch.uint8, 3, True)]
    out7 = detector_outputs(det, items, batch_size=4, max_items=7)
    np.testing.assert_allclose(out7, expected[:7], rtol=1e-6)
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        detector_outputs(det, [torch.zeros(2, 4, 8, 8)])
    assert fvd_from_features(out, out) == pytest.approx(0.0, abs=1e-6)
