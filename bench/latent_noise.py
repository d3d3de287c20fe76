"""How well a VAE's decoder tolerates latent errors like a DiT's: class accuracy of decoded videos whose
normalised latents got Gaussian noise of sigma x each channel's std.

    python bench/latent_noise.py --classifier runs/my/classifier runs/my/vae /tmp/other/vae
    python bench/latent_noise.py --classifier C --sigmas 0 0.2 0.4 --clips 128 VAE [VAE ...]

Clips: `--clips` plain built-in synthetic videos (seed `--seed`, classes cycling), 17x64x64. For each VAE: encode
(posterior means), normalise with the VAE's latent statistics, add the noise (seed 0), denormalise, decode, score
the first 16 frames with the classifier (as the evaluation scores generated videos). Sigma 0 is the classifier's
accuracy on the VAE's reconstructions. Prints a markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pipelines.common.errors import exit_on_user_error
from pipelines.data.synthetic import SyntheticVideoDataset
from pipelines.evaluation.classifier import load_classifier, preprocess
from vae import load_autoencoder

BATCH = 32


@torch.no_grad()
def accuracy(classifier, videos: torch.Tensor, labels: torch.Tensor) -> float:
    """Videos in [-1, 1] -> the classifier's accuracy, through the same uint8 rounding as generated samples."""
    uint8 = ((videos[:, :, :16].clamp(-1, 1) + 1) * 127.5).round()
    _, logits = classifier(preprocess(uint8, classifier.config.resolution))
    return float((logits.argmax(1) == labels).float().mean())


@torch.no_grad()
def noisy_decodes(vae, videos: torch.Tensor, sigma: float) -> torch.Tensor:
    latents = torch.cat([vae.encode(videos[i:i + BATCH]).latent_dist.mode() for i in range(0, len(videos), BATCH)])
    normalised = vae.normalize_latents(latents)  # (N, C, t, h, w), unit std per channel
    noise = torch.randn(normalised.shape, generator=torch.Generator().manual_seed(0))
    latents = vae.denormalize_latents(normalised + sigma * noise)
    return torch.cat([vae.decode(latents[i:i + BATCH]).sample for i in range(0, len(latents), BATCH)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("vaes", nargs="+", type=Path, help="saved VAE folders")
    parser.add_argument("--classifier", type=Path, required=True, help="a trained classifier folder")
    parser.add_argument("--sigmas", nargs="+", type=float, default=[0.0, 0.2, 0.4])
    parser.add_argument("--clips", type=int, default=128)
    parser.add_argument("--seed", type=int, default=777)
    args = parser.parse_args()
    data = SyntheticVideoDataset(args.clips, seed=args.seed)
    videos = torch.stack([data[i]["video"] for i in range(args.clips)])  # (N, 3, 17, 64, 64)
    labels = torch.tensor([data[i]["label"] for i in range(args.clips)])
    classifier = load_classifier(args.classifier).eval()
    print(f"{args.clips} plain synthetic clips (seed {args.seed}); the clips themselves: "
          f"{accuracy(classifier, videos, labels):.1%}\n")
    print("| VAE | " + " | ".join(f"sigma {s}" for s in args.sigmas) + " |")
    print("|---|" + "---:|" * len(args.sigmas))
    for path in args.vaes:
        vae = load_autoencoder(path).eval()
        scores = [accuracy(classifier, noisy_decodes(vae, videos, s), labels) for s in args.sigmas]
        print(f"| {path} | " + " | ".join(f"{score:.1%}" for score in scores) + " |", flush=True)


if __name__ == "__main__":
    with exit_on_user_error("latent_noise.py"):
        main()
