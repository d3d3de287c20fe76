"""Hand-checked values for every LeanVAE loss, the per-frame PatchGAN, and LPIPS with stand-in weights."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from pipelines.common.config import load_config
from pipelines.common.errors import ConfigError
from vae.discriminator import NLayerDiscriminator, NLayerDiscriminator3D
from vae.lpips import LPIPS, LPIPS_LIN_URL, VGG16_FILENAME, VGG16_URL, LPIPSWeightsMissing
from vae.posterior import DiagonalGaussian
from vae.losses import (
    LeCAM,
    LossConfig,
    VAELoss,
    hinge_d_loss,
    hinge_g_loss,
    lpips_frame_indices,
    pixel_l1,
    subband_l1,
    wavelet_l1,
)

VGG_CONVS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
             (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
VGG_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # positions in torchvision's features
POOL_AFTER = {1, 3, 6, 9}  # conv numbers (0-based) followed by max-pooling
TAP_AFTER = {1, 3, 6, 9, 12}  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """These tensors are tiny: intra-op threading costs more than it saves (5-10x on a busy 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    """Random stand-ins with the real files' key names and shapes (fan-in scaled so features stay alive)."""
    gen = torch.Generator().manual_seed(0)
    vgg = {"classifier.0.weight": torch.zeros(2, 2)}  # the real file also has classifier keys; must be ignored
    for index, (cin, cout) in zip(VGG_CONV_INDICES, VGG_CONVS):
        vgg[f"features.{index}.weight"] = torch.randn(cout, cin, 3, 3, generator=gen) * math.sqrt(2 / (9 * cin))
        vgg[f"features.{index}.bias"] = torch.randn(cout, generator=gen) * 0.01
    lin = {
        f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=gen)  # LPIPS lin weights are non-negative
        for k, c in enumerate((64, 128, 256, 512, 512))
    }
    root = tmp_path_factory.mktemp("lpips")
    torch.save(vgg, root / "vgg16.pth")
    torch.save(lin, root / "vgg.pth")
    return root / "vgg16.pth", root / "vgg.pth"


@pytest.fixture(scope="module")
def lpips(lpips_files):
    return LPIPS(*lpips_files)


# --- pixel, wavelet, KL -------------------------------------------------------------------------------


def test_pixel_l1_known_values():
    x = torch.zeros(1, 3, 1, 2, 2)
    recon = torch.tensor([1.0, -2.0, 0.5, 0.5]).view(1, 1, 1, 2, 2).expand(1, 3, 1, 2, 2)
    assert pixel_l1(x, recon).item() == pytest.approx(1.0)  # (1 + 2 + 0.5 + 0.5) / 4


def test_wavelet_constant_video_has_only_low_band():
    x = torch.full((2, 3, 5, 4, 4), 0.5)
    loss, low, high = wavelet_l1(x, torch.zeros_like(x))
    # frame 0: LL = sum of 4 pixels = 2; frames 1..4: LLL = sum of 8 pixels = 4
    assert low.item() == pytest.approx(2.0 + 4.0)
    assert high.item() == pytest.approx(0.0, abs=1e-6)
    assert loss.item() == pytest.approx(0.2 * 6.0)


def test_wavelet_checkerboard_has_only_diagonal_high_band():
    h = torch.arange(4)
    board = ((-1.0) ** (h[:, None] + h[None, :])).expand(1, 3, 5, 4, 4)  # static spatial checkerboard
    loss, low, high = wavelet_l1(board, torch.zeros_like(board), low_weight=1.0, high_weight=10.0)
    # 2-D: only HH (|sum| = 4) of 3 high bands; 3-D: only band (t low, h high, w high) (|sum| = 8) of 7
    assert low.item() == pytest.approx(0.0, abs=1e-6)
    assert high.item() == pytest.approx(4 / 3 + 8 / 7)
    assert loss.item() == pytest.approx(10.0 * (4 / 3 + 8 / 7))


def test_wavelet_single_frame_uses_image_bands_only():
    x = torch.full((1, 3, 1, 4, 4), 1.0)
    _, low, high = wavelet_l1(x, torch.zeros_like(x))
    assert low.item() == pytest.approx(4.0)  # LL = sum of 4 pixels
    assert high.item() == 0.0


def unit_variance(mean: torch.Tensor) -> DiagonalGaussian:
    return DiagonalGaussian(torch.cat([mean, torch.zeros_like(mean)], dim=1))


def test_kl_standard_normal_is_zero_and_closed_form():
    kl = lambda mean, logvar: DiagonalGaussian(torch.cat([mean, logvar], dim=1)).kl()
    zeros = torch.zeros(2, 4, 3, 2, 2)
    assert kl(zeros, zeros).tolist() == [0.0, 0.0]
    mean = torch.stack([torch.zeros(4, 3, 2, 2), torch.ones(4, 3, 2, 2)])  # sample 0 is N(0, 1)
    logvar = torch.stack([torch.zeros(4, 3, 2, 2), torch.full((4, 3, 2, 2), math.log(2.0))])
    per_element = 0.5 * (1.0 + 2.0 - 1.0 - math.log(2.0))
    assert kl(mean, logvar).tolist() == pytest.approx([0.0, 48 * per_element], rel=1e-6)  # summed over 48 elements
    reference = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, (0.5 * logvar).exp()), torch.distributions.Normal(0.0, 1.0)
    ).flatten(1).sum(1)
    torch.testing.assert_close(kl(mean, logvar), reference)
    mean, logvar = mean.bfloat16(), logvar.bfloat16()  # summed in float32 whatever the latent's precision
    assert torch.equal(kl(mean, logvar), kl(mean.float(), logvar.float()))


# --- GAN losses -----------------------------------------------------------------------------------------


def test_hinge_losses_known_logits():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 1.0])
    # relu(1 - real) = [0, 0.5, 2] -> 5/6; relu(1 + fake) = [0, 1, 2] -> 1
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (5 / 6 + 1))
    assert hinge_g_loss(fake).item() == pytest.approx(1 / 3)


def test_lecam_ema_updates_and_penalty():
    lecam = LeCAM(decay=0.99)
    penalty = lecam(torch.full((4,), 2.0), torch.full((4,), -1.0))
    assert lecam.ema_real.item() == pytest.approx(0.02)
    assert lecam.ema_fake.item() == pytest.approx(-0.01)
    assert penalty.item() == pytest.approx(2.01**2 + 1.02**2)  # relu(2 + 0.01)^2 + relu(0.02 + 1)^2
    lecam.update(torch.tensor([1.0, 1.0]), torch.tensor([0.0, -2.0]))
    assert lecam.ema_real.item() == pytest.approx(0.99 * 0.02 + 0.01 * 1.0)
    assert lecam.ema_fake.item() == pytest.approx(0.99 * -0.01 + 0.01 * -1.0)
    restored = LeCAM(decay=0.99)
    restored.load_state_dict(lecam.state_dict())  # the EMAs travel with checkpoints
    assert set(lecam.state_dict()) == {"ema_real", "ema_fake"}
    assert restored.ema_real.item() == lecam.ema_real.item()


# --- discriminator --------------------------------------------------------------------------------------


def test_discriminator_default_size_and_per_frame_shape():
    torch.manual_seed(0)
    disc = NLayerDiscriminator()
    # conv 3->64 (+bias), 64->128, 128->256, 256->512 (no bias, GroupNorm affine), 512->1 (+bias); 4x4 kernels
    expected = (3 * 64 * 16 + 64) + (64 * 128 * 16 + 256) + (128 * 256 * 16 + 512) + (256 * 512 * 16 + 1024)
    expected += 512 * 16 + 1
    assert sum(p.numel() for p in disc.parameters()) == expected
    x = torch.randn(2, 3, 3, 32, 32)
    assert disc(x).shape == (2, 1, 3, 2, 2)  # 32 -> 16 -> 8 -> 4 -> 3 -> 2
    assert disc(x[:, :, 0]).shape == (2, 1, 2, 2)


def test_discriminator_frames_are_independent_and_gradients_flow():
    torch.manual_seed(0)
    disc = NLayerDiscriminator(base_channels=8, norm_groups=4)
    x = torch.randn(2, 3, 3, 32, 32, requires_grad=True)
    logits = disc(x)
    assert torch.allclose(logits[:, :, 1], disc(x[:, :, 1]), atol=1e-5)  # frame 1 scored alone
    assert torch.allclose(logits[1:], disc(x[1:]), atol=1e-5)  # no batch coupling
    logits.mean().backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in disc.parameters())


def test_discriminator_save_pretrained_round_trip(tmp_path):
    torch.manual_seed(0)
    disc = NLayerDiscriminator(base_channels=8, n_layers=2, norm_groups=4)
    disc.save_pretrained(tmp_path)
    loaded = NLayerDiscriminator.from_pretrained(tmp_path)
    assert loaded.config.n_layers == 2
    x = torch.randn(1, 3, 1, 16, 16)
    assert torch.equal(disc(x), loaded(x))


def test_discriminator_rejects_bad_groups():
    with pytest.raises(ValueError, match="norm_groups"):
        NLayerDiscriminator(base_channels=8, norm_groups=32)


# --- LPIPS ----------------------------------------------------------------------------------------------


def _reference_lpips(vgg_file, lin_file, a, b):
    """Independent LPIPS: explicit convs from the state dicts, taps after relu1_2 ... relu5_3."""
    vgg, lin = torch.load(vgg_file), torch.load(lin_file)
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    ha, hb = (a - shift) / scale, (b - shift) / scale
    total, tap = torch.zeros(a.shape[0]), 0
    for n, index in enumerate(VGG_CONV_INDICES):
        w, bias = vgg[f"features.{index}.weight"], vgg[f"features.{index}.bias"]
        ha, hb = F.relu(F.conv2d(ha, w, bias, padding=1)), F.relu(F.conv2d(hb, w, bias, padding=1))
        if n in TAP_AFTER:
            na = ha / (ha.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            nb = hb / (hb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total += F.conv2d((na - nb) ** 2, lin[f"lin{tap}.model.1.weight"]).mean(dim=(1, 2, 3))
            tap += 1
        if n in POOL_AFTER:
            ha, hb = F.max_pool2d(ha, 2), F.max_pool2d(hb, 2)
    return total


def test_lpips_matches_reference_and_is_a_distance(lpips, lpips_files):
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(2, 3, 16, 16, generator=gen) * 2 - 1  # 16 px: relu5_3 is 1x1, the smallest valid size
    b = torch.rand(2, 3, 16, 16, generator=gen) * 2 - 1
    d = lpips(a, b)
    assert d.shape == (2,)
    assert torch.allclose(d, _reference_lpips(*lpips_files, a, b), rtol=1e-4, atol=1e-6)
    assert (d > 0).all()
    assert torch.allclose(d, lpips(b, a))
    assert lpips(a, a).abs().max().item() == 0.0
    assert not lpips.training and not any(p.requires_grad for p in lpips.parameters())
    lpips.train()
    assert not lpips.training  # a frozen metric stays in eval mode


def test_lpips_gradient_reaches_input_only(lpips):
    a = torch.zeros(1, 3, 16, 16, requires_grad=True)
    lpips(a, torch.rand(1, 3, 16, 16) * 2 - 1).sum().backward()
    assert a.grad.abs().sum() > 0
    assert all(p.grad is None for p in lpips.parameters())


def test_lpips_missing_files_say_what_to_download(tmp_path, monkeypatch, lpips_files):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(LPIPSWeightsMissing) as err:
        LPIPS(lin_path=tmp_path / "nowhere" / "vgg.pth")
    message = str(err.value)
    assert VGG16_URL in message and LPIPS_LIN_URL in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / VGG16_FILENAME) in message  # torchvision's cache name
    assert str(tmp_path / "nowhere" / "vgg.pth") in message
    assert "lpips_weight=0" in message
    with pytest.raises(LPIPSWeightsMissing) as err:
        LPIPS(vgg_path=lpips_files[0], lin_path=tmp_path / "nowhere.pth")
    assert VGG16_URL not in str(err.value)  # only what is actually missing


def test_lpips_rejects_wrong_files(lpips_files):
    with pytest.raises(ValueError, match="LPIPS v0.1 linear layers"):
        LPIPS(lpips_files[0], lpips_files[0])
    with pytest.raises(ValueError, match="VGG16"):
        LPIPS(lpips_files[1], lpips_files[1])


# --- combined loss and config ---------------------------------------------------------------------------


def test_frame_indices_even_and_deterministic():
    assert lpips_frame_indices(17, 5) == [0, 4, 8, 12, 16]
    assert lpips_frame_indices(9, 5) == [0, 2, 4, 6, 8]
    assert lpips_frame_indices(10, 4) == [0, 3, 6, 9]
    assert lpips_frame_indices(3, 5) == [0, 1, 2]
    assert lpips_frame_indices(17, 1) == [0]
    with pytest.raises(ValueError):
        lpips_frame_indices(0, 5)


def _clip(seed, shape=(1, 3, 9, 16, 16)):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=gen) * 2 - 1


def test_combined_loss_without_gan_or_lpips():
    cfg = LossConfig(lpips_weight=0.0, kl_weight=0.5)
    loss_fn = VAELoss(cfg)
    assert loss_fn.lpips is None
    x, recon = _clip(0), _clip(1).requires_grad_()
    posterior = unit_variance(torch.ones(1, 4, 3, 2, 2))
    total, logs = loss_fn(x, recon, posterior, step=0)
    wavelet, low, high = wavelet_l1(x, recon)
    expected = 4.0 * pixel_l1(x, recon) + wavelet + 0.5 * 24.0  # KL: 48 elements of 0.5 * mu^2
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(logs) == {"pixel", "wavelet_low", "wavelet_high", "kl", "total"}
    assert logs["kl"].item() == pytest.approx(24.0)
    assert not any(v.requires_grad for v in logs.values())
    total.backward()
    assert recon.grad.abs().sum() > 0


def test_combined_loss_with_lpips_and_gan(lpips_files, lpips):
    cfg = LossConfig(
        lpips_frames=3, disc_start=10, lpips_vgg_path=str(lpips_files[0]), lpips_lin_path=str(lpips_files[1])
    )
    loss_fn = VAELoss(cfg)  # builds LPIPS from the configured files
    torch.manual_seed(0)
    disc = NLayerDiscriminator(base_channels=8, n_layers=2, norm_groups=4)  # 2 layers fit 16 px frames
    x, recon = _clip(0), _clip(1)
    posterior = unit_variance(torch.zeros(1, 4, 3, 2, 2))
    before, logs_before = loss_fn(x, recon, posterior, step=9)
    frames = [0, 4, 8]
    lp = lpips(x[:, :, frames].transpose(1, 2).flatten(0, 1), recon[:, :, frames].transpose(1, 2).flatten(0, 1)).mean()
    assert logs_before["lpips"].item() == pytest.approx(lp.item(), rel=1e-5)
    assert "gan" not in logs_before
    with pytest.raises(ValueError, match="discriminator"):
        loss_fn(x, recon, posterior, step=10)
    after, logs = loss_fn(x, recon, posterior, step=10, discriminator=disc)
    assert logs["gan"].item() == pytest.approx(-disc(recon).mean().item(), rel=1e-5)
    assert after.item() == pytest.approx(before.item() + 0.2 * logs["gan"].item(), rel=1e-6)


def test_frame_sum_reduction_sums_each_frame_and_averages_over_frames():
    x, recon = _clip(0, (2, 3, 5, 8, 8)), _clip(1, (2, 3, 5, 8, 8))
    posterior = unit_variance(torch.zeros(2, 4, 2, 1, 1))
    cfg = LossConfig(reduction="frame_sum", pixel_weight=1.0, wavelet_low_weight=0.0, wavelet_high_weight=0.0,
                     lpips_weight=0.0, kl_weight=0.0)
    total, _ = VAELoss(cfg)(x, recon, posterior, step=0)
    per_frame = (x - recon).abs().sum(dim=(1, 3, 4))  # (B, T): the official sum over C, H, W of each frame
    assert total.item() == pytest.approx(per_frame.mean().item(), rel=1e-5)


def test_subband_loss_is_the_official_sum_over_the_batch():
    g = torch.Generator().manual_seed(0)
    subbands = {name: torch.randn(shape, generator=g) for name, shape in
                [("enc_l1", (2, 12, 3, 4, 4)), ("dec_l1", (2, 12, 3, 4, 4)), ("enc_l2", (2, 24, 2, 2, 2)),
                 ("dec_l2", (2, 24, 2, 2, 2))]}
    expected = ((subbands["enc_l1"] - subbands["dec_l1"]).abs().sum()
                + (subbands["enc_l2"] - subbands["dec_l2"]).abs().sum()) / 2
    assert subband_l1(subbands).item() == pytest.approx(expected.item(), rel=1e-6)
    x, recon = _clip(0, (2, 3, 5, 8, 8)), _clip(1, (2, 3, 5, 8, 8))
    posterior = unit_variance(torch.zeros(2, 4, 2, 1, 1))
    loss_fn = VAELoss(LossConfig(lpips_weight=0.0, kl_weight=0.0, subband_weight=0.1))
    total, logs = loss_fn(x, recon, posterior, step=0, subbands=subbands)
    without, _ = VAELoss(LossConfig(lpips_weight=0.0, kl_weight=0.0))(x, recon, posterior, step=0)
    assert total.item() == pytest.approx(without.item() + 0.1 * expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="sub-bands"):
        loss_fn(x, recon, posterior, step=0)


def test_3d_discriminator_has_the_official_size_and_judges_each_clip_alone():
    torch.manual_seed(0)
    assert sum(p.numel() for p in NLayerDiscriminator3D(base_channels=64, n_layers=4).parameters()) == 11_744_641
    disc = NLayerDiscriminator3D(base_channels=8, n_layers=2, norm_groups=4, dropout=0.0).eval()
    clips = _clip(0, (2, 3, 9, 32, 32))
    logits = disc(clips)  # (2, 1, t, h, w): time and space halved twice (the last block keeps its size)
    assert logits.shape == (2, 1, 3, 8, 8)
    assert torch.allclose(disc(clips[:1]), logits[:1], atol=1e-5)  # per-clip norms: the batch plays no part
    with pytest.raises(ValueError, match="loss.disc_type"):
        LossConfig(disc_type="4d")


def test_adaptive_gan_weight_balances_gradients_at_the_last_layer():
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(3, 3))  # a decoder's last layer
    frames = torch.einsum("oc,bcthw->bothw", weight, _clip(2, (1, 3, 5, 8, 8)))
    recon = torch.tanh(frames)
    x = _clip(0, (1, 3, 5, 8, 8))
    disc = lambda v: v.sum(dim=1, keepdim=True) ** 2  # a stand-in discriminator with a non-trivial gradient
    posterior = unit_variance(torch.zeros(1, 4, 2, 1, 1))
    cfg = LossConfig(lpips_weight=0.0, kl_weight=0.0, disc_start=0, disc_weight=0.5, adaptive_disc_weight=True)
    total, logs = VAELoss(cfg)(x, recon, posterior, step=0, discriminator=disc, last_layer=weight)
    rec = 4.0 * pixel_l1(x, recon) + wavelet_l1(x, recon)[0]
    gan = hinge_g_loss(disc(recon))
    rec_grad, = torch.autograd.grad(rec, weight, retain_graph=True)
    gan_grad, = torch.autograd.grad(gan, weight, retain_graph=True)
    expected = 0.5 * rec_grad.norm() / (gan_grad.norm() + 1e-6)
    assert logs["gan_weight"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert total.item() == pytest.approx((rec + expected * gan).item(), rel=1e-5)
    total.backward(retain_graph=True)  # the weight is a constant of the graph: it passes no gradient itself
    assert weight.grad is not None and torch.isfinite(weight.grad).all()
    capped = LossConfig(lpips_weight=0.0, disc_start=0, disc_weight=0.5, adaptive_disc_weight=True,
                        adaptive_weight_max=1e-3)
    assert VAELoss(capped)(x, recon, posterior, 0, disc, weight)[1]["gan_weight"].item() == pytest.approx(0.5e-3)
    with pytest.raises(ValueError, match="last layer"):
        VAELoss(cfg)(x, recon, posterior, step=0, discriminator=disc)


def test_discriminator_loss_hinge_plus_lecam():
    loss_fn = VAELoss(LossConfig(lpips_weight=0.0))
    mean_colour = lambda v: v.mean(dim=1, keepdim=True)  # a stand-in discriminator with known logits
    x = torch.ones(2, 3, 5, 4, 4)
    recon = torch.full((2, 3, 5, 4, 4), -0.5, requires_grad=True)
    total, logs = loss_fn.discriminator_loss(x, recon, mean_colour)
    hinge = 0.5 * (0.0 + 0.5)  # relu(1 - 1), relu(1 - 0.5)
    lecam = (1.0 + 0.005) ** 2 + (0.01 + 0.5) ** 2  # EMAs after one update: real 0.01, fake -0.005
    assert logs["disc_hinge"].item() == pytest.approx(hinge)
    assert logs["lecam"].item() == pytest.approx(lecam)
    assert total.item() == pytest.approx(hinge + 0.005 * lecam)
    assert loss_fn.lecam.ema_fake.item() == pytest.approx(-0.005)
    assert not total.requires_grad  # the reconstruction is detached for the discriminator step


def test_loss_config_loads_as_nested_section(tmp_path):
    @dataclasses.dataclass
    class TrainConfig:
        max_steps: int = 1
        loss: LossConfig = dataclasses.field(default_factory=LossConfig)

    path = tmp_path / "vae.yaml"
    path.write_text("loss:\n  lpips_weight: 0\n  disc_start: 5\n")
    cfg = load_config(TrainConfig, path, ["loss.kl_weight=1.0e-6"])
    assert cfg.loss.lpips_weight == 0.0 and cfg.loss.disc_start == 5 and cfg.loss.kl_weight == 1e-6
    assert cfg.loss.pixel_weight == 4.0 and cfg.loss.lecam_weight == 0.005
    with pytest.raises(ConfigError, match="lpips_weight"):
        load_config(TrainConfig, None, ["loss.lpips_weigth=0"])
    with pytest.raises(ValueError, match="lpips_frames"):
        LossConfig(lpips_frames=0)
    with pytest.raises(ValueError, match="pixel_weight"):
        LossConfig(pixel_weight=-1.0)
