"""Training: run configs, the one training loop, and the VAE, DiT and classifier trainers; the latent cache."""
