"""diffusers' video VAEs (Wan 2.1 / 2.2, CogVideoX, HunyuanVideo, LTX-Video) behind the `VideoAutoencoder` contract:
each a small random-init model from its class's own config, saved with `save_pretrained` and loaded through
`load_autoencoder`, must give the diffusers model's own latents and pixels, keep the chunking its class can keep,
name the nearest valid frame counts, and run through the latent cache, the DiT and the exported pipeline."""

import pytest
import torch
from diffusers import AutoencoderKLCogVideoX, AutoencoderKLHunyuanVideo, AutoencoderKLLTXVideo, AutoencoderKLWan

import train_dit
from pipelines import LatteVideoPipeline
from pipelines.training.latent_cache import LatentDataset, weights_sha256
from pipelines.training.latent_cache import main as cache_main
from tests.conftest import reset_accelerate_state
from vae import DiffusersVideoVAE, load_autoencoder

LTX_TINY = dict(block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8), latent_channels=4,
                layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1))
TINY = {  # the classes' own layouts at small widths: (class, config)
    "wan2.1": (AutoencoderKLWan, dict(base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                                      latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.5, 2.0, 0.5, 1.0])),
    "wan2.2": (AutoencoderKLWan, dict(base_dim=8, decoder_base_dim=16, z_dim=4, dim_mult=[1, 2, 2, 2],
                                      num_res_blocks=1, is_residual=True, patch_size=2, in_channels=12,
                                      out_channels=12, latents_mean=[0.0] * 4, latents_std=[2.0] * 4)),
    "cogvideox": (AutoencoderKLCogVideoX, dict(block_out_channels=(8, 16, 16, 16), latent_channels=4,
                                               norm_num_groups=4, layers_per_block=1, scaling_factor=0.7)),
    "hunyuan": (AutoencoderKLHunyuanVideo, dict(block_out_channels=(8, 16, 16, 16), latent_channels=4,
                                                norm_num_groups=4, layers_per_block=1)),
    "ltx": (AutoencoderKLLTXVideo, LTX_TINY),
    "ltx-0.9.1": (AutoencoderKLLTXVideo, dict(LTX_TINY, timestep_conditioning=True,  # the later decoder layout
                                              decoder_inject_noise=(True,) * 5, upsample_residual=(True,) * 4)),
}
RATIOS = {"wan2.1": (4, 8), "wan2.2": (4, 16), "cogvideox": (4, 8), "hunyuan": (4, 8), "ltx": (8, 32),
          "ltx-0.9.1": (8, 32)}  # (temporal, spatial), as the released models have


def diffusers_vae(name: str, seed: int = 0):
    cls, config = TINY[name]
    torch.manual_seed(seed)
    return cls(**config).eval()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Each tiny model saved as a diffusers folder, as a user would have it."""
    root = tmp_path_factory.mktemp("diffusers_vaes")
    for name in TINY:
        vae = diffusers_vae(name)
        if name == "ltx":  # trained statistics in its buffers, as the released LTX-Video VAEs have them
            vae.latents_mean.copy_(torch.tensor([0.5, -0.5, 0.0, 1.0]))
            vae.latents_std.copy_(torch.tensor([2.0, 1.0, 0.5, 4.0]))
        vae.save_pretrained(root / name)
    return root


def video(model, latent_frames: int, size_in_latents: int = 2, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    size = size_in_latents * model.spatial_compression_ratio
    return torch.rand(1, 3, model.video_num_frames(latent_frames), size, size, generator=g, dtype=dtype) * 2 - 1


def own_decode(vae, z):
    if isinstance(vae, AutoencoderKLLTXVideo) and vae.config.timestep_conditioning:
        return vae.decode(z, temb=torch.zeros(z.shape[0], dtype=z.dtype)).sample  # its pipeline's decode_timestep
    return vae.decode(z).sample


@pytest.mark.parametrize("name", TINY)
def test_loads_and_codes_exactly_as_the_diffusers_model(name, folders):
    original = type(diffusers_vae(name)).from_pretrained(folders / name).eval()
    model = load_autoencoder(folders / name).eval()
    assert isinstance(model, DiffusersVideoVAE) and model.wrapped_class == type(original).__name__
    assert (model.temporal_compression_ratio, model.spatial_compression_ratio, model.latent_channels) == \
        (*RATIOS[name], 4)
    x = video(model, 3)
    with torch.no_grad():
        z = model.encode(x).latent_dist.mean
        assert z.shape == (1, 4, 3, 2, 2)
        assert torch.equal(z, original.encode(x).latent_dist.mean)
        assert torch.equal(model.encode(x).latent_dist.logvar, original.encode(x).latent_dist.logvar)
        # LTX-Video 0.9.1's decoder adds noise (of a learned scale) from the global generator, as diffusers' does.
        torch.manual_seed(1)
        pixels = model.decode(z).sample
        torch.manual_seed(1)
        # The same weights, copied into other memory: oneDNN may sum in another order (1.5e-6 seen for LTX 0.9.1).
        torch.testing.assert_close(pixels, own_decode(original, z), rtol=1e-5, atol=1e-5)


def test_latent_statistics_are_the_ones_each_pipeline_uses(folders):
    stats = {name: (load_autoencoder(folders / name).config.latents_mean,
                    load_autoencoder(folders / name).config.latents_std) for name in ("wan2.1", "cogvideox", "ltx")}
    assert stats["wan2.1"] == ([0.1, -0.2, 0.3, 0.0], [1.5, 2.0, 0.5, 1.0])  # Wan: its config's
    assert stats["cogvideox"] == (0.0, pytest.approx(1 / 0.7))  # z * scaling_factor
    assert stats["ltx"] == ([0.5, -0.5, 0.0, 1.0], [2.0, 1.0, 0.5, 4.0])  # (z - mean) * scaling_factor (1) / std
    model = load_autoencoder(folders / "ltx")
    z = torch.randn(1, 4, 2, 2, 2)
    expected = (z - torch.tensor([0.5, -0.5, 0.0, 1.0]).view(1, 4, 1, 1, 1)) / torch.tensor(
        [2.0, 1.0, 0.5, 4.0]).view(1, 4, 1, 1, 1)
    torch.testing.assert_close(model.normalize_latents(z), expected)


@pytest.mark.parametrize("name", ["wan2.1", "wan2.2"])
@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_wan_codes_chunk_by_chunk_exactly(name, chunk, folders):
    """Wan keeps a causal cache: any chunk size gives the whole video's latents and pixels (float64: exact)."""
    model = load_autoencoder(folders / name).eval().double()
    x = video(model, 5, dtype=torch.float64)
    with torch.no_grad():
        z = model.encode(x).latent_dist.mean
        assert (model.encode(x, chunk_size=chunk).latent_dist.mean - z).abs().max() <= 1e-12
        pieces = list(model.iter_decode(z, chunk_size=chunk))
        assert len(pieces) == -(-5 // chunk)  # streamed: one piece per chunk
        assert (torch.cat(pieces, dim=2) - model.decode(z).sample).abs().max() <= 1e-12


def test_cogvideox_codes_in_its_own_frame_batches(folders):
    """CogVideoX's group norms average over a batch's frames: the wrapper keeps diffusers' batches (2 latent
    frames, the remainder first) whatever chunk size is asked, so its output never depends on it."""
    model = load_autoencoder(folders / "cogvideox").eval()
    assert [model._chunks(n, 1) for n in (1, 3, 5, 7)] == [[(0, 1)], [(0, 3)], [(0, 3), (3, 5)], [(0, 3), (3, 5), (5, 7)]]
    with pytest.raises(ValueError, match="odd number of latent frames"):  # 8 video frames would come back
        model.decode(torch.zeros(1, 4, 2, 2, 2))
    with pytest.raises(ValueError, match=r"needs 1 \+ 8k frames .* use 9 or 17"):
        model.encode(torch.zeros(1, 3, 13, 16, 16))
    x = video(model, 5)
    with torch.no_grad():
        z = model.encode(x).latent_dist.mean
        assert torch.equal(model.encode(x, chunk_size=1).latent_dist.mean, z)
        pieces = list(model.iter_decode(z, chunk_size=1))
        assert [p.shape[2] for p in pieces] == [9, 8]
        assert torch.equal(torch.cat(pieces, dim=2), model.decode(z).sample)


@pytest.mark.parametrize("name", ["hunyuan", "ltx"])
def test_models_without_a_causal_cache_code_whole_videos(name, folders):
    model = load_autoencoder(folders / name).eval()
    x = video(model, 3)
    with torch.no_grad():
        z = model.encode(x, chunk_size=1).latent_dist.mean
        assert torch.equal(z, model.encode(x).latent_dist.mean)
        pieces = list(model.iter_decode(z, chunk_size=1))
    assert len(pieces) == 1 and pieces[0].shape[2] == x.shape[2]


def test_hunyuan_keeps_diffusers_frame_windows_for_long_videos(folders):
    """Beyond 16 frames diffusers codes HunyuanVideo in overlapping, blended windows by default: the wrapper gives
    what the diffusers model gives."""
    original = AutoencoderKLHunyuanVideo.from_pretrained(folders / "hunyuan").eval()
    model = load_autoencoder(folders / "hunyuan").eval()
    x = video(model, 6)  # 21 frames
    with torch.no_grad():
        z = model.encode(x).latent_dist.mean
        assert torch.equal(z, original.encode(x).latent_dist.mean)
        torch.testing.assert_close(model.decode(z).sample, original.decode(z).sample, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, frames, message", [
    ("wan2.1", 16, r"AutoencoderKLWan needs 1 \+ 4k frames .* use 13 or 17"),
    ("ltx", 16, r"AutoencoderKLLTXVideo needs 1 \+ 8k frames .* use 9 or 17"),
])
def test_frame_rule_errors_name_the_nearest_valid_counts(name, frames, message, folders):
    model = load_autoencoder(folders / name)
    with pytest.raises(ValueError, match=message):
        model.encode(torch.zeros(1, 3, frames, 64, 64))
    with pytest.raises(ValueError, match="divisible by"):
        model.encode(torch.zeros(1, 3, 9, 36, 36))


def test_a_pipeline_folder_loads_its_vae_and_a_saved_wrapper_reloads(folders, tmp_path):
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "vae").symlink_to(folders / "wan2.1")
    model = load_autoencoder(tmp_path / "pipeline").eval()
    assert weights_sha256(tmp_path / "pipeline") == weights_sha256(folders / "wan2.1")  # the cache's VAE identity
    model.save_pretrained(tmp_path / "wrapped")
    again = load_autoencoder(tmp_path / "wrapped").eval()
    assert isinstance(again, DiffusersVideoVAE) and again.config.vae_class == "AutoencoderKLWan"
    x = video(model, 2)
    with torch.no_grad():
        assert torch.equal(again(x, sample_posterior=False).sample, model(x, sample_posterior=False).sample)


def test_unknown_class_and_wrong_statistics_are_refused():
    with pytest.raises(ValueError, match="unknown diffusers video VAE 'AutoencoderKLMochi'"):
        DiffusersVideoVAE("AutoencoderKLMochi", {})
    config = {k: v for k, v in TINY["wan2.1"][1].items() if not k.startswith("latents_")}  # Wan 2.1's 16 stats
    with pytest.raises(ValueError, match="latents_mean has 16 values for 4 latent channels"):
        DiffusersVideoVAE.from_diffusers(AutoencoderKLWan(**config))


@pytest.mark.usefixtures("fresh_accelerate_state")
@pytest.mark.parametrize("name", ["wan2.1", "cogvideox", "hunyuan", "ltx"])
def test_cache_dit_and_pipeline_run_on_each(name, folders, tmp_path):
    t, s = RATIOS[name]
    frames = 1 + 2 * t if name == "cogvideox" else 1 + t
    data = ["data.num_samples=8", f"data.num_frames={frames}", f"data.resolution={2 * s}", "data.synthetic_classes=2"]
    cache_main([f"vae={folders / name}", f"output_dir={tmp_path / 'latents'}", *data])
    assert LatentDataset(tmp_path / "latents").manifest["latent_shape"] == [4, 1 + (frames - 1) // t, 2, 2]
    reset_accelerate_state()
    summary = train_dit.main([f"cache_dir={tmp_path / 'latents'}", f"output_dir={tmp_path / 'dit'}",
                              "model.preset=Latte-tiny", "batch_size=4", "report_to=none", "sample_every=0",
                              "sample_steps=2", "sample_classes=[1]", "max_steps=2"])
    assert summary["step"] == 2
    pipe = LatteVideoPipeline.from_pretrained(tmp_path / "dit" / "pipeline")
    assert isinstance(pipe.vae, DiffusersVideoVAE) and pipe.vae.wrapped_class == TINY[name][0].__name__
    pixels = pipe(class_labels=[1], num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                  output_type="np").frames
    assert pixels.shape == (1, frames, 2 * s, 2 * s, 3)
