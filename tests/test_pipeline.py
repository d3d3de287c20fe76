"""LatteVideoPipeline and sample.py: diffusers' conventions (output types, latents=, per-video generators, step
callbacks), schedulers, guidance, chunked decoding, save / load, errors."""

import numpy as np
import pytest
import torch
from PIL import Image

import sample
from dit import DIT_PRESETS, SAMPLING_STEPS, SCHEDULERS, LatteDiT, make_scheduler
from pipelines import LatteVideoPipeline
from pipelines.common.errors import ConfigError
from pipelines.inference import loading
from pipelines.inference.loading import load_pipeline
from pipelines.evaluation.generation import EvalConfig
from pipelines.inference.sampling import SampleConfig, samples_dir
from pipelines.training.dit_trainer import DiTTrainConfig
from vae import build_autoencoder


def tiny_pipeline(num_classes=5, scheduler="ddpm", **scheduler_kw) -> LatteVideoPipeline:
    torch.manual_seed(0)
    dit = LatteDiT(**DIT_PRESETS["Latte-tiny"], in_channels=4, num_frames=3, sample_size=2, num_classes=num_classes)
    for p in dit.parameters():  # leave adaLN-Zero's all-zero start, so guidance and variance matter
        p.data.add_(0.05 * torch.randn_like(p))
    vae = build_autoencoder("lean-tiny", latents_mean=[0.1, 0.0, -0.2, 0.3], latents_std=[2.0, 0.5, 1.0, 1.5])
    pipe = LatteVideoPipeline(dit, vae, make_scheduler(scheduler, **scheduler_kw),
                              class_names=[f"c{i}" for i in range(num_classes)], default_guidance_scale=2.0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, **kw):
    kw = {"num_inference_steps": 4, "generator": torch.Generator().manual_seed(0), **kw}
    return pipe(**kw).frames


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_pt_frames_are_the_vae_decoding_of_the_latents(scheduler, guidance):
    pipe = tiny_pipeline(scheduler=scheduler)
    latents = run(pipe, class_labels=[0, 4], guidance_scale=guidance, output_type="latent")  # (2, 4, 3, 2, 2)
    frames = run(pipe, class_labels=[0, 4], guidance_scale=guidance, output_type="pt")  # (2, T, 3, H, W)
    assert latents.shape == (2, 4, 3, 2, 2) and torch.isfinite(latents).all()
    with torch.no_grad():
        video = pipe.vae.decode(pipe.vae.denormalize_latents(latents)).sample  # (2, 3, 9, 16, 16) in [-1, 1]
    expected = ((video.clamp(-1, 1) + 1) / 2).transpose(1, 2)  # diffusers' [0, 1], frames first
    assert frames.shape == (2, 9, 3, 16, 16)
    assert (frames - expected).abs().max() <= 1e-5


def test_output_types_follow_diffusers():
    pipe = tiny_pipeline()
    pt = run(pipe, class_labels=[1])
    np_frames = run(pipe, class_labels=[1], output_type="np")
    pil = run(pipe, class_labels=[1], output_type="pil")
    assert isinstance(np_frames, np.ndarray) and np_frames.shape == (1, 9, 16, 16, 3)
    assert 0.0 <= np_frames.min() and np_frames.max() <= 1.0
    assert np.allclose(np_frames, pt.permute(0, 1, 3, 4, 2).numpy(), atol=1e-6)
    assert len(pil) == 1 and len(pil[0]) == 9 and isinstance(pil[0][0], Image.Image) and pil[0][0].size == (16, 16)
    assert np.abs(np.asarray(pil[0][4]) / 255.0 - np_frames[0, 4]).max() <= 0.5 / 255 + 1e-6
    with pytest.raises(ValueError, match="output_type"):
        run(pipe, class_labels=[1], output_type="mp4")


def test_given_latents_give_the_same_videos_and_take_the_pipeline_dtype():
    pipe = tiny_pipeline()
    noise = torch.randn(2, 4, 3, 2, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    a = run(pipe, class_labels=[1, 2], latents=noise, output_type="latent")
    b = run(pipe, class_labels=[1, 2], latents=noise.float(), output_type="latent",
            generator=torch.Generator().manual_seed(0))
    assert a.dtype == torch.float32 and torch.equal(a, b)
    with pytest.raises(ValueError, match="latents must have shape"):
        run(pipe, class_labels=[1], latents=noise)


def test_a_video_is_the_same_whatever_batch_it_is_in():
    pipe = tiny_pipeline()
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    alone = run(pipe, class_labels=[3], generator=gens([11]), output_type="latent")
    batched = run(pipe, class_labels=[0, 3, 4], generator=gens([5, 11, 9]), output_type="latent")
    assert (batched[1] - alone[0]).abs().max() <= 1e-5
    assert (batched[0] - alone[0]).abs().max() > 1e-2  # another seed, another video
    with pytest.raises(ValueError, match="one per video"):
        run(pipe, class_labels=[0, 3], generator=gens([1]))


def test_the_step_callback_runs_every_step_and_can_change_the_latents():
    pipe = tiny_pipeline()
    calls = []

    def record(p, i, t, tensors):
        calls.append((i, int(t), tuple(tensors["latents"].shape)))
        return {}

    run(pipe, class_labels=[1], num_inference_steps=5, callback_on_step_end=record)
    assert [i for i, _, _ in calls] == list(range(5)) and calls[0][2] == (1, 4, 3, 2, 2)
    assert [t for _, t, _ in calls] == pipe.scheduler.timesteps.tolist()
    zeroed = run(pipe, class_labels=[1], output_type="latent",
                 callback_on_step_end=lambda p, i, t, tensors: {"latents": torch.zeros_like(tensors["latents"])})
    assert torch.equal(zeroed, torch.zeros_like(zeroed))
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        run(pipe, class_labels=[1], callback_on_step_end=record, callback_on_step_end_tensor_inputs=["noise"])


def test_guidance_changes_only_noise_and_keeps_conditional_variance():
    pipe = tiny_pipeline()
    x, t, labels = torch.randn(2, 4, 3, 2, 2), torch.tensor(500), torch.tensor([1, 3])
    with torch.no_grad():
        cond = pipe.transformer(x, t.expand(2), class_labels=labels).sample
        uncond = pipe.transformer(x, t.expand(2), class_labels=torch.full_like(labels, 5)).sample
        guided = pipe._model_output(x, t, labels, guidance_scale=3.0)
    assert torch.allclose(guided[:, :4], uncond[:, :4] + 3.0 * (cond[:, :4] - uncond[:, :4]), atol=1e-5)
    assert torch.allclose(guided[:, 4:], cond[:, 4:], atol=1e-6)
    pipe.scheduler = make_scheduler("ddim")  # DDIM gets the noise half only
    with torch.no_grad():
        assert pipe._model_output(x, t, labels, guidance_scale=3.0).shape[1] == 4


def test_default_guidance_is_the_pipelines():
    pipe = tiny_pipeline()
    assert torch.equal(run(pipe, class_labels=[1], output_type="latent"),
                       run(pipe, class_labels=[1], guidance_scale=2.0, output_type="latent"))
    assert not torch.equal(run(pipe, class_labels=[1], output_type="latent"),
                           run(pipe, class_labels=[1], guidance_scale=1.0, output_type="latent"))


@pytest.mark.parametrize("scheduler", ["ddpm", "euler"])
def test_guidance_interval_guides_exactly_the_steps_inside_it(scheduler):
    pipe = tiny_pipeline(scheduler=scheduler)
    interval = (0.3, 0.8)
    got = run(pipe, class_labels=[1, 3], guidance_scale=3.0, guidance_interval=interval, output_type="latent")
    generator = torch.Generator().manual_seed(0)  # the loop of __call__, written out: guided only inside
    latents = pipe.prepare_latents(2, torch.float32, torch.device("cpu"), generator)
    pipe.scheduler.set_timesteps(4)
    guided = []
    with torch.no_grad():
        for t in pipe.scheduler.timesteps:
            level = float(t) / 1000
            guided.append(interval[0] <= level <= interval[1])
            out = pipe._model_output(latents, t, torch.tensor([1, 3]), 3.0 if guided[-1] else 1.0)
            latents = pipe.scheduler.step(out, t, latents, generator=generator).prev_sample
    assert any(guided) and not all(guided)  # the interval splits these 4 steps
    assert torch.allclose(got, latents, atol=1e-6)
    everywhere = run(pipe, class_labels=[1, 3], guidance_scale=3.0, output_type="latent")
    assert torch.equal(everywhere, run(pipe, class_labels=[1, 3], guidance_scale=3.0, guidance_interval=[0, 1],
                                       output_type="latent"))
    assert not torch.allclose(got, everywhere, atol=1e-3)


def test_the_default_guidance_interval_is_saved_and_checked(tmp_path):
    pipe = tiny_pipeline()
    assert pipe.default_guidance_interval == (0.0, 1.0)  # Latte's: every step
    pipe.register_to_config(default_guidance_interval=[0.2, 0.85])
    pipe.save_pretrained(tmp_path / "pipeline")
    loaded = LatteVideoPipeline.from_pretrained(tmp_path / "pipeline")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.default_guidance_interval == (0.2, 0.85)
    assert torch.equal(run(loaded, class_labels=[1], output_type="latent"),
                       run(loaded, class_labels=[1], guidance_interval=[0.2, 0.85], output_type="latent"))
    for bad in ([0.5, 0.2], [0.2], [-0.1, 0.5], [0.2, 1.5]):
        with pytest.raises(ValueError, match="0 <= low < high <= 1"):
            run(pipe, class_labels=[1], guidance_interval=bad)
    with pytest.raises(ConfigError, match="0 <= low < high <= 1"):
        LatteVideoPipeline(pipe.transformer, pipe.vae, pipe.scheduler, default_guidance_interval=(1.0, 1.0))
    for config in (DiTTrainConfig, EvalConfig, SampleConfig):  # a config's bad interval fails before any work
        with pytest.raises(ConfigError, match="0 <= low < high <= 1"):
            config(guidance_interval=[0.9, 0.1])


def test_chunked_decoding_inside_the_pipeline_equals_full():
    pipe = tiny_pipeline()
    full = run(pipe, class_labels=[2], decode_chunk_size=None)
    chunked = run(pipe, class_labels=[2], decode_chunk_size=1)
    assert (full - chunked).abs().max() <= 1e-5


def test_save_load_round_trip(tmp_path):
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path / "pipeline")
    loaded = LatteVideoPipeline.from_pretrained(tmp_path / "pipeline")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.class_names == pipe.class_names and loaded.default_guidance_scale == 2.0
    assert loaded.vae.config.latents_std == [2.0, 0.5, 1.0, 1.5]
    before = run(pipe, class_labels=[1], output_type="latent")
    assert torch.equal(before, run(loaded, class_labels=[1], output_type="latent"))
    videos = run(pipe, class_labels=[1]), run(loaded, class_labels=[1])
    assert (videos[0] - videos[1]).abs().max() <= 1e-5  # oneDNN may pick other kernels for new buffers


def test_a_flow_shift_is_saved_and_kept_when_its_sampler_is_asked_for(tmp_path):
    tiny_pipeline(scheduler="euler", flow_shift=1.5).save_pretrained(tmp_path / "pipeline")
    for scheduler in (None, "euler"):
        assert load_pipeline(tmp_path / "pipeline", scheduler=scheduler).scheduler.config.shift == 1.5
    with pytest.raises(ConfigError, match="flow_shift must be > 0"):
        DiTTrainConfig(objective="flow", flow_shift=0.0)


def test_the_vae_runs_in_the_precision_asked_for(tmp_path):
    tiny_pipeline().save_pretrained(tmp_path / "pipeline")
    videos = {}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        pipe = load_pipeline(tmp_path / "pipeline", vae_precision=precision)
        pipe.set_progress_bar_config(disable=True)
        assert pipe.vae.dtype == dtype and pipe.transformer.dtype == torch.float32
        videos[precision] = run(pipe, class_labels=[1], output_type="pt")
    assert videos["bf16"].dtype == torch.float32 and (videos["bf16"] - videos["fp32"]).abs().mean() < 0.01
    with pytest.raises(ConfigError, match="vae_precision must be one of"):
        load_pipeline(tmp_path / "pipeline", vae_precision="fp8")


@pytest.mark.parametrize("bf16_rate,dtype", [(4.0, torch.bfloat16), (1.2, torch.float32)])
def test_auto_precision_is_bfloat16_only_where_a_bfloat16_matmul_pays(tmp_path, monkeypatch, bf16_rate, dtype):
    monkeypatch.setattr(loading, "bf16_speedup", lambda device: bf16_rate)
    tiny_pipeline().save_pretrained(tmp_path / "pipeline")
    pipe = load_pipeline(tmp_path / "pipeline", precision="auto", vae_precision="auto")
    assert pipe.transformer.dtype == dtype and pipe.vae.dtype == dtype
    assert loading.resolve_precision("fp16", "cpu") == "fp16"  # what is asked for by name stays


def test_bad_requests_are_explained():
    pipe = tiny_pipeline()
    with pytest.raises(ValueError, match=r"integers in \[0, 4\]"):
        run(pipe, class_labels=[5])
    with pytest.raises(ValueError, match="guidance_scale must be >= 1"):
        run(pipe, class_labels=[1], guidance_scale=0.5)
    with pytest.raises(ValueError, match="unconditional"):
        run(tiny_pipeline(num_classes=0), class_labels=[1])


def test_samples_go_to_the_run_named_or_beside_a_pipeline_named(tmp_path):
    pipeline = tmp_path / "runs" / "x" / "dit" / "pipeline"
    assert samples_dir(str(tmp_path / "runs" / "x"), pipeline) == tmp_path / "runs" / "x" / "samples"  # train.sh run
    assert samples_dir(str(pipeline.parent), pipeline) == pipeline.parent / "samples"  # a DiT training run
    assert samples_dir(str(pipeline), pipeline) == pipeline.parent / "samples"  # the pipeline: never inside it
    assert samples_dir(None, pipeline) == tmp_path / "runs" / "x" / "samples"  # the newest train.sh run


def test_sample_script_writes_videos_and_explains_errors(tmp_path, capsys):
    tiny_pipeline().save_pretrained(tmp_path / "run" / "dit" / "pipeline")
    common = ["--run", str(tmp_path / "run"), "--steps", "3", "--num-videos", "2", "--output-dir", str(tmp_path / "out")]
    assert sample.main(["--prompt-class", "3", *common]) == 0
    printed = capsys.readouterr().out
    assert "2 videos of class_3 (c3)" in printed
    assert len(list((tmp_path / "out").glob("*.mp4"))) == 2
    assert (tmp_path / "out" / "class_3_seed0_grid.png").is_file()
    for argv, message in [(["--prompt-class", "7", *common], r"[0, 4]"),
                          (["--prompt-class", "1", "--run", str(tmp_path / "nowhere")], "bash train.sh"),
                          ([*common], "pass --prompt-class"), (["--prompt-class", "1", *common, "--steps", "0"],
                                                               "num_inference_steps")]:
        with pytest.raises(SystemExit) as exit_info:
            sample.main(argv)
        last = capsys.readouterr().err.strip().splitlines()[-1]  # after diffusers' loading bar, if any
        assert exit_info.value.code == 2 and last.startswith("sample.py: error: ") and message in last



def test_without_steps_each_sampler_takes_its_own_count(tmp_path, monkeypatch):
    """Latte's protocol samples DDPM with 250 steps; Euler on a flow model with 50 (it scores as 100 do)."""
    asked = []
    call = LatteVideoPipeline.__call__
    monkeypatch.setattr(LatteVideoPipeline, "__call__",
                        lambda self, *a, **kw: asked.append(kw["num_inference_steps"]) or call(self, *a, **kw))
    for scheduler in ("euler", "ddpm"):
        tiny_pipeline(scheduler=scheduler).save_pretrained(tmp_path / scheduler / "dit" / "pipeline")
        common = ["--run", str(tmp_path / scheduler), "--prompt-class", "1", "--num-videos", "1"]
        assert sample.main(common) == 0
        assert sample.main([*common, "--steps", "3"]) == 0
    assert asked == [SAMPLING_STEPS["euler"], 3, SAMPLING_STEPS["ddpm"], 3] == [50, 3, 250, 3]
