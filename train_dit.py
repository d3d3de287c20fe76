"""Train a Latte video DiT on latents cached with a trained VAE.

    python train_dit.py                                   # configs/dit/default.yaml: the synthetic run on a CPU
    accelerate launch train_dit.py --config configs/dit/latte-xl2-ucf101.yaml vae=runs/ucf/vae/vae \\
        cache_dir=runs/ucf/latents data.root=/data/UCF-101
    python train_dit.py max_steps=100 output_dir=runs/try --resume latest

Every config key can be overridden as key=value (sections with dots: model.preset=Latte-S/2). The EMA model
is saved to <output_dir>/dit (LatteDiT.from_pretrained) and a sampling pipeline to <output_dir>/pipeline.
"""

from pipelines.training.dit_trainer import main

if __name__ == "__main__":
    main()
