import hashlib
import io
import urllib.error
import urllib.request
from dataclasses import replace

import numpy as np
import pytest
import torch

from pipelines.evaluation import detectors
from pipelines.evaluation.detectors import (C3D_UCF101, CACHE_ENV_VAR, I3D, DetectorChecksumError, DetectorUnavailableError,
                                 detector_path, ensure_detector_file, load_detector)
from pipelines.evaluation.metrics import detector_outputs, fvd_from_features, inception_score_from_probs, to_probabilities
from tests.stand_in_detector import save_stand_in

# The published detectors are TorchScript files, so the stand-ins must be too.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def no_network(monkeypatch):
    def fail(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")
    monkeypatch.setattr(urllib.request, "urlopen", fail)


def _videos(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, 16, 16, generator=g) * 2 - 1  # (N, 3, T, H, W)


def test_load_from_cache_records_sha256_and_runs_with_protocol_kwargs(cache, no_network):
    data = save_stand_in(cache / I3D.filename, 400)
    assert detector_path("i3d") == cache / "i3d_torchscript.pt"
    i3d = load_detector("i3d")
    sidecar = cache / "i3d_torchscript.pt.sha256"
    assert sidecar.read_text().split()[0] == hashlib.sha256(data).hexdigest()
    feats = detector_outputs(i3d, _videos(6), detector_kwargs=I3D.call_kwargs, batch_size=4)
    assert feats.shape == (6, 400)
    assert fvd_from_features(feats, feats) == pytest.approx(0.0, abs=1e-6)
    load_detector("i3d")  # the recorded hash is checked again


def test_c3d_outputs_feed_the_inception_score(cache, no_network):
    save_stand_in(cache / C3D_UCF101.filename, 101)
    c3d = load_detector("c3d_ucf101")
    out = detector_outputs(c3d, _videos(20), detector_kwargs=C3D_UCF101.call_kwargs, batch_size=8)
    probs = to_probabilities(out)
    np.testing.assert_allclose(probs, out, atol=0)  # already softmaxed by the detector
    mean, _ = inception_score_from_probs(probs, num_splits=2)
    assert 1.0 <= mean <= 101.0


def test_cache_dir_argument_overrides_env(tmp_path, cache, no_network):
    other = tmp_path / "elsewhere"
    save_stand_in(other / I3D.filename, 400)
    assert ensure_detector_file("i3d", cache_dir=other) == other / I3D.filename
    with pytest.raises(DetectorUnavailableError):
        ensure_detector_file("i3d")


def test_sha256_mismatch_with_recorded_hash(cache, no_network):
    save_stand_in(cache / I3D.filename, 400, seed=0)
    load_detector("i3d")
    save_stand_in(cache / I3D.filename, 400, seed=1)  # a different file under the same name
    with pytest.raises(DetectorChecksumError, match="delete it"):
        load_detector("i3d")


def test_sha256_against_pinned_hash(cache, no_network):
    data = save_stand_in(cache / I3D.filename, 400)
    with pytest.raises(DetectorChecksumError, match="pinned hash is 0+"):
        ensure_detector_file(replace(I3D, sha256="0" * 64))
    good = replace(I3D, sha256=hashlib.sha256(data).hexdigest().upper())
    assert ensure_detector_file(good) == cache / I3D.filename


def test_missing_file_without_network_names_url_and_path(cache, no_network):
    with pytest.raises(DetectorUnavailableError) as err:
        load_detector("c3d_ucf101")
    message = str(err.value)
    assert C3D_UCF101.url in message and str(cache / "c3d_ucf101.pt") in message
    assert "network is unreachable" in message
    assert not list(cache.glob("*"))


def test_missing_file_with_download_disabled_does_not_touch_network(cache, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("network used"))
    with pytest.raises(DetectorUnavailableError, match="downloading is disabled"):
        load_detector("i3d", download=False)


class _FakeResponse(io.BytesIO):
    def __init__(self, data, fail_after=None):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}
        self.fail_after = fail_after

    def read(self, size=-1):
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise ConnectionResetError("connection reset")
        return super().read(size)


def test_download_is_atomic_and_records_hash(tmp_path, cache, monkeypatch):
    data = save_stand_in(tmp_path / "src.pt", 400)
    urls = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: urls.append(url) or _FakeResponse(data))
    i3d = load_detector("i3d")
    assert urls == [I3D.url]
    assert (cache / I3D.filename).read_bytes() == data
    assert sorted(p.name for p in cache.iterdir()) == ["i3d_torchscript.pt", "i3d_torchscript.pt.sha256"]
    assert i3d(torch.zeros(1, 3, 4, 8, 8, dtype=torch.uint8), **I3D.call_kwargs).shape == (1, 400)


def test_interrupted_download_leaves_no_file(tmp_path, cache, monkeypatch):
    data = save_stand_in(tmp_path / "src.pt", 400)
    monkeypatch.setattr(detectors.urllib.request, "urlopen", lambda url, timeout: _FakeResponse(data, fail_after=1))
    with pytest.raises(DetectorUnavailableError, match="connection reset"):
        load_detector("i3d")
    assert not list(cache.glob("*"))


def test_unknown_detector_name():
    with pytest.raises(ValueError, match="available: c3d_ucf101, i3d"):
        load_detector("inception")


def test_download_with_wrong_pinned_hash_is_not_saved(tmp_path, cache, monkeypatch):
    data = save_stand_in(tmp_path / "src.pt", 400)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: _FakeResponse(data))
    with pytest.raises(DetectorChecksumError, match="not saved"):
        ensure_detector_file(replace(I3D, sha256="f" * 64))
    assert not list(cache.glob("*"))
