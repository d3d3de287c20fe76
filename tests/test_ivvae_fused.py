"""IV-VAE's hand-written autograd nodes (vae/ivvae/fused.py) against the plain expressions they replace: the same
values, the same gradients (float64 gradcheck), in half precision close to float32, and chunk by chunk with the
carried previous tap equal to the whole clip."""

import pytest
import torch
import torch.nn.functional as F

from vae.ivvae.fused import GroupCausalTaps, RMSNormSiLU


def plain_norm_silu(x: torch.Tensor, gain: torch.Tensor, halves: int) -> torch.Tensor:
    parts = x.unflatten(-1, (halves, -1))
    rms = parts.pow(2).mean(-1, keepdim=True).sqrt()
    return F.silu((parts / rms).flatten(-2) * gain)


def plain_taps(y: torch.Tensor, carried, c2: int, group: int) -> torch.Tensor:
    """Frame by frame: now[t] + before[t - 1] + after[t + 1], no next-frame term at a group's last frame."""
    before, now, after = y[:, c2:].chunk(3, dim=1)
    first, frames = carried is None, y.shape[2]
    out = []
    for t in range(frames):
        previous = before[:, :, t - 1] if t else (before[:, :, 0] if first else carried[:, :, 0])
        last_of_group = (t == 0 and first) or (t + 1 - int(first)) % group == 0
        following = 0 if last_of_group else after[:, :, t + 1]
        out.append(now[:, :, t] + previous + following)
    return torch.cat([y[:, :c2], torch.stack(out, dim=2)], dim=1)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last_3d)


@pytest.mark.parametrize("halves", [1, 2])
def test_rms_norm_silu_equals_the_plain_expression_and_its_gradients(halves):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, halves * 5, generator=g, dtype=torch.float64, requires_grad=True)
    gain = (torch.rand(halves * 5, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    assert torch.allclose(RMSNormSiLU.apply(x, gain, halves), plain_norm_silu(x, gain, halves), atol=1e-12)
    assert torch.autograd.gradcheck(lambda x, gain: RMSNormSiLU.apply(x, gain, halves), (x, gain))


def test_rms_norm_silu_in_bfloat16_stays_close_to_float32():
    g = torch.Generator().manual_seed(1)
    x, gain, grad = torch.randn(64, 16, generator=g), torch.rand(16, generator=g) + 0.5, torch.randn(64, 16, generator=g)
    grads = []
    for dtype in (torch.float32, torch.bfloat16):
        xd = x.clone().to(dtype).requires_grad_()
        out = RMSNormSiLU.apply(xd, gain, 2)
        assert out.dtype == dtype
        out.backward(grad.to(dtype))
        grads.append((out.float(), xd.grad.float()))
    (out32, grad32), (out16, grad16) = grads
    assert (out16 - out32).abs().max() < 0.05 and (grad16 - grad32).abs().max() < 0.05 * grad32.abs().max()


@pytest.mark.parametrize("group,frames", [(4, 9), (2, 5), (4, 1)])
def test_group_causal_taps_equal_the_frame_by_frame_sum_and_its_gradients(group, frames):
    g = torch.Generator().manual_seed(group + frames)
    y = channels_last(torch.randn(2, 2 + 3 * 3, frames, 3, 4, generator=g, dtype=torch.float64)).requires_grad_()
    out = GroupCausalTaps.apply(y, None, 2, group)
    assert out.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.allclose(out, plain_taps(y, None, 2, group), atol=1e-12)
    assert torch.autograd.gradcheck(lambda y: GroupCausalTaps.apply(y, None, 2, group), (y,))


def test_group_causal_taps_chunk_by_chunk_with_the_carried_tap_equal_the_whole_clip():
    g = torch.Generator().manual_seed(3)
    y = channels_last(torch.randn(1, 2 + 3 * 3, 9, 3, 4, generator=g, dtype=torch.float64))
    whole = GroupCausalTaps.apply(y, None, 2, 4)
    head = GroupCausalTaps.apply(y[:, :, :5], None, 2, 4)
    carried = y[:, 2:5, 4:5].clone().requires_grad_()  # the previous tap on the first chunk's last frame
    rest = channels_last(y[:, :, 5:]).requires_grad_()
    tail = GroupCausalTaps.apply(rest, carried, 2, 4)
    assert torch.equal(torch.cat([head, tail], dim=2), whole)
    assert torch.allclose(tail, plain_taps(rest, carried, 2, 4), atol=1e-12)
    assert torch.autograd.gradcheck(lambda rest, carried: GroupCausalTaps.apply(rest, carried, 2, 4), (rest, carried))


def test_group_causal_taps_refuse_a_partial_group():
    with pytest.raises(ValueError, match="whole groups of 4"):
        GroupCausalTaps.apply(channels_last(torch.zeros(1, 5, 7, 2, 2)), None, 2, 4)
