"""LeanVAE's own properties: Haar exactness, official sizes, shapes, causality, gradients, a real overfit, the
released weights giving the official outputs (golden files made by tests/data/make_leanvae_golden.py).
(The contract every VAE keeps - chunked == full, save / load, frame rules - is tested in test_autoencoders.py.)"""

import pytest
import torch
from conftest import untouched_by_training
from golden import golden as read_golden

from vae import LeanVAE, build_autoencoder, load_autoencoder
from vae.haar import haar2d, haar3d, ihaar2d, ihaar3d


def tiny_vae(seed: int = 0, dtype=torch.float32) -> LeanVAE:
    torch.manual_seed(seed)
    model = build_autoencoder("lean-tiny").eval()
    return model.double() if dtype == torch.float64 else model


def video(frames: int, size: int = 16, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, 3, frames, size, size, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)


# ---------------------------------------------------------------------------------------------- Haar
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_haar_round_trip_is_exact(dtype, tol):
    x = video(8, 24, dtype=dtype)
    assert (ihaar3d(haar3d(x)) - x).abs().max() < tol
    assert (ihaar2d(haar2d(x[:, :, 0])) - x[:, :, 0]).abs().max() < tol


def test_haar_is_orthonormal_and_band_zero_is_the_average():
    x = video(4, 8, dtype=torch.float64)
    c3 = haar3d(x)
    assert torch.allclose(c3.pow(2).sum(), x.pow(2).sum())  # energy preserved
    block_mean = x.reshape(1, 3, 2, 2, 4, 2, 4, 2).mean(dim=(3, 5, 7))
    assert torch.allclose(c3[:, 0], block_mean * 8**0.5)
    const = torch.ones(1, 3, 2, 4, 4, dtype=torch.float64)
    assert haar3d(const)[:, 1:].abs().max() < 1e-12  # a constant has no high-frequency energy


# ---------------------------------------------------------------------------------------------- shapes
def test_official_presets_match_the_paper():
    for name in ("lean-4ch", "lean-16ch"):
        with torch.device("meta"):
            model = build_autoencoder(name)
        params = sum(p.numel() for p in model.parameters())
        assert abs(params - 39.8e6) / 39.8e6 < 0.01, (name, params)


@pytest.mark.parametrize("frames", [1, 5, 17])
def test_video_shapes(frames):
    model = tiny_vae()
    x = video(frames, 32)
    with torch.no_grad():
        posterior = model.encode(x).latent_dist
        assert posterior.mean.shape == (1, 4, 1 + (frames - 1) // 4, 4, 4)
        assert model.decode(posterior.mode()).sample.shape == x.shape
        assert model(x).sample.shape == x.shape


def test_images_as_4d_tensors():
    model = tiny_vae()
    x = video(1, 16)[:, :, 0]  # (1, 3, 16, 16)
    with torch.no_grad():
        z = model.encode(x).latent_dist.mode()
        assert z.shape == (1, 4, 2, 2)
        recon = model.decode(z).sample
    assert recon.shape == x.shape
    assert torch.allclose(recon, model.decode(z.unsqueeze(2)).sample[:, :, 0])


def test_kl_sums_over_every_latent_dim():
    model = tiny_vae()
    with torch.no_grad():
        posterior = model.encode(video(9, 16)).latent_dist
    m, lv = posterior.mean, posterior.logvar
    expected = 0.5 * (m.pow(2) + lv.exp() - 1 - lv).flatten(1).sum(1)
    assert torch.allclose(posterior.kl(), expected)


def test_encoder_is_causal():
    model = tiny_vae()
    x = video(17)
    y = x.clone()
    y[:, :, 9:] = -y[:, :, 9:]  # change only frames 9.. (latent frames 3..)
    with torch.no_grad():
        zx, zy = model.encode(x).latent_dist.mean, model.encode(y).latent_dist.mean
    assert torch.equal(zx[:, :, :3], zy[:, :, :3])
    assert not torch.allclose(zx[:, :, 3:], zy[:, :, 3:])


def test_training_reaches_every_parameter():
    x = video(9)

    def loss_of(m):
        out = m(x, generator=torch.Generator().manual_seed(0))
        return (out.sample - x).abs().mean() + 1e-3 * out.latent_dist.kl().mean()

    # lean-small, not lean-tiny: at lean-tiny's width the ISTA transforms start below their soft threshold (0.01)
    # under the official initialisation, so nothing reaches them; at lean-small's half their outputs pass it.
    torch.manual_seed(0)
    untouched = untouched_by_training(build_autoencoder("lean-small").train(), loss_of)
    assert not untouched, untouched


def test_tiny_vae_overfits_a_real_clip(overfit_real_clip):
    torch.manual_seed(0)
    start, end = overfit_real_clip(build_autoencoder("lean-tiny"))
    assert end > start + 8, (start, end)  # ~10 dB -> ~20 dB


# ---------------------------------------------------------------------------------------------- released weights
def golden(name: str):
    return read_golden(f"leanvae_golden_{name}", "args")


@pytest.mark.parametrize("name", ["dim4", "dim16"])
def test_released_weights_give_the_official_outputs(name, tmp_path):
    args, state, expected = golden(name)
    torch.save({"args": args, "state_dict": state}, tmp_path / "LeanVAE.ckpt")  # the released layout
    model = load_autoencoder(tmp_path / "LeanVAE.ckpt")
    assert isinstance(model, LeanVAE) and model.latent_channels == args["latent_dim"]
    assert (model.config.lc_dim, model.config.ista_phases) == (args["l_dim"], args["ista_iter_num"])
    with torch.no_grad():  # the official range is [-0.5, 0.5], ours [-1, 1]
        for kind in ("video", "image"):  # the official image latent has a time axis of 1, its decoding none
            latent = model.encode(2 * expected[kind]).latent_dist.mean
            assert (latent - expected[f"{kind}_latent"].view_as(latent)).abs().max() <= 1e-5
            recon = model.decode(expected[f"{kind}_latent"].view_as(latent)).sample
            assert (recon / 2 - expected[f"{kind}_recon"].view_as(recon)).abs().max() <= 1e-5
        chunked = model.decode(expected["video_latent"], chunk_size=1).sample  # our causal cache, same weights
        assert (chunked / 2 - expected["video_recon"]).abs().max() <= 1e-5


def test_lightning_checkpoints_load_and_other_files_are_refused(tmp_path):
    args, state, expected = golden("dim4")
    lightning = {f"autoencoder.{key}": value for key, value in state.items()}
    lightning["perceptual_model.net.slice1.0.weight"] = torch.zeros(2)  # loss modules beside the autoencoder
    torch.save({"state_dict": lightning}, tmp_path / "last.ckpt")
    model = LeanVAE.from_official_checkpoint(tmp_path / "last.ckpt", latents_std=[2.0] * 4)
    assert model.config.latents_std == [2.0] * 4
    with torch.no_grad():
        latent = model.encode(2 * expected["video"]).latent_dist.mean
    assert (latent - expected["video_latent"]).abs().max() <= 1e-5
    torch.save({"state_dict": {"encoder.conv.weight": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not a LeanVAE checkpoint"):
        load_autoencoder(tmp_path / "other.ckpt")
    with pytest.raises(FileNotFoundError, match="huggingface.co/Yumic/LeanVAE"):
        LeanVAE.from_official_checkpoint(tmp_path / "missing.ckpt")


def test_feed_forward_in_token_slices_is_the_training_function(monkeypatch):
    """Inference runs the GEGLU feed-forward in slices of tokens, in place; training in one piece, with a graph."""
    from vae.leanvae.layers import GEGLUFeedForward

    monkeypatch.setattr(GEGLUFeedForward, "INFERENCE_TOKENS", 7)  # 2 x 3 x 4 x 5 = 120 tokens: 18 slices
    torch.manual_seed(0)
    ff, x = GEGLUFeedForward(12), torch.randn(2, 3, 4, 5, 12)
    whole = ff(x)
    assert whole.requires_grad
    with torch.no_grad():
        sliced = ff(x)
    torch.testing.assert_close(sliced, whole.detach(), rtol=1e-5, atol=1e-6)
