"""Latte+IMG's images for joint video-image training, drawn from the latent cache itself.

A causal video VAE (LeanVAE, WF-VAE, IV-VAE) codes a clip's first frame alone, so the first latent frame of any
cached clip *is* that frame's image latent (tests/test_dit_images_training.py checks it for every bundled VAE);
for a per-frame image VAE every latent frame is one. So no second cache: each sample's images are latent frames
of other clips of the same cache, with those clips' labels, as the official code draws single frames of other
videos.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ..common.errors import DataError


class WithImages(Dataset):
    """Each item of `latents` with `num_images` image latents of other clips appended along the frames:
    "mean" (and "std") become (C, T' + num_images, h, w), "image_labels" (num_images,) their clips' labels.

    Which clips (and, with `any_frame`, which of their latent frames) comes from torch's RNG, which the trainer's
    `EpochSeededDataset` seeds by (seed, epoch, index): an item is the same in a resumed run."""

    def __init__(self, latents: Dataset, num_images: int, any_frame: bool):
        if len(latents) < 2:
            raise DataError(f"joint video-image training draws images from other clips; the cache holds "
                            f"{len(latents)} clip(s)")
        self.latents, self.num_images, self.any_frame = latents, num_images, any_frame

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.latents[index])
        others = torch.randint(0, len(self) - 1, (self.num_images,))
        others = others + (others >= index).long()  # every clip but this one
        images = [self.latents[int(i)] for i in others]
        frames = (torch.randint(0, item["mean"].shape[1], (self.num_images,)) if self.any_frame
                  else torch.zeros(self.num_images, dtype=torch.long))
        for key in ("mean", "std"):
            if key in item:
                picked = [image[key][:, int(f)] for image, f in zip(images, frames)]  # (C, h, w) each
                item[key] = torch.cat([item[key], torch.stack(picked, dim=1)], dim=1)  # (C, T' + I, h, w)
        item["image_labels"] = torch.tensor([image["label"] for image in images])
        return item
