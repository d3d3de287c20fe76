"""Latte+IMG in training: image latents from the latent cache itself, the joint run trains, resumes exactly,
overfits, and exports a pipeline that samples videos."""

import pytest
import torch
from safetensors.torch import load_file

import train_dit
from dit import diffusion_loss, training_scheduler
from pipelines import LatteVideoPipeline
from pipelines.training.joint_images import WithImages
from pipelines.training.latent_cache import LatentDataset
from pipelines.training.latent_cache import main as cache_main
from tests.conftest import killed_after_first_checkpoint, reset_accelerate_state
from vae import build_autoencoder

from test_dit import C, F, S, tiny

DATA = ["data.num_samples=12", "data.num_frames=9", "data.resolution=16", "data.synthetic_classes=4"]
pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.mark.parametrize("preset", ["lean-tiny", "wfvae-tiny", "ivvae-tiny"])
def test_a_causal_vaes_first_latent_frame_is_the_image_latent_of_the_first_frame(preset):
    torch.manual_seed(0)
    vae = build_autoencoder(preset).double().eval()
    video = torch.rand(1, 3, 9, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        whole = vae.encode(video).latent_dist.mean  # (1, d, 3, 4, 4)
        image = vae.encode(video[:, :, :1]).latent_dist.mean  # the first frame as a one-frame video: (1, d, 1, 4, 4)
    torch.testing.assert_close(whole[:, :, :1], image, rtol=0, atol=1e-10)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("joint")
    torch.manual_seed(0)
    build_autoencoder("lean-tiny").save_pretrained(root / "vae")
    cache_main([f"vae={root / 'vae'}", f"output_dir={root / 'latents'}", *DATA])
    return root


def test_images_are_first_latent_frames_of_other_clips_with_their_labels(cache):
    latents = LatentDataset(cache / "latents")
    joint = WithImages(latents, num_images=5, any_frame=False)
    for index in range(len(latents)):
        torch.manual_seed(index)
        item = joint[index]
        own = latents[index]
        assert item["mean"].shape == (own["mean"].shape[0], own["mean"].shape[1] + 5, *own["mean"].shape[2:])
        assert torch.equal(item["mean"][:, : own["mean"].shape[1]], own["mean"])
        for slot, label in enumerate(item["image_labels"].tolist()):
            image = item["mean"][:, own["mean"].shape[1] + slot]
            sources = [i for i in range(len(latents)) if torch.equal(latents[i]["mean"][:, 0], image)]
            assert sources and index not in sources and latents[sources[0]]["label"] == label
        torch.manual_seed(index)
        assert torch.equal(joint[index]["mean"], item["mean"])  # the same draw under the same seed


def test_a_per_frame_vaes_images_come_from_any_latent_frame(cache):
    latents = LatentDataset(cache / "latents")
    torch.manual_seed(0)
    item = WithImages(latents, num_images=40, any_frame=True)[0]
    t = latents[0]["mean"].shape[1]
    picked = {(i, f) for i in range(len(latents)) for f in range(t) for s in range(40)
              if torch.equal(latents[i]["mean"][:, f], item["mean"][:, t + s])}
    assert {f for _, f in picked} == set(range(t))


def run(cache, out, *args):
    reset_accelerate_state()
    return train_dit.main([f"cache_dir={cache / 'latents'}", f"output_dir={out}", "model.preset=Latte-tiny",
                           "batch_size=4", "report_to=none", "sample_every=0", "sample_steps=2",
                           "sample_classes=[0, 3]", *args])


@pytest.mark.parametrize("objective", ["iddpm", "flow"])
def test_a_joint_run_resumes_exactly_and_exports_a_video_pipeline(cache, tmp_path, monkeypatch, objective):
    common = ["max_steps=4", "checkpoint_every=2", "num_images=3", f"objective={objective}", "log_every=1"]
    summary = run(cache, tmp_path / "straight", *common)
    assert summary["step"] == 4
    killed_after_first_checkpoint(monkeypatch, lambda: run(cache, tmp_path / "resumed", *common))
    assert run(cache, tmp_path / "resumed", *common, "resume=latest")["steps_this_run"] == 2
    name = "dit/diffusion_pytorch_model.safetensors"
    a, b = load_file(tmp_path / "straight" / name), load_file(tmp_path / "resumed" / name)
    assert all(torch.equal(a[k], b[k]) for k in a)
    pipe = LatteVideoPipeline.from_pretrained(tmp_path / "straight" / "pipeline")
    frames = pipe(class_labels=[1], num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                  output_type="np").frames
    assert frames.shape == (1, 9, 16, 16, 3)


def test_joint_training_changes_the_run_and_is_checked_on_resume(cache, tmp_path, capsys):
    plain = run(cache, tmp_path / "plain", "max_steps=2", "log_every=1")
    joint = run(cache, tmp_path / "joint", "max_steps=2", "log_every=1", "num_images=2", "checkpoint_every=1")
    assert plain["logs"]["loss/total"] != joint["logs"]["loss/total"]
    with pytest.raises(SystemExit) as exit_info:
        run(cache, tmp_path / "joint", "max_steps=3", "num_images=4", "checkpoint_every=1", "resume=latest")
    assert exit_info.value.code == 2 and "num_images" in capsys.readouterr().err


def test_a_tiny_joint_model_overfits_a_clip_and_its_images():
    model = tiny(num_classes=3)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    scheduler = training_scheduler()
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(1, C, F + 2, S, S, generator=g).expand(8, -1, -1, -1, -1)
    labels, images = torch.full((8,), 1), torch.tensor([[0, 2]]).expand(8, -1)
    eval_noise, eval_t = torch.randn(x0.shape, generator=g), torch.linspace(100, 999, 8).long()

    def mse(noise, t) -> torch.Tensor:
        out = model(scheduler.add_noise(x0, noise, t), t, labels, num_images=2, image_labels=images).sample
        return diffusion_loss(out, x0, noise, t, scheduler)

    with torch.no_grad():
        before = mse(eval_noise, eval_t)["mse"]
    for _ in range(150):
        opt.zero_grad()
        mse(torch.randn(x0.shape, generator=g), torch.randint(0, 1000, (8,), generator=g))["loss"].backward()
        opt.step()
    with torch.no_grad():
        after = mse(eval_noise, eval_t)["mse"]
    assert after.mean() < 0.3 * before.mean()
    assert (after[4:] < 0.05).all()


def test_a_samples_images_drop_their_labels_together_as_the_official_code_does(cache, tmp_path, monkeypatch):
    from dit import LatteDiT

    seen = []
    forward = LatteDiT.forward

    def spy(self, *args, **kwargs):
        if kwargs.get("force_drop_ids") is not None:  # training steps (sampling passes none)
            seen.append(kwargs["force_drop_ids"])
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LatteDiT, "forward", spy)
    run(cache, tmp_path / "run", "max_steps=6", "num_images=3", "model.class_dropout_prob=0.5")
    drops = torch.cat(seen)  # (steps x B, 1 + 3)
    assert drops.shape == (24, 4) and (drops[:, 1:] == drops[:, 1:2]).all()
    assert 0 < drops[:, 0].sum() < 24 and 0 < drops[:, 1].sum() < 24 and (drops[:, 0] != drops[:, 1]).any()
