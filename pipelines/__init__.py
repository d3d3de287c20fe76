"""Data, training, latent caching, sampling and evaluation around the bundled video VAEs and the Latte DiT.

    data/        video data sets (UCF-101, SkyTimelapse, folders, the built-in synthetic set) and video I/O
    training/    run configs, the training loop, the VAE / DiT / classifier trainers, the latent cache
    evaluation/  FVD / IS metrics and detectors, the offline classifier, reconstruction metrics, reports
    inference/   the diffusers `LatteVideoPipeline`, loading trained runs, writing videos
    common/      configs and command lines, errors, atomic files, keyed randomness, pixels, run layout
"""

__all__ = ["LatteVideoPipeline"]


def __getattr__(name: str):
    # Lazy: `python -m pipelines.common.layout` (run by train.sh) must not import torch and diffusers.
    if name == "LatteVideoPipeline":
        from .inference.pipeline_latte import LatteVideoPipeline

        return LatteVideoPipeline
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
