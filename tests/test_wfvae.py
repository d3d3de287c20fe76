"""WF-VAE: parameter parity with the official classes, the Haar transforms, causality, causal-cache chunked ==
whole-video inference for every length and chunk size, and the released weights giving the official outputs
(golden files made by tests/data/make_wfvae_golden.py from the official code)."""

import json
import math

import pytest
import torch
from conftest import untouched_by_training
from golden import golden as read_golden
from safetensors.torch import save_file

from vae import WFVAE, build_autoencoder, load_autoencoder
from vae.wfvae.wavelets import (
    HaarWaveletTransform2D,
    HaarWaveletTransform3D,
    InverseHaarWaveletTransform2D,
    InverseHaarWaveletTransform3D,
)

# Totals of the official classes, instantiated from the official code, including the 128 frozen Haar weights.
OFFICIAL_PARAMETERS = {"wfvae-s-4ch": 146_496_836, "wfvae-m-4ch": 223_252_516, "wfvae-l-4ch": 316_334_852,
                       "wfvae-l-16ch": 317_081_372, "wfvae-s-8ch": 147_347_788}


def tiny(dtype=torch.float64, **overrides) -> WFVAE:
    torch.manual_seed(0)
    model = build_autoencoder("wfvae-tiny", **overrides).eval()
    with torch.no_grad():  # every path live: built from scratch, residual branches and detail outputs start at zero
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p), alpha=0.05)
    return model.double() if dtype == torch.float64 else model


def video(frames: int, size: int = 16, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, 3, frames, size, size, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)


@pytest.mark.parametrize("preset", sorted(OFFICIAL_PARAMETERS))
def test_parameter_counts_equal_the_official_classes(preset):
    with torch.device("meta"):
        model = build_autoencoder(preset)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMETERS[preset]


# ---------------------------------------------------------------------------------------------- Haar
def test_haar_3d_round_trip_is_exact_and_the_official_constant_scales_it():
    x = video(9, 8)
    forward, inverse = HaarWaveletTransform3D().double(), InverseHaarWaveletTransform3D().double()
    coeffs = forward(x)  # (1, 24, 5, 4, 4)
    assert coeffs.shape == (1, 24, 5, 4, 4)
    assert (inverse(coeffs) - x).abs().max() <= 1e-7  # 1 / (2 sqrt 2) held in float32: exact to its rounding
    assert coeffs[:, 12:, 0].abs().max() <= 1e-12  # frame 0 is paired with itself: no temporal-high energy
    block = x[:, :, 1:3, :2, :2].sum(dim=(2, 3, 4)) / math.sqrt(8)  # the LLL band of frames 1-2, top-left block
    assert torch.allclose(coeffs[:, :3, 1, 0, 0], block)  # band-major: [:, :3] is LLL of R, G, B
    official = HaarWaveletTransform3D(0.3536).double(), InverseHaarWaveletTransform3D(0.3536).double()
    assert (official[1](official[0](x)) - x * 1.000263654).abs().max() <= 1e-7  # (0.3536 * 2 sqrt 2)^2


def test_haar_2d_round_trip_is_exact():
    x = video(3, 8)
    coeffs = HaarWaveletTransform2D().double()(x)  # (1, 12, 3, 4, 4)
    assert coeffs.shape == (1, 12, 3, 4, 4)
    assert (InverseHaarWaveletTransform2D().double()(coeffs) - x).abs().max() <= 1e-12
    assert torch.allclose(coeffs[:, :3, :, 0, 0], x[:, :, :, :2, :2].sum(dim=(3, 4)) / 2)


# ---------------------------------------------------------------------------------------------- causality
def test_encoder_is_causal_and_the_decoder_looks_one_latent_frame_ahead():
    model = tiny()
    x = video(17)
    y = x.clone()
    y[:, :, 13] += 1.0  # pixel frame 13 lies in latent frame 4
    with torch.no_grad():
        zx, zy = model.encode(x).latent_dist.mean, model.encode(y).latent_dist.mean
        changed = (zx - zy).abs().amax(dim=(0, 1, 3, 4)) > 0
        assert changed.tolist() == [False] * 4 + [True]
        z = zx.clone()
        z[:, :, 3] += 1.0  # latent frame 3: trilinear upsampling reaches back to output frame 4 * 3 - 5 = 7
        out_changed = ((model.decode(zx).sample - model.decode(z).sample).abs().amax(dim=(0, 1, 3, 4)) > 0).tolist()
    assert out_changed.index(True) == 7 and all(out_changed[7:])


# ---------------------------------------------------------------------------------------------- chunked == full
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
                assert torch.equal(torch.cat(list(model.iter_decode(z, chunk)), dim=2),
                                   model.decode(z, chunk_size=chunk).sample)


def test_a_second_call_with_another_length_and_nearest_upsampling():
    model = tiny(t_interpolation="nearest")
    with torch.no_grad():
        for frames in (17, 9, 21):
            x = video(frames, seed=frames)
            z = model.encode(x, chunk_size=2).latent_dist.mean
            assert (z - model.encode(x).latent_dist.mean).abs().max() <= 1e-12
            assert (model.decode(z, chunk_size=3).sample - model.decode(z).sample).abs().max() <= 1e-12


def test_bad_frame_counts_and_groupnorm_chunking_are_refused():
    with pytest.raises(ValueError, match=r"1 \+ 4k frames .* use 13 or 17"):
        tiny().encode(video(16))
    torch.manual_seed(0)
    grouped = WFVAE(latent_dim=4, base_channels=32, encoder_num_resblocks=1, decoder_num_resblocks=1,
                    encoder_energy_flow_hidden_size=32, decoder_energy_flow_hidden_size=32, norm_type="groupnorm")
    with torch.no_grad():
        assert grouped.encode(video(5, dtype=torch.float32)).latent_dist.mean.shape == (1, 4, 2, 2, 2)
        with pytest.raises(ValueError, match="groupnorm"):
            grouped.encode(video(5, dtype=torch.float32), chunk_size=1)
    with pytest.raises(ValueError, match="AttnBlock3DFix"):
        WFVAE(attention_type="AttnBlock3D")


def test_training_reaches_every_trainable_parameter():
    model = tiny(torch.float32).train()
    x = video(9, dtype=torch.float32)

    def loss_of(m):
        out = m(x, generator=torch.Generator().manual_seed(0))
        return (out.sample - x).abs().mean() + sum(v.abs().mean() for v in out.subbands.values())

    untouched = untouched_by_training(model, loss_of)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert not untouched, untouched
    assert len(frozen) == 16 and all("wavelet_transform" in n for n in frozen)  # the 2 x 8 Haar filters


def test_tiny_wfvae_overfits_a_real_clip(overfit_real_clip):
    start, end = overfit_real_clip(tiny(torch.float32))
    assert end > start + 8, (start, end)


# ---------------------------------------------------------------------------------------------- released weights
def golden(name: str):
    return read_golden(f"wfvae_golden_{name}")


def released_folder(tmp_path, name: str):
    config, state, tensors = golden(name)
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file(state, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    return tensors


@pytest.mark.parametrize("name", ["tiny", "osp"])
def test_released_folder_gives_the_official_outputs(name, tmp_path, test_data_dir):
    expected = released_folder(tmp_path, name)
    model = load_autoencoder(tmp_path)
    assert isinstance(model, WFVAE) and model.config.haar_constant == 0.3536
    x = expected["input"]
    with torch.no_grad():
        posterior = model.encode(x).latent_dist
        assert (posterior.mean - expected["mean"]).abs().max() <= 1e-5
        assert (posterior.logvar - expected["logvar"]).abs().max() <= 1e-5
        assert (model.decode(expected["mean"]).sample - expected["recon"]).abs().max() <= 1e-5
        subbands = model(x, sample_posterior=False).subbands
        for key in ("enc_l1", "dec_l1", "enc_l2", "dec_l2"):
            assert (subbands[key] - expected[key]).abs().max() <= 1e-5, key
        model64 = model.double()
        assert (model64.encode(x.double()).latent_dist.mean - expected["mean_f64"]).abs().max() <= 1e-12
        assert (model64.decode(expected["mean_f64"]).sample - expected["recon_f64"]).abs().max() <= 1e-12
        assert (model64.decode(expected["mean_f64"], chunk_size=1).sample - expected["recon_f64"]).abs().max() <= 1e-12


def test_released_checkpoints_load_their_ema_weights(tmp_path):
    expected = released_folder(tmp_path, "osp")
    config, state, _ = golden("osp")
    (tmp_path / "diffusion_pytorch_model.safetensors").unlink()
    noise = {key: torch.randn_like(value) for key, value in state.items()}
    torch.save({"ema_state_dict": {f"module.{k}": v for k, v in state.items()}, "state_dict": {"gen_model": noise}},
               tmp_path / "merged.ckpt")
    for path in (tmp_path, tmp_path / "merged.ckpt"):
        model = load_autoencoder(path)  # the EMA weights, not the live ones
        with torch.no_grad():
            assert (model.decode(expected["mean"]).sample - expected["recon"]).abs().max() <= 1e-5
    # Open-Sora-Plan's per-channel shift / scale become the latent normalisation.
    assert model.config.latents_mean == config["shift"]
    assert model.config.latents_std == pytest.approx([1 / s for s in config["scale"]])
    torch.save({"state_dict": {"gen_model": state}}, tmp_path / "merged.ckpt")
    with torch.no_grad():
        recon = WFVAE.from_official_checkpoint(tmp_path / "merged.ckpt").decode(expected["mean"]).sample
    assert (recon - expected["recon"]).abs().max() <= 1e-5
    torch.save({"state_dict": {"gen_model": {k: v for k, v in state.items() if "conv_out" not in k}}},
               tmp_path / "merged.ckpt")
    with pytest.raises(ValueError, match="missing .*conv_out"):
        WFVAE.from_official_checkpoint(tmp_path / "merged.ckpt")
