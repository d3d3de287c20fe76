"""Released Latte weights: `LatteDiT.from_official_checkpoint` gives the official model's outputs, the
pipeline's `guidance_channels=4` the official `forward_with_cfg` (golden files made by
tests/data/make_latte_golden.py from the official code), and `assemble_pipeline.py` joins released files into a
run that `sample.py` uses."""

import pytest
import torch
from golden import golden as read_golden

import assemble_pipeline
import sample
from dit import LatteDiT, make_scheduler
from pipelines import LatteVideoPipeline
from vae import build_autoencoder


def golden(name: str):
    return read_golden(f"latte_golden_{name}", "args")


def released(name: str, folder, **overrides) -> LatteDiT:
    """The golden model saved as Latte's train.py does (EMA beside the raw weights) and imported."""
    _, state, _ = golden(name)
    decoy = {key: torch.zeros_like(value) for key, value in state.items()}  # the EMA weights must win
    torch.save({"model": decoy, "ema": state}, folder / f"{name}.pt")
    return LatteDiT.from_official_checkpoint(folder / f"{name}.pt", **overrides)


@pytest.mark.parametrize("name,heads", [("ucf", {}), ("sky", {"num_heads": 4})])
def test_released_latte_gives_the_official_outputs(name, heads, tmp_path):
    args, _, t = golden(name)
    model = released(name, tmp_path, **heads)
    cfg = model.config
    assert (cfg.in_channels, cfg.patch_size, cfg.hidden_size, cfg.depth, cfg.num_heads, cfg.num_frames) == (
        args["in_channels"], args["patch_size"], args["hidden_size"], args["depth"], args["num_heads"],
        args["num_frames"])
    assert cfg.sample_size == args["input_size"] and cfg.learn_sigma and cfg.gelu == "tanh"
    assert cfg.num_classes == (args["num_classes"] if args["extras"] == 2 else 0)
    x = t["x"].transpose(1, 2)  # official (B, F, C, H, W) -> ours (B, C, F, H, W)
    with torch.no_grad():
        out = model(x, t["t"], class_labels=t.get("y")).sample.transpose(1, 2)
    assert (out - t["out"]).abs().max() <= 1e-5


def test_official_guidance_equals_forward_with_cfg(tmp_path):
    args, _, t = golden("ucf")
    model = released("ucf", tmp_path)
    vae = build_autoencoder("lean-tiny", latent_channels=args["in_channels"])
    official = t["cfg_out"][:2].transpose(1, 2)  # the conditional half, ours (B, 2C, F, H, W)
    latents, labels = t["cfg_x"][:2].transpose(1, 2), t["cfg_y"][:2]
    results = {}
    for channels in (4, None):
        pipe = LatteVideoPipeline(model, vae, make_scheduler("ddpm"), guidance_channels=channels)
        with torch.no_grad():
            results[channels] = pipe._model_output(latents, t["cfg_t"][0], labels, 4.0)
    assert (results[4] - official).abs().max() <= 1e-5
    assert (results[None] - official)[:, 4:8].abs().max() > 1e-2  # guiding every channel is another sampler
    assert torch.equal(results[None][:, :4], results[4][:, :4])


def test_latte_import_errors_say_what_to_do(tmp_path):
    _, state, _ = golden("sky")
    torch.save({"ema": dict(state, **{"x_embedder.proj.weight": torch.zeros(40, 4, 1, 1)})}, tmp_path / "wide.pt")
    with pytest.raises(ValueError, match="no Latte preset has width 40: pass num_heads"):
        LatteDiT.from_official_checkpoint(tmp_path / "wide.pt")
    torch.save({"ema": {"encoder.weight": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a Latte checkpoint"):
        LatteDiT.from_official_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="github.com/Vchitect/Latte"):
        LatteDiT.from_official_checkpoint(tmp_path / "missing.pt")


def test_assembled_released_pipeline_samples_like_a_trained_run(tmp_path, capsys):
    """Released DiT + released LeanVAE (the golden files in their released layouts) -> sample.py --run."""
    _, dit_state, _ = golden("sky")
    torch.save({"ema": dit_state}, tmp_path / "sky-dim4.pt")
    vae_args, vae_state, _ = read_golden("leanvae_golden_dim4", "args")
    torch.save({"args": vae_args, "state_dict": vae_state}, tmp_path / "LeanVAE-dim4.ckpt")
    run = tmp_path / "run"
    argv = ["--dit", str(tmp_path / "sky-dim4.pt"), "--vae", str(tmp_path / "LeanVAE-dim4.ckpt"),
            "--latent-scale", "0.7744", "--num-heads", "4", "--output-dir", str(run)]
    assert assemble_pipeline.main(argv) == 0
    assert "unconditional, 17 frames at 16x16" in capsys.readouterr().out
    pipe = LatteVideoPipeline.from_pretrained(run / "dit" / "pipeline")
    assert pipe.config.guidance_channels == 4 and pipe.vae.config.latents_std == pytest.approx(1 / 0.7744)
    assert pipe.transformer.config.gelu == "tanh"
    assert sample.main(["--run", str(run), "--steps", "2", "--num-videos", "1"]) == 0
    assert len(list((run / "samples" / "unconditional").glob("*.mp4"))) == 1


def test_assembly_checks_what_it_joins(tmp_path, capsys):
    _, state, _ = golden("ucf")
    torch.save({"ema": state}, tmp_path / "ucf.pt")
    build_autoencoder("lean-tiny", latent_channels=8).save_pretrained(tmp_path / "vae8")
    build_autoencoder("lean-tiny").save_pretrained(tmp_path / "vae4")
    (tmp_path / "classInd.txt").write_text("".join(f"{i + 1} Class{i}\n" for i in range(5)))
    common = ["--dit", str(tmp_path / "ucf.pt"), "--output-dir", str(tmp_path / "run")]
    assert assemble_pipeline.main([*common, "--vae", str(tmp_path / "vae8"), "--class-names",
                                   str(tmp_path / "classInd.txt")]) == 0
    assert LatteVideoPipeline.from_pretrained(tmp_path / "run" / "dit" / "pipeline").class_names[4] == "Class4"
    for extra, message in [(["--vae", str(tmp_path / "vae4")], "takes 8 latent channels"),
                           (["--vae", str(tmp_path / "vae8"), "--class-names", str(tmp_path / "none.txt")],
                            "none.txt"),
                           (["--vae", str(tmp_path / "nowhere")], "nowhere")]:
        with pytest.raises(SystemExit) as exit_info:
            assemble_pipeline.main([*common, *extra])
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert exit_info.value.code == 2 and last.startswith("assemble_pipeline.py: error: ") and message in last


@pytest.mark.parametrize("name,heads", [("ucf", {}), ("sky", {"num_heads": 4})])
def test_released_latte_img_gives_the_official_joint_outputs(name, heads, tmp_path):
    """Latte+IMG checkpoints (the official `LatteIMG`, tests/data/make_latte_golden.py) load as the video-only
    ones do, and a video with images gives the official joint forward's output."""
    args, state, t = read_golden(f"latteimg_golden_{name}", "args")
    torch.save({"ema": state}, tmp_path / f"{name}-img.pt")
    model = LatteDiT.from_official_checkpoint(tmp_path / f"{name}-img.pt", **heads)
    assert model.config.num_frames == args["num_frames"]
    images = t["x"].shape[1] - args["num_frames"]
    x = t["x"].transpose(1, 2)  # official (B, F + I, C, H, W) -> ours (B, C, F + I, H, W)
    with torch.no_grad():
        out = model(x, t["t"], class_labels=t.get("y"), num_images=images, image_labels=t.get("y_image")).sample
    assert (out.transpose(1, 2) - t["out"]).abs().max() <= 1e-5
