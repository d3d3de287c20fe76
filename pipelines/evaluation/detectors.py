"""The FVD / IS detectors of the StyleGAN-V protocol: I3D (Kinetics-400) and C3D (UCF-101) TorchScript files.

The files are fetched from their public URLs into a cache folder ($LEANLATTE_DETECTOR_CACHE, default
~/.cache/leanlatte/detectors) when a network is there, or placed there by hand. Their sha256 is checked:
against the pinned hash when one is known, otherwise against the hash recorded in a `<file>.sha256`
sidecar the first time the file was seen (trust on first use, so later corruption or replacement is caught).
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..common.errors import MissingFileError, UserError
from ..common.files import atomic_write, write_text

CACHE_ENV_VAR = "LEANLATTE_DETECTOR_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/leanlatte/detectors")


@dataclass(frozen=True)
class DetectorSpec:
    """One downloadable TorchScript detector and the keyword arguments the protocol calls it with."""

    name: str
    filename: str
    url: str
    # sha256 of the published file. None: not known to this project (it could not be downloaded while
    # writing it); the hash is then recorded on first use instead.
    sha256: str | None
    call_kwargs: dict[str, Any] = field(default_factory=dict)


I3D = DetectorSpec(
    name="i3d",
    filename="i3d_torchscript.pt",
    url="https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",
    sha256=None,
    # Raw 400-d logits-layer features before the softmax, as StyleGAN-V's compute_fvd uses them.
    call_kwargs={"rescale": True, "resize": True, "return_features": True},
)
C3D_UCF101 = DetectorSpec(
    name="c3d_ucf101",
    filename="c3d_ucf101.pt",
    url="https://www.dropbox.com/s/jxpu7avzdc9n97q/c3d_ucf101.pt?dl=1",
    sha256=None,
    # StyleGAN-V's compute_isv calls it without arguments and reads 101 class probabilities.
    call_kwargs={},
)
DETECTORS = {spec.name: spec for spec in (I3D, C3D_UCF101)}


class DetectorUnavailableError(MissingFileError):
    """A detector file that is not in the cache and could not be downloaded."""


class DetectorChecksumError(UserError, RuntimeError):
    """A detector file whose sha256 differs from the expected one."""


def detector_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder detector files live in: `cache_dir`, else $LEANLATTE_DETECTOR_CACHE, else the default."""
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE_DIR
    return Path(cache_dir).expanduser()


def get_spec(detector: str | DetectorSpec) -> DetectorSpec:
    if isinstance(detector, DetectorSpec):
        return detector
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; available: {', '.join(sorted(DETECTORS))}")
    return DETECTORS[detector]


def detector_path(detector: str | DetectorSpec, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the detector's file is (or must be put)."""
    return detector_cache_dir(cache_dir) / get_spec(detector).filename


def sha256_of(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def folder_sha256(folder: Path) -> str:
    """sha256 over a saved model folder's files (names and contents): the identity of a trained detector."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder)}:{sha256_of(path)}\n".encode())
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def download_detector(spec: DetectorSpec, dest: Path, timeout: float = 30.0) -> Path:
    """Download `spec.url` to `dest` with a progress bar and record its sha256 next to it.

    The file appears only once complete and, when a hash is pinned, only if it matches.
    """
    digest = hashlib.sha256()

    def download(tmp: Path) -> None:
        with urllib.request.urlopen(spec.url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with open(tmp, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, desc=spec.filename) as bar:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if spec.sha256 is not None and digest.hexdigest() != spec.sha256.lower():
            raise DetectorChecksumError(f"the file downloaded from {spec.url} has sha256 {digest.hexdigest()}, not "
                                        f"the pinned {spec.sha256.lower()}; it was not saved")

    atomic_write(dest, download)
    actual = digest.hexdigest()
    write_text(_sidecar(dest), f"{actual}  {dest.name}\n")
    return dest


def _unavailable(spec: DetectorSpec, path: Path, reason: str) -> DetectorUnavailableError:
    return DetectorUnavailableError(
        f"the {spec.name} detector file is missing and {reason}.\n"
        f"  Download it from: {spec.url}\n"
        f"  and put it at:    {path}\n"
        f"  (or point ${CACHE_ENV_VAR} at the folder that holds {spec.filename})")


def verify_sha256(spec: DetectorSpec, path: Path) -> str:
    """Check the file's sha256 against the pinned hash or the recorded sidecar; record it on first use."""
    actual = sha256_of(path)
    sidecar = _sidecar(path)
    if spec.sha256 is not None:
        expected, source = spec.sha256.lower(), "the pinned hash"
    elif sidecar.is_file():
        expected, source = sidecar.read_text().split()[0].lower(), f"the hash recorded in {sidecar}"
    else:
        write_text(sidecar, f"{actual}  {spec.filename}\n")
        return actual
    if actual != expected:
        raise DetectorChecksumError(
            f"sha256 of {path} is {actual}, but {source} is {expected}. The file is corrupt or a different "
            f"file; delete it (and {sidecar.name} if present) and download it again from {spec.url}")
    return actual


def ensure_detector_file(detector: str | DetectorSpec, cache_dir: str | os.PathLike | None = None,
                         download: bool = True) -> Path:
    """Path of the verified detector file, downloading it first if it is missing and `download` is set."""
    spec = get_spec(detector)
    path = detector_path(spec, cache_dir)
    if not path.is_file():
        if not download:
            raise _unavailable(spec, path, "downloading is disabled")
        try:
            download_detector(spec, path)
        except (urllib.error.URLError, OSError) as err:
            raise _unavailable(spec, path, f"downloading it failed ({err})") from err
    verify_sha256(spec, path)
    return path


def load_detector(detector: str | DetectorSpec, device: torch.device | str | None = None,
                  cache_dir: str | os.PathLike | None = None, download: bool = True) -> torch.jit.ScriptModule:
    """The detector TorchScript module in eval mode on `device` (CPU by default)."""
    path = ensure_detector_file(detector, cache_dir, download)
    with warnings.catch_warnings():
        # The published detectors only exist as TorchScript; its deprecation notice is not actionable here.
        warnings.filterwarnings("ignore", message="`torch.jit.load` is deprecated", category=FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu").eval()
    return module.to(device) if device is not None else module
