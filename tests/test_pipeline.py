"""LatteVideoPipeline and sample.py: schedulers, guidance, chunked decoding, save/load, errors."""

import pytest
import torch

import sample
from dit import DIT_PRESETS, LatteDiT
from pipelines.pipeline_latte import SCHEDULERS, LatteVideoPipeline, make_scheduler
from vae import VAE_PRESETS, LeanVAE


def tiny_pipeline(num_classes=5, scheduler="ddpm") -> LatteVideoPipeline:
    torch.manual_seed(0)
    dit = LatteDiT(**DIT_PRESETS["Latte-tiny"], in_channels=4, num_frames=3, sample_size=2, num_classes=num_classes)
    for p in dit.parameters():  # leave adaLN-Zero's all-zero start, so guidance and variance matter
        p.data.add_(0.05 * torch.randn_like(p))
    vae = LeanVAE(**VAE_PRESETS["lean-tiny"], scaling_factor=0.5)
    return LatteVideoPipeline(dit, vae, make_scheduler(scheduler), class_names=[f"c{i}" for i in range(num_classes)],
                              default_guidance_scale=2.0)


def run(pipe, **kw):
    kw = {"num_inference_steps": 4, "generator": torch.Generator().manual_seed(0), "progress": False, **kw}
    return pipe(**kw).videos


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_every_scheduler_gives_finite_videos(scheduler, guidance):
    videos = run(tiny_pipeline(scheduler=scheduler), class_labels=[0, 4], guidance_scale=guidance)
    assert videos.shape == (2, 3, 9, 16, 16)
    assert torch.isfinite(videos).all() and videos.abs().max() <= 1


def test_guidance_changes_only_noise_and_keeps_conditional_variance():
    pipe = tiny_pipeline()
    x, t, labels = torch.randn(2, 4, 3, 2, 2), torch.tensor(500), torch.tensor([1, 3])
    with torch.no_grad():
        cond = pipe.transformer(x, t.expand(2), class_labels=labels).sample
        uncond = pipe.transformer(x, t.expand(2), class_labels=torch.full_like(labels, 5)).sample
        guided = pipe._predict_noise(x, t, labels, guidance_scale=3.0)
    assert torch.allclose(guided[:, :4], uncond[:, :4] + 3.0 * (cond[:, :4] - uncond[:, :4]), atol=1e-5)
    assert torch.allclose(guided[:, 4:], cond[:, 4:], atol=1e-6)
    pipe.scheduler = make_scheduler("ddim")  # DDIM gets the noise half only
    with torch.no_grad():
        assert pipe._predict_noise(x, t, labels, guidance_scale=3.0).shape[1] == 4


def test_chunked_decoding_inside_the_pipeline_equals_full():
    pipe = tiny_pipeline()
    full = run(pipe, class_labels=[2], decode_chunk_size=None)
    chunked = run(pipe, class_labels=[2], decode_chunk_size=1)
    assert (full - chunked).abs().max() <= 1e-5


def test_save_load_round_trip(tmp_path):
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path / "pipeline")
    loaded = LatteVideoPipeline.from_pretrained(tmp_path / "pipeline")
    assert loaded.class_names == pipe.class_names and loaded.default_guidance_scale == 2.0
    assert loaded.vae.config.scaling_factor == 0.5
    before = run(pipe, class_labels=[1], guidance_scale=2.0, output_type="latent")
    assert torch.equal(before, run(loaded, class_labels=[1], guidance_scale=2.0, output_type="latent"))
    videos = run(pipe, class_labels=[1], guidance_scale=2.0), run(loaded, class_labels=[1], guidance_scale=2.0)
    assert (videos[0] - videos[1]).abs().max() <= 1e-5  # oneDNN may pick other kernels for new buffers


def test_bad_requests_are_explained():
    pipe = tiny_pipeline()
    with pytest.raises(ValueError, match=r"integers in \[0, 4\]"):
        run(pipe, class_labels=[5])
    with pytest.raises(ValueError, match="guidance_scale must be >= 1"):
        run(pipe, class_labels=[1], guidance_scale=0.5)
    with pytest.raises(ValueError, match="unconditional"):
        run(tiny_pipeline(num_classes=0), class_labels=[1])


def test_sample_script_writes_videos_and_explains_errors(tmp_path, capsys):
    tiny_pipeline().save_pretrained(tmp_path / "run" / "dit" / "pipeline")
    common = ["--run", str(tmp_path / "run"), "--steps", "3", "--num-videos", "2", "--output-dir", str(tmp_path / "out")]
    assert sample.main(["--prompt-class", "3", *common]) == 0
    printed = capsys.readouterr().out
    assert "2 videos of class_3 (c3)" in printed
    assert len(list((tmp_path / "out").glob("*.mp4"))) == 2
    assert (tmp_path / "out" / "class_3_seed0_grid.png").is_file()
    assert sample.main(["--prompt-class", "7", *common]) == 2
    assert r"[0, 4]" in capsys.readouterr().err
    assert sample.main(["--prompt-class", "1", "--run", str(tmp_path / "nowhere")]) == 2
    assert "bash train.sh" in capsys.readouterr().err
