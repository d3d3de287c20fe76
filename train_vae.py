"""Train a video VAE (LeanVAE by default; any preset of vae.VAE_PRESETS).

    python train_vae.py                                   # configs/vae/default.yaml: synthetic data on a CPU
    accelerate launch train_vae.py --config configs/vae/leanvae-4ch.yaml data.root=/data/kinetics
    python train_vae.py max_steps=100 output_dir=runs/try --resume latest

Every config key can be overridden as key=value (sections with dots: data.num_frames=9, loss.disc_start=0,
model.preset=lean-tiny). The EMA model is saved to <output_dir>/vae (load it with vae.load_autoencoder).
"""

from pipelines.training.vae_trainer import main

if __name__ == "__main__":
    main()
