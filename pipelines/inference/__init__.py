"""Generating videos: the diffusers pipeline, loading a trained run, writing videos."""
