"""Latte DiT: shapes, adaLN-Zero start, spatial/temporal locality, gradients, save/load, overfitting, size."""

import pytest
import torch

from dit import DIT_PRESETS, LatteDiT, diffusion_loss, training_scheduler
from dit.layers import LatteBlock, attention

C, F, S = 4, 3, 8  # latent channels, frames, spatial size of the tiny test clips


def tiny(num_classes: int = 5, **overrides) -> LatteDiT:
    torch.manual_seed(0)
    kwargs = dict(DIT_PRESETS["Latte-tiny"], in_channels=C, num_frames=F, sample_size=S, num_classes=num_classes)
    return LatteDiT(**{**kwargs, **overrides})


def randomize(module: torch.nn.Module, std: float = 0.2) -> None:
    """Move away from the adaLN-Zero start so every path contributes."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)


def clip(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, C, F, S, S, generator=torch.Generator().manual_seed(2))


def test_presets_table():
    assert DIT_PRESETS["Latte-S/2"] == dict(depth=12, hidden_size=384, num_heads=6, patch_size=2)
    assert DIT_PRESETS["Latte-B/4"] == dict(depth=12, hidden_size=768, num_heads=12, patch_size=4)
    assert DIT_PRESETS["Latte-L/8"] == dict(depth=24, hidden_size=1024, num_heads=16, patch_size=8)
    assert DIT_PRESETS["Latte-XL/2"] == dict(depth=28, hidden_size=1152, num_heads=16, patch_size=2)
    assert {f"Latte-{s}/{p}" for s in "S B L XL".split() for p in (2, 4, 8)} <= set(DIT_PRESETS)


def test_latte_xl2_parameter_count():
    with torch.device("meta"):  # no allocation: counting 674 M parameters takes milliseconds
        model = LatteDiT(**DIT_PRESETS["Latte-XL/2"], in_channels=4, num_frames=5, sample_size=32, num_classes=101)
    count = sum(p.numel() for p in model.parameters())
    D, blocks = 1152, 28
    per_block = 18 * D * D + 15 * D  # qkv + proj + 4x MLP + 6-vector adaLN, with biases
    embed = (4 * 2 * 2 + 1) * D + (256 * D + D) + (D * D + D) + 102 * D  # patches, timestep MLP, 101 classes + null
    final = (D * 2 * D + 2 * D) + (D * 2 * 2 * 8 + 2 * 2 * 8)
    assert count == blocks * per_block + embed + final == 673_799_072
    assert abs(count - 674e6) / 674e6 < 0.01


@pytest.mark.parametrize("preset", ["Latte-tiny", "Latte-T/2", "Latte-S/8"])
@pytest.mark.parametrize("num_classes", [0, 7])
def test_output_shapes(preset, num_classes):
    torch.manual_seed(0)
    model = LatteDiT(**DIT_PRESETS[preset], in_channels=C, num_frames=F, sample_size=S, num_classes=num_classes)
    labels = torch.tensor([0, num_classes]) if num_classes else None
    out = model(clip(), torch.tensor([0, 999]), labels).sample
    assert out.shape == (2, 2 * C, F, S, S)


def test_without_learned_sigma_outputs_c_channels():
    assert tiny(learn_sigma=False)(clip(), 10).sample.shape == (2, C, F, S, S)


def test_adaln_zero_start():
    model = tiny()
    x, labels = clip(), torch.tensor([1, 4])
    assert torch.equal(model(x, torch.tensor([3, 700]), labels).sample, torch.zeros(2, 2 * C, F, S, S))
    c = torch.randn(2, model.config.hidden_size)
    h = torch.randn(2, F, (S // 2) ** 2, model.config.hidden_size)
    for block in model.blocks:  # every block starts as the identity
        assert torch.equal(block(h, c), h)


def test_null_class_and_unconditional_labels():
    model = tiny(num_classes=5)
    randomize(model)
    model.eval()
    x = clip()
    mixed = model(x, 50, torch.tensor([2, 5])).sample  # second sample asks for the null class
    null = model(x, 50).sample
    assert torch.equal(mixed[1], null[1])
    assert not torch.allclose(mixed[0], null[0])


@pytest.mark.parametrize("std", [0.02, 1.0])
def test_class_table_starts_at_the_configured_spread(std):
    table = tiny(num_classes=50, hidden_size=64, class_embed_std=std).y_embedder.embedding_table.weight  # (51, 64)
    assert abs(table.std().item() / std - 1) < 0.05
    assert LatteDiT.from_config(tiny(class_embed_std=std).config).config.class_embed_std == std


def test_label_dropout_only_in_training():
    model = tiny(num_classes=5, class_dropout_prob=0.5)
    labels = torch.arange(5).repeat(20)  # (100,)
    table = model.y_embedder.embedding_table.weight
    model.train()
    torch.manual_seed(3)
    emb = model.y_embedder(labels)
    dropped = (emb == table[5]).all(dim=1)
    assert 25 < int(dropped.sum()) < 75
    assert torch.equal(emb[~dropped], table[labels[~dropped]])
    model.eval()
    assert torch.equal(model.y_embedder(labels), table[labels])


def test_force_drop_ids_pick_the_dropped_labels_without_the_global_rng():
    model = tiny(num_classes=5, class_dropout_prob=0.5)
    randomize(model)
    x, t = torch.randn(4, C, F, S, S), torch.tensor([10, 200, 500, 900])
    labels, drop = torch.tensor([0, 1, 2, 3]), torch.tensor([1, 0, 0, 1])
    model.train()
    state = torch.get_rng_state()
    forced = model(x, t, class_labels=labels, force_drop_ids=drop).sample
    assert torch.equal(torch.get_rng_state(), state)  # nothing drawn from the global RNG
    model.eval()
    expected = model(x, t, class_labels=torch.tensor([5, 1, 2, 5])).sample  # the null class where dropped
    assert torch.equal(forced, expected)
    assert torch.equal(model(x, t, class_labels=labels, force_drop_ids=torch.zeros(4, dtype=torch.long)).sample,
                       model(x, t, class_labels=labels).sample)


def test_timestep_scalar_equals_per_sample_tensor():
    model = tiny()
    randomize(model)
    x = clip()
    assert torch.equal(model(x, 17).sample, model(x, torch.tensor([17, 17])).sample)


def _block_and_input(temporal: bool):
    torch.manual_seed(0)
    block = LatteBlock(hidden_size=32, num_heads=2, mlp_ratio=4.0, temporal=temporal)
    randomize(block)
    x = torch.randn(2, 4, 6, 32)  # (B, F, N, D)
    c = torch.randn(2, 32)
    return block, x, c


def test_spatial_block_never_mixes_frames():
    block, x, c = _block_and_input(temporal=False)
    y = block(x, c)
    x2 = x.clone()
    x2[1, 2, 3] += torch.randn(32)  # one token of frame 2 of sample 1 (not a constant: LayerNorm removes it)
    changed = (block(x2, c) != y).any(dim=-1)  # (B, F, N)
    assert changed[1, 2].all()  # the whole frame sees it
    changed[1, 2] = False
    assert not changed.any()  # no other frame, no other sample


def test_temporal_block_never_mixes_positions():
    block, x, c = _block_and_input(temporal=True)
    y = block(x, c)
    x2 = x.clone()
    x2[1, 2, 3] += torch.randn(32)  # position 3 of frame 2 of sample 1
    changed = (block(x2, c) != y).any(dim=-1)  # (B, F, N)
    assert changed[1, :, 3].all()  # every frame at that position sees it
    changed[1, :, 3] = False
    assert not changed.any()  # no other position, no other sample


def test_blocks_alternate_spatial_temporal():
    model = LatteDiT(**DIT_PRESETS["Latte-T/2"], in_channels=C, num_frames=F, sample_size=S)
    assert [b.temporal for b in model.blocks] == [False, True] * 3


def _train_step(model, opt, x0, labels, generator):
    scheduler = training_scheduler()
    noise = torch.randn(x0.shape, generator=generator)
    t = torch.randint(0, 1000, (x0.shape[0],), generator=generator)
    out = model(scheduler.add_noise(x0, noise, t), t, labels).sample
    loss = diffusion_loss(out, x0, noise, t, scheduler)["loss"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    return loss


def test_gradients_reach_every_parameter_from_a_nonzero_state():
    model = tiny()
    randomize(model, std=0.05)  # away from adaLN-Zero, where most gradients are still exactly zero
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _train_step(model, opt, clip(), torch.tensor([1, 3]), torch.Generator().manual_seed(4))
    dead = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []


def test_gradient_checkpointing_matches_plain_backward():
    model = tiny()
    randomize(model)
    model.eval()  # no label dropout: both passes must see the same labels
    x = clip()
    grads = []
    for checkpointing in (False, True):
        if checkpointing:
            model.enable_gradient_checkpointing()
        model.zero_grad()
        model(x, 30, torch.tensor([0, 1])).sample.square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for plain, ckpt in zip(*grads):
        torch.testing.assert_close(plain, ckpt, rtol=1e-5, atol=1e-7)


def test_save_load_round_trip(tmp_path):
    model = tiny(num_classes=5)
    randomize(model)
    model.save_pretrained(tmp_path / "dit")
    loaded = LatteDiT.from_pretrained(tmp_path / "dit")
    assert {k: loaded.config[k] for k in model.config if not k.startswith("_")} == {
        k: v for k, v in model.config.items() if not k.startswith("_")
    }
    model.eval(), loaded.eval()
    x, labels = clip(), torch.tensor([0, 5])
    assert torch.equal(loaded(x, 123, labels).sample, model(x, 123, labels).sample)


def test_bf16_autocast_forward():
    model = tiny()
    randomize(model, std=0.05)
    x = clip()
    ref = model(x, 40).sample
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, 40).sample
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()


def test_tiny_dit_overfits_one_clip():
    model = tiny(num_classes=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    scheduler = training_scheduler()
    x0 = clip(batch=1).expand(8, -1, -1, -1, -1)
    g = torch.Generator().manual_seed(5)
    eval_noise = torch.randn(x0.shape, generator=g)
    # Near t = 0 the noise is a 1e-2-scaled residue of x_t, unrecoverable without a pixel-exact memory of x0.
    eval_t = torch.linspace(100, 999, 8).long()

    def eval_mse() -> torch.Tensor:
        with torch.no_grad():
            out = model(scheduler.add_noise(x0, eval_noise, eval_t), eval_t).sample
            return diffusion_loss(out, x0, eval_noise, eval_t, scheduler)["mse"]  # (8,)

    before = eval_mse()
    for _ in range(150):
        _train_step(model, opt, x0, None, g)
        opt.step()
    after = eval_mse()
    assert before.mean().item() == pytest.approx(1.0, abs=0.1)  # zero output at the start: MSE = E[noise^2]
    assert after.mean() < 0.3 * before.mean()
    assert (after[4:] < 0.05).all()  # t >= 600: the clip is memorised


@pytest.mark.parametrize(
    "shape, match",
    [
        ((2, C, F, S), "expected latents of shape"),
        ((2, C + 1, F, S, S), "expected latents of shape"),
        ((2, C, F + 1, S, S), "expected latents of shape"),
        ((2, C, F, S, S + 2), "expected latents of shape"),
    ],
)
def test_bad_input_shapes_raise(shape, match):
    with pytest.raises(ValueError, match=match):
        tiny()(torch.randn(shape), 1)


def test_bad_timesteps_and_labels_raise():
    model, x = tiny(num_classes=5), clip()
    with pytest.raises(ValueError, match="timestep must be a scalar or of shape"):
        model(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"class_labels must lie in \[0, 5\]"):
        model(x, 1, torch.tensor([0, 6]))
    with pytest.raises(ValueError, match="integer tensor of shape"):
        model(x, 1, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="integer tensor of shape"):
        model(x, 1, torch.tensor([0]))
    with pytest.raises(ValueError, match="unconditional"):
        tiny(num_classes=0)(x, 1, torch.tensor([0, 1]))


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(depth=3), "must be even"),
        (dict(sample_size=9), "multiple of patch_size"),
        (dict(hidden_size=30), "multiple of 4 and of num_heads"),
        (dict(num_classes=-1), "num_classes must be >= 0"),
        (dict(class_dropout_prob=1.0), r"class_dropout_prob must lie in \[0, 1\)"),
        (dict(class_embed_std=0.0), "class_embed_std must be > 0"),
    ],
)
def test_bad_config_raises(overrides, match):
    with pytest.raises(ValueError, match=match):
        tiny(**overrides)


def test_short_attention_runs_in_float32_on_a_cpu_under_bfloat16_autocast():
    """The CPU's fused bfloat16 attention backward is up to 8x slower than float32's at the DiT's short lengths."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(4, 3, 16, 8).bfloat16().requires_grad_() for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(q, k, v)
    expected = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
    assert out.dtype == torch.bfloat16 and torch.equal(out, expected.bfloat16())
    out.float().sum().backward()
    assert q.grad.dtype == torch.bfloat16 and q.grad.abs().sum() > 0


def test_long_attention_stays_in_bfloat16_on_a_cpu():
    """From length x head_dim^2 = 2^20 on (here 256 tokens at d 64) bfloat16's fused kernel is the faster one."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 1, 256, 64).bfloat16() for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(q, k, v)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    assert torch.equal(out, sdpa(q, k, v))
    assert not torch.equal(out, sdpa(q.float(), k.float(), v.float()).bfloat16())  # the two paths tell apart
