"""LeanVAE: Haar exactness, shapes, causal-cache chunked == full, save/load, gradients, errors."""

import pytest
import torch

from vae import VAE_PRESETS, LeanVAE
from vae.haar import haar2d, haar3d, ihaar2d, ihaar3d


def tiny_vae(seed: int = 0, dtype=torch.float32) -> LeanVAE:
    torch.manual_seed(seed)
    model = LeanVAE(**VAE_PRESETS["lean-tiny"]).eval()
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
            model = LeanVAE(**VAE_PRESETS[name])
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


# ---------------------------------------------------------------------------------------------- chunked == full
@pytest.mark.parametrize("frames", [17, 33, 65])
@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
def test_chunked_equals_full_float32(frames, chunk):
    model = tiny_vae()
    x = video(frames)
    with torch.no_grad():
        full = model.encode(x).latent_dist.mean
        chunked = model.encode(x, chunk_size=chunk).latent_dist.mean
        assert (full - chunked).abs().max() <= 1e-5
        decoded_full = model.decode(full).sample
        decoded_chunked = model.decode(full, chunk_size=chunk).sample
        assert (decoded_full - decoded_chunked).abs().max() <= 1e-5


@pytest.mark.parametrize("chunk", [1, 3, 4])
def test_chunked_equals_full_float64(chunk):
    model = tiny_vae(dtype=torch.float64)
    x = video(33, dtype=torch.float64)
    with torch.no_grad():
        z = model.encode(x).latent_dist.mean
        assert (z - model.encode(x, chunk_size=chunk).latent_dist.mean).abs().max() <= 1e-12
        assert (model.decode(z).sample - model.decode(z, chunk_size=chunk).sample).abs().max() <= 1e-12


def test_iter_decode_streams_the_same_video():
    model = tiny_vae()
    with torch.no_grad():
        z = model.encode(video(21)).latent_dist.mean  # 6 latent frames
        pieces = list(model.iter_decode(z, chunk_size=4))
        full = model.decode(z).sample
    assert [p.shape[2] for p in pieces] == [13, 8]
    assert torch.equal(torch.cat(pieces, dim=2), model.decode(z, chunk_size=4).sample)
    assert (torch.cat(pieces, dim=2) - full).abs().max() <= 1e-5


def test_no_state_leaks_between_calls():
    model = tiny_vae()
    x, other = video(17, seed=1), video(17, seed=2)
    with torch.no_grad():
        reference = model.encode(x).latent_dist.mean
        model.encode(other, chunk_size=2)
        _ = list(model.iter_decode(model.encode(other).latent_dist.mean, chunk_size=1))[:1]  # abandoned stream
        assert torch.equal(model.encode(x).latent_dist.mean, reference)
        model.enable_chunking(2)
        assert (model.encode(x).latent_dist.mean - reference).abs().max() <= 1e-5
        model.disable_chunking()
        assert torch.equal(model.encode(x).latent_dist.mean, reference)


def test_encoder_is_causal():
    model = tiny_vae()
    x = video(17)
    y = x.clone()
    y[:, :, 9:] = -y[:, :, 9:]  # change only frames 9.. (latent frames 3..)
    with torch.no_grad():
        zx, zy = model.encode(x).latent_dist.mean, model.encode(y).latent_dist.mean
    assert torch.equal(zx[:, :, :3], zy[:, :, :3])
    assert not torch.allclose(zx[:, :, 3:], zy[:, :, 3:])


# ---------------------------------------------------------------------------------------------- training-side
def test_save_load_round_trip(tmp_path):
    model = tiny_vae(seed=3)
    model.save_pretrained(tmp_path / "vae")
    assert (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = LeanVAE.from_pretrained(tmp_path / "vae").eval()
    x = video(9)
    with torch.no_grad():
        assert torch.equal(model(x, sample_posterior=False).sample, loaded(x, sample_posterior=False).sample)


def test_gradients_reach_every_parameter():
    model = tiny_vae().train()
    x = video(9)
    out = model(x, generator=torch.Generator().manual_seed(0))
    loss = (out.sample - x).abs().mean() + 1e-3 * out.latent_dist.kl().mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "shape,message",
    [
        ((1, 3, 16, 16, 16), r"1 \+ 4k frames"),
        ((1, 3, 17, 20, 16), "divisible by 8"),
        ((1, 4, 17, 16, 16), r"\(B, 3, T, H, W\)"),
        ((3, 16, 16), r"\(B, 3, T, H, W\)"),
    ],
)
def test_bad_inputs_are_explained(shape, message):
    with pytest.raises(ValueError, match=message):
        tiny_vae().encode(torch.zeros(shape))


def test_bad_latents_and_chunk_sizes_are_explained():
    model = tiny_vae()
    with pytest.raises(ValueError, match=r"\(B, 4, T', h, w\)"):
        model.decode(torch.zeros(1, 16, 2, 2, 2))
    with pytest.raises(ValueError, match="positive integer"):
        model.encode(video(9), chunk_size=0)
    with pytest.raises(ValueError, match="positive integer"):
        model.decode(torch.zeros(1, 4, 2, 2, 2), chunk_size=1.5)


def test_tiny_vae_overfits_a_real_clip(test_data_dir):
    from pipelines.data import read_frames
    from pipelines.data.clips import frames_to_tensor

    x = frames_to_tensor(read_frames(test_data_dir / "carphone.mp4", range(0, 18, 2)[:9]), 32).unsqueeze(0)
    torch.manual_seed(0)
    model = LeanVAE(**VAE_PRESETS["lean-tiny"])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def psnr() -> float:
        with torch.no_grad():
            recon = model(x, sample_posterior=False).sample.clamp(-1, 1)
        return float(-10 * torch.log10(((recon - x) / 2).pow(2).mean()))

    start = psnr()
    for _ in range(100):
        out = model(x, sample_posterior=False)
        loss = (out.sample - x).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert psnr() > start + 8, (start, psnr())  # ~10 dB -> ~20 dB
