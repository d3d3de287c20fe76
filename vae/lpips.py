"""LPIPS v0.1 (VGG16) perceptual distance, frozen, for inputs in [-1, 1].

The network is torchvision's VGG16 feature stack up to relu5_3 plus LPIPS's five learned 1x1 "lin" layers
(Zhang et al. 2018). Nothing is downloaded: both weight files are read from disk, and a missing file stops
with the exact URL and destination to fetch it to.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import torch
import torch.nn as nn
from torchvision.models.vgg import cfgs, make_layers

from .torch_files import load_tensors

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
LPIPS_LIN_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth"
VGG16_FILENAME = "vgg16-397923af.pth"
LPIPS_LIN_FILENAME = "lpips_v0.1_vgg.pth"

_TAP_ENDS = (4, 9, 16, 23, 30)  # feature-stack ends of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_TAP_CHANNELS = (64, 128, 256, 512, 512)
_LIN_KEY = re.compile(r"^lin(\d)\.model\.\d\.weight$")  # lpips package layout: lin{k}.model.{dropout?}.weight


class LPIPSWeightsMissing(FileNotFoundError):
    """A weight file LPIPS needs is not on disk."""


def _checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def default_vgg_path() -> Path:
    """Where torchvision itself caches VGG16 ImageNet weights."""
    return _checkpoint_dir() / VGG16_FILENAME


def default_lin_path() -> Path:
    """The installed `lpips` package's v0.1 vgg.pth if present, else a file in the torch hub cache."""
    spec = importlib.util.find_spec("lpips")
    if spec is not None and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "weights" / "v0.1" / "vgg.pth"
        if bundled.is_file():
            return bundled
    return _checkpoint_dir() / LPIPS_LIN_FILENAME


def resolve_weight_paths(vgg_path: str | Path | None = None, lin_path: str | Path | None = None) -> tuple[Path, Path]:
    """Explicit paths win; otherwise the defaults above. Raises LPIPSWeightsMissing naming what to fetch."""
    vgg = Path(vgg_path) if vgg_path is not None else default_vgg_path()
    lin = Path(lin_path) if lin_path is not None else default_lin_path()
    needed = [("VGG16 ImageNet weights", VGG16_URL, vgg), ("LPIPS v0.1 linear layers", LPIPS_LIN_URL, lin)]
    missing = [(name, url, path) for name, url, path in needed if not path.is_file()]
    if missing:
        lines = [f"  {name}: missing {path}\n    curl -L --create-dirs -o {path} {url}" for name, url, path in missing]
        raise LPIPSWeightsMissing(
            "LPIPS needs weight files that are not on this machine:\n" + "\n".join(lines) + "\n"
            "Download them to those paths (or point loss.lpips_vgg_path / loss.lpips_lin_path at copies), "
            "or turn LPIPS off with loss.lpips_weight=0."
        )
    return vgg, lin


def _load(path: Path) -> dict[str, torch.Tensor]:
    state = load_tensors(path)
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a state dict (got {type(state).__name__})")
    return state


class LPIPS(nn.Module):
    """`LPIPS()(a, b)` -> (N,) distances between image batches (N, 3, H, W) in [-1, 1]; frozen, eval mode.

    Gradients flow to the inputs, never into the weights.
    """

    def __init__(self, vgg_path: str | Path | None = None, lin_path: str | Path | None = None):
        super().__init__()
        vgg_file, lin_file = resolve_weight_paths(vgg_path, lin_path)
        with torch.device("meta"):  # no random init: every weight is assigned from the files below
            self.features = make_layers(cfgs["D"])[: _TAP_ENDS[-1]]  # VGG16 convs up to relu5_3
            self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in _TAP_CHANNELS)
        # LPIPS's input scaling: [-1, 1] images mapped onto the ImageNet statistics VGG was trained with.
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self._load_vgg(vgg_file)
        self._load_lins(lin_file)
        self.requires_grad_(False)
        self.eval()

    def _load_vgg(self, path: Path) -> None:
        state = _load(path)
        features = {}
        for key, value in state.items():
            parts = key.split(".")
            if parts[0] == "features" and int(parts[1]) < _TAP_ENDS[-1]:
                features[".".join(parts[1:])] = value
        try:
            self.features.load_state_dict(features, assign=True)
        except RuntimeError as err:
            raise ValueError(
                f"{path} does not hold torchvision VGG16 weights ('features.N.weight' keys): {err}"
            ) from err

    def _load_lins(self, path: Path) -> None:
        state = _load(path)
        found = {f"{m.group(1)}.weight": value for key, value in state.items() if (m := _LIN_KEY.match(key))}
        try:
            self.lins.load_state_dict(found, assign=True)
        except RuntimeError as err:
            raise ValueError(
                f"{path} does not hold LPIPS v0.1 linear layers (keys lin0..lin4.model.1.weight, shapes "
                f"(1, C, 1, 1) for C in {_TAP_CHANNELS}): {err}"
            ) from err

    def train(self, mode: bool = True) -> LPIPS:
        # A frozen metric: stays in eval mode when an enclosing module is put in training mode.
        return super().train(False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3:
            raise ValueError(
                f"LPIPS expects two (N, 3, H, W) batches of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        n = a.shape[0]
        h = (torch.cat([a, b]) - self.shift) / self.scale  # (2N, 3, H, W)
        distance = torch.zeros(n, device=a.device, dtype=torch.float32)
        start = 0
        for end, lin in zip(_TAP_ENDS, self.lins):
            h = self.features[start:end](h)  # (2N, C_k, H_k, W_k)
            start = end
            feat = h.float()
            feat = feat / (feat.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)  # unit length per position
            fa, fb = feat[:n], feat[n:]
            distance = distance + lin((fa - fb).pow(2).to(lin.weight.dtype)).float().mean(dim=(1, 2, 3))  # (N,)
        return distance
