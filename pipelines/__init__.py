"""Data, training, latent caching, sampling and evaluation around the LeanVAE and Latte DiT models."""
