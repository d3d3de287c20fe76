"""A TorchScript stand-in for the published I3D / C3D detector files (which cannot be downloaded here): the same
call signature, a small linear map of each video's mean colour."""

import torch
import torch.nn as nn


class StandInDetector(nn.Module):
    """Same call signature as the published I3D / C3D TorchScript files."""

    def __init__(self, num_outputs: int):
        super().__init__()
        self.proj = nn.Linear(3, num_outputs)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        x = x.float()  # (B, 3, T, H, W)
        if rescale:
            x = x / 127.5 - 1.0
        if resize:
            x = nn.functional.interpolate(x, size=(x.shape[2], 8, 8), mode="trilinear")
        features = self.proj(x.mean(dim=(2, 3, 4)))  # (B, num_outputs)
        return features if return_features else features.softmax(dim=1)


def save_stand_in(path, num_outputs: int, seed: int = 0) -> bytes:
    """Write a scripted stand-in with seeded weights at `path`; returns the file's bytes."""
    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(StandInDetector(num_outputs)).save(str(path))
    return path.read_bytes()
