"""Encode a video data set once into a latent cache with a trained (or imported) VAE.

    python cache_latents.py vae=runs/default/vae/vae output_dir=runs/default/latents
    accelerate launch cache_latents.py vae=... output_dir=... data.name=ucf101 data.root=/data/UCF-101 \\
        data.frame_interval=3 data.resolution=256
    python cache_latents.py vae=/models/sd-vae-ft-ema output_dir=runs/sd/latents data.num_frames=16  # SD-VAE per frame

Every key of LatentCacheConfig can be given as key=value or in a --config YAML file. A re-run after a kill
encodes only the shards that are missing.
"""

from pipelines.training.latent_cache import main

if __name__ == "__main__":
    main()
