"""Measuring models: FVD / IS by the StyleGAN-V protocol and its detectors, the synthetic-data classifier that
stands in for them offline, VAE reconstruction quality, the evaluation of a trained run, and its report."""
