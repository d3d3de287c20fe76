"""Latte+IMG joint video-image training in the DiT: images ride along in the spatial blocks only, each with its
own label, and never mix with the video or with each other; no images is exactly the video-only model."""

import pytest
import torch

from dit import LatteDiT, diffusion_loss, training_scheduler

from test_dit import C, F, S, randomize, tiny

I = 3  # images per sample


def joint_input(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, C, F + I, S, S, generator=torch.Generator().manual_seed(4))  # video, then images


def trained_like(num_classes: int = 5) -> LatteDiT:
    model = tiny(num_classes=num_classes)
    randomize(model)
    return model.eval()


def run(model, x, **kwargs):
    labels = torch.tensor([1, 3]) if model.y_embedder is not None else None
    images = torch.tensor([[0, 2, 4], [4, 4, 1]]) if model.y_embedder is not None else None
    return model(x, torch.tensor([30, 600]), labels, num_images=I, image_labels=images, **kwargs).sample


@pytest.mark.parametrize("num_classes", [5, 0])
def test_an_image_changes_only_its_own_output(num_classes):
    model, x = trained_like(num_classes), joint_input()
    out = run(model, x)
    for frame in (F, F + 1, F + I - 1):  # each image
        moved = x.clone()
        moved[:, :, frame] += torch.randn_like(moved[:, :, frame])
        changed = run(model, moved)
        others = [f for f in range(F + I) if f != frame]
        assert torch.equal(changed[:, :, others], out[:, :, others])
        assert not torch.allclose(changed[:, :, frame], out[:, :, frame])


def test_a_video_frame_changes_the_video_and_no_image():
    model, x = trained_like(), joint_input()
    out = run(model, x)
    moved = x.clone()
    moved[:, :, 0] += 1.0
    changed = run(model, moved)
    assert torch.equal(changed[:, :, F:], out[:, :, F:])
    assert not torch.allclose(changed[:, :, 1:F], out[:, :, 1:F])  # through the temporal blocks


def test_each_image_is_conditioned_on_its_own_label():
    model, x = trained_like(), joint_input()
    t, labels = torch.tensor([30, 600]), torch.tensor([1, 3])
    images = torch.tensor([[0, 2, 4], [4, 4, 1]])
    out = model(x, t, labels, num_images=I, image_labels=images).sample
    relabelled = images.clone()
    relabelled[0, 1] = 3
    changed = model(x, t, labels, num_images=I, image_labels=relabelled).sample
    assert torch.equal(changed[1], out[1]) and torch.equal(changed[0, :, : F + 1], out[0, :, : F + 1])
    assert torch.equal(changed[0, :, F + 2 :], out[0, :, F + 2 :])
    assert not torch.allclose(changed[0, :, F + 1], out[0, :, F + 1])


def test_the_video_part_equals_the_video_only_model():
    model, x = trained_like(), joint_input()
    joint = run(model, x)
    alone = model(x[:, :, :F], torch.tensor([30, 600]), torch.tensor([1, 3])).sample
    torch.testing.assert_close(joint[:, :, :F], alone, rtol=1e-5, atol=1e-5)  # matmul blocking by batch size


def test_an_image_is_denoised_as_a_one_frame_spatial_model_would():
    """An image's output depends only on that frame, its label and the timestep: the same image in another
    sample, beside another video, at another slot, gives the same output."""
    model, x = trained_like(), joint_input()
    t = torch.tensor([30, 30])
    labels, images = torch.tensor([1, 3]), torch.tensor([[0, 2, 4], [4, 4, 1]])
    out = model(x, t, labels, num_images=I, image_labels=images).sample
    swapped = x.clone()
    swapped[1, :, F + 2] = x[0, :, F]  # sample 0's first image into sample 1's last slot, with its label
    images2 = images.clone()
    images2[1, 2] = images[0, 0]
    out2 = model(swapped, t, labels, num_images=I, image_labels=images2).sample
    torch.testing.assert_close(out2[1, :, F + 2], out[0, :, F], rtol=0, atol=1e-5)


def test_image_labels_drop_as_video_labels_do():
    model, x = trained_like(), joint_input()
    model.train()
    t, labels = torch.tensor([30, 600]), torch.tensor([1, 3])
    images = torch.tensor([[0, 2, 4], [4, 4, 1]])
    drop = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1]])  # (B, 1 + I): the video's, then each image's
    state = torch.get_rng_state()
    forced = model(x, t, labels, force_drop_ids=drop, num_images=I, image_labels=images).sample
    assert torch.equal(torch.get_rng_state(), state)
    model.eval()
    null = model.config.num_classes
    expected = model(x, t, torch.tensor([null, 3]), num_images=I,
                     image_labels=torch.tensor([[0, null, 4], [4, 4, null]])).sample
    assert torch.equal(forced, expected)


def test_joint_loss_covers_every_frame_and_trains_every_parameter():
    model = tiny()
    randomize(model, std=0.05)
    x0 = joint_input()
    noise, t = torch.randn_like(x0), torch.tensor([100, 700])
    scheduler = training_scheduler()
    out = model(scheduler.add_noise(x0, noise, t), t, torch.tensor([1, 3]), num_images=I,
                image_labels=torch.tensor([[0, 2, 4], [4, 4, 1]])).sample
    out.retain_grad()
    diffusion_loss(out, x0, noise, t, scheduler)["loss"].backward()
    assert all(out.grad[:, :, f].abs().sum() > 0 for f in range(F + I))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_bad_joint_inputs_raise():
    model, x = trained_like(), joint_input()
    with pytest.raises(ValueError, match=r"num_frames \+ num_images"):
        model(x, 1, torch.tensor([1, 3]), num_images=1)  # images miscounted
    with pytest.raises(ValueError, match=r"integer tensor of shape \(2, 3\)"):
        model(x, 1, torch.tensor([1, 3]), num_images=I, image_labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="num_images must be >= 0"):
        model(x, 1, num_images=-1)
