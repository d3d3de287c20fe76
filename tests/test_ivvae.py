"""IV-VAE: parameter parity with the official models, group causality, causal-cache chunked == whole-video
inference for every length and chunk size, images as first frames, the keyframe initialisation from an image
VAE, and the released weights giving the official outputs (golden files made by tests/data/make_ivvae_golden.py
from the official code)."""

import pytest
import torch
from conftest import untouched_by_training
from golden import golden as read_golden

from vae import IVVAE, IVImageVAE, build_autoencoder, load_autoencoder

# Totals of the official models, instantiated from the official code at the released sizes.
OFFICIAL_PARAMETERS = {"ivvae-z4": 107_170_842, "ivvae-z8": 107_379_150, "ivvae-z16": 107_798_550,
                       "ivvae-z16-dim96": 241_854_742}


def tiny(dtype=torch.float64, preset: str = "ivvae-tiny", seed: int = 0, **overrides):
    torch.manual_seed(seed)
    model = build_autoencoder(preset, **overrides).eval()
    model.disable_chunking()  # the whole-video reference (by default IV-VAE codes one latent frame at a time)
    return model.double() if dtype == torch.float64 else model


def video(frames: int, size: int = 16, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, 3, frames, size, size, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)


@pytest.mark.parametrize("preset", sorted(OFFICIAL_PARAMETERS))
def test_parameter_counts_equal_the_official_models(preset):
    with torch.device("meta"):
        model = build_autoencoder(preset)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMETERS[preset]


def test_frame_groups_are_causal_between_and_bidirectional_inside():
    model = tiny()
    with torch.no_grad():  # as after training: the initialisation's zero residual branches hide their reach
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    x = video(17)
    y = x.clone()
    y[:, :, 7] += 1.0  # pixel frame 7 lies in group 2 (frames 5-8), latent frame 2
    with torch.no_grad():
        zx, zy = model.encode(x).latent_dist.mean, model.encode(y).latent_dist.mean
        assert ((zx - zy).abs().amax(dim=(0, 1, 3, 4)) > 0).tolist() == [False, False, True, True, True]
        y = x.clone()
        y[:, :, 8] += 1.0  # the group's last frame reaches its keyframe half (frame 5) through the KTC convs
        zy = model.encode(y).latent_dist.mean
        assert (zx - zy)[:, :2, 2].abs().max() > 0
        z = zx.clone()
        z[:, :, 2] += 1.0  # latent frame 2 decodes to frames 5-8: nothing before them changes
        out_changed = ((model.decode(zx).sample - model.decode(z).sample).abs().amax(dim=(0, 1, 3, 4)) > 0).tolist()
    assert out_changed == [False] * 5 + [True] * 12


@pytest.mark.parametrize("frames", [9, 13, 17, 29, 33])
def test_chunked_equals_full_for_every_chunk_size(frames):
    model64, model32 = tiny(), tiny(torch.float32)
    x = video(frames)
    with torch.no_grad():
        for model, x_, tol in ((model64, x, 1e-12), (model32, x.float(), 1e-5)):
            z = model.encode(x_).latent_dist.mean
            full = model.decode(z).sample
            for chunk in range(1, 6):
                assert (model.encode(x_, chunk_size=chunk).latent_dist.mean - z).abs().max() <= tol, chunk
                assert (model.decode(z, chunk_size=chunk).sample - full).abs().max() <= tol, chunk


def test_inference_is_chunked_by_default_and_equal_to_whole_video():
    model = tiny()
    x = video(13)
    with torch.no_grad():
        z, full = model.encode(x).latent_dist.mean, model.decode(model.encode(x).latent_dist.mean).sample
        model.enable_chunking(1)
        assert build_autoencoder("ivvae-tiny").default_chunk_size == 1
        assert (model.encode(x).latent_dist.mean - z).abs().max() <= 1e-12
        assert (model.decode(z).sample - full).abs().max() <= 1e-12


def test_an_image_is_the_first_latent_of_every_video_starting_with_it_and_lengths_change_between_calls():
    model = tiny()
    with torch.no_grad():
        for frames in (17, 9, 21):
            x = video(frames, seed=frames)
            z = model.encode(x).latent_dist.mean
            assert (model.encode(x[:, :, 0]).latent_dist.mean - z[:, :, 0]).abs().max() <= 1e-12
            assert (model.encode(x[:, :, :5]).latent_dist.mean - z[:, :, :2]).abs().max() <= 1e-12
            assert (model.decode(z[:, :, 0]).sample - model.decode(z).sample[:, :, 0]).abs().max() <= 1e-12


def test_bad_frame_counts_and_sizes_are_refused():
    with pytest.raises(ValueError, match=r"1 \+ 4k frames .* use 13 or 17"):
        tiny().encode(video(16))
    with pytest.raises(ValueError, match="z_dim must be even"):
        IVVAE(z_dim=5, dim=8, num_res_blocks=1)
    with pytest.raises(ValueError, match="four stages"):
        IVVAE(dim_mult=(1, 2, 4))


def test_training_reaches_every_parameter():
    x = video(9, dtype=torch.float32)
    untouched = untouched_by_training(tiny(torch.float32).train(), lambda m: (m(x).sample - x).abs().mean())
    assert not untouched, untouched


def test_keyframe_initialisation_reproduces_the_image_vae_on_keyframes():
    image = tiny(preset="ivvae-tiny-keyframes", seed=1)
    assert isinstance(image, IVImageVAE) and image.latent_channels == 2
    with torch.no_grad():  # gains and biases away from their initial values, so the copy is really checked
        for param in image.parameters():
            param.add_(0.1 * torch.randn_like(param))
    model = tiny()
    model.init_keyframes_from(image)
    x = video(13)
    keyframes = [0, 1, 5, 9]  # the first frame of every group
    with torch.no_grad():
        posterior = model.encode(x).latent_dist
        expected = image.encode(x[:, :, keyframes]).latent_dist
        assert (posterior.mean[:, :2] - expected.mean).abs().max() <= 1e-12  # the keyframe half of the latent
        assert (posterior.logvar[:, :2] - expected.logvar).abs().max() <= 1e-12
        decoded = model.decode(posterior.mean).sample
        assert (decoded[:, :, keyframes] - image.decode(expected.mean).sample).abs().max() <= 1e-12
        assert (decoded[:, :, 2] - image.decode(expected.mean).sample[:, :, 1]).abs().max() > 1e-3  # temporal head
    with pytest.raises(ValueError, match="z_dim=2"):
        model.init_keyframes_from(tiny(preset="ivvae-tiny-keyframes", z_dim=4))


def test_tiny_ivvae_overfits_a_real_clip(overfit_real_clip):
    start, end = overfit_real_clip(tiny(torch.float32))
    assert end > start + 8, (start, end)


# ---------------------------------------------------------------------------------------------- released weights
def golden(name: str):
    return read_golden(f"ivvae_golden_{name}")


@pytest.mark.parametrize("name", ["z4", "z8"])
def test_released_weights_give_the_official_outputs(name, tmp_path):
    config, state, expected = golden(name)
    torch.save(state, tmp_path / f"ivvae_{name}.pth")
    model = load_autoencoder(tmp_path / f"ivvae_{name}.pth")
    assert isinstance(model, IVVAE) and model.config.z_dim == config["z_dim"] and model.config.dim == config["dim"]
    model = IVVAE.from_official_checkpoint(tmp_path / f"ivvae_{name}.pth", latents_mean=config["shift_factor"],
                                           latents_std=1 / config["scale_factor"])
    x = expected["input"]
    with torch.no_grad():
        latent = model.normalize_latents(model.encode(x).latent_dist.mean)  # the official scale * (mean - shift)
        assert (latent - expected["latent"]).abs().max() <= 1e-5
        raw = expected["latent"] / config["scale_factor"] + config["shift_factor"]  # the official decode's first step
        assert (model.decode(raw).sample - expected["recon"]).abs().max() <= 1e-4  # summation order; float64 below to 1e-12
        assert (model.denormalize_latents(expected["latent"]) - raw).abs().max() <= 1e-6
        model64 = model.double()
        latent64 = model64.normalize_latents(model64.encode(x.double()).latent_dist.mean)
        assert (latent64 - expected["latent_f64"]).abs().max() <= 1e-12
        recon64 = model64.decode(model64.denormalize_latents(expected["latent_f64"]), chunk_size=2).sample
        assert (recon64 - expected["recon_f64"]).abs().max() <= 1e-12


def test_released_sizes_get_their_published_scale_and_shift_and_bad_files_are_explained(tmp_path):
    with torch.device("meta"):
        state = build_autoencoder("ivvae-z8").state_dict()
    from vae.ivvae import IVVAE_PRESETS
    from vae.ivvae.official import released_statistics, size_from_tensors

    size = size_from_tensors(state)
    assert size == dict(z_dim=8, dim=64, num_res_blocks=2)
    assert released_statistics(size, IVVAE_PRESETS) == dict(latents_mean=-0.0322, latents_std=1 / 1.0940)
    assert released_statistics(dict(size, dim=8), IVVAE_PRESETS) == dict(latents_mean=0.0, latents_std=1.0)
    _, small, _ = golden("z8")
    torch.save({k: v for k, v in small.items() if "head" not in k}, tmp_path / "cut.pth")
    with pytest.raises(ValueError, match="missing .*head"):
        IVVAE.from_official_checkpoint(tmp_path / "cut.pth")
    with pytest.raises(FileNotFoundError, match="modelscope"):
        IVVAE.from_official_checkpoint(tmp_path / "absent.pth")


def test_a_released_checkpoint_file_identifies_a_latent_cache(tmp_path):
    import hashlib

    from pipelines.training.latent_cache import weights_sha256

    _, state, _ = golden("z8")
    torch.save(state, tmp_path / "ivvae.pth")  # `vae=ivvae.pth`: the file itself is the cache's VAE identity
    assert weights_sha256(tmp_path / "ivvae.pth") == hashlib.sha256((tmp_path / "ivvae.pth").read_bytes()).hexdigest()
