"""evaluate.py / pipelines.evaluation on a tiny saved run: the reported FVD, IS and class accuracy equal an
independent computation from the same generated videos; one progress bar per phase; the train.sh summary."""

import json

import numpy as np
import pytest
import torch

import evaluate as evaluate_script
from dit import DIT_PRESETS, LatteDiT, make_scheduler
from pipelines import LatteVideoPipeline
from pipelines.common.files import export_pretrained, write_json
from pipelines.common.layout import RunLayout
from pipelines.common.pixels import to_uint8
from pipelines.common.seeding import keyed_generator
from pipelines.data import SyntheticVideoDataset
from pipelines.evaluation import generation, metrics
from pipelines.evaluation.classifier import ClassifierDetector, VideoClassifier
from pipelines.evaluation.generation import EvalConfig, evaluate
from pipelines.evaluation.metrics import classification_accuracy, fvd_from_features, inception_score_from_probs
from pipelines.evaluation.report import record, summary
from vae import build_autoencoder


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    layout = RunLayout(tmp_path_factory.mktemp("run"))
    torch.manual_seed(0)
    dit = LatteDiT(**DIT_PRESETS["Latte-tiny"], in_channels=4, num_frames=3, sample_size=2, num_classes=4)
    for p in dit.parameters():  # away from adaLN-Zero's start, so classes and guidance change the videos
        p.data.add_(0.2 * torch.randn_like(p))
    vae = build_autoencoder("lean-tiny", latents_std=0.5)
    LatteVideoPipeline(dit, vae, make_scheduler("ddpm"), class_names=list("abcd"),
                       default_guidance_scale=2.0).save_pretrained(layout.pipeline)
    classifier = VideoClassifier(num_classes=4, widths=(8, 16), resolution=16)
    torch.nn.init.normal_(classifier.head.weight)  # a classifier with opinions
    export_pretrained(classifier, layout.classifier)
    return layout


def independent_scores(layout: RunLayout, num_fake: int, steps: int, frames: int) -> dict:
    """The metrics computed here from scratch: the videos generated one by one, the detector called directly."""
    pipe = LatteVideoPipeline.from_pretrained(layout.pipeline)
    pipe.set_progress_bar_config(disable=True)
    detector = ClassifierDetector(VideoClassifier.from_pretrained(layout.classifier).eval())
    labels = [i % 4 for i in range(num_fake)]
    fake = []
    for i, label in enumerate(labels):
        latents = pipe(class_labels=[label], num_inference_steps=steps, generator=[keyed_generator(0, i)],
                       output_type="latent").frames
        fake.append(to_uint8(pipe.decode_latents(latents)[:, :, :frames]))
    fake = torch.cat(fake)  # (N, 3, frames, H, W) uint8
    real = SyntheticVideoDataset(num_fake, num_frames=9, resolution=16, seed=10_000, num_classes=4)
    real = to_uint8(torch.stack([real[i]["video"][:, :frames] for i in range(num_fake)]))
    probs = detector(fake).double().numpy()
    return {"fvd": fvd_from_features(detector(real, return_features=True), detector(fake, return_features=True)),
            "is": inception_score_from_probs(probs, num_splits=10), "accuracy": classification_accuracy(probs, labels)}


def test_reported_metrics_equal_an_independent_computation(run):
    report = evaluate(EvalConfig(run=str(run.root), num_fake=12, steps=2, batch_size=5, num_frames=9))
    results = report["results"]
    expected = independent_scores(run, num_fake=12, steps=2, frames=9)
    assert results["FVD (12 real / 12 generated)"] == pytest.approx(expected["fvd"], rel=1e-4)
    assert (results["IS"]["mean"], results["IS"]["std"]) == pytest.approx(expected["is"], rel=1e-4)
    assert results["class accuracy"] == pytest.approx(expected["accuracy"])
    assert results["chance"] == 0.25 and 0.0 <= results["class accuracy of VAE reconstructions"] <= 1.0
    assert "not I3D" in report["detector_note"]
    assert json.loads(run.metrics.read_text())["results"] == results
    assert len(list(run.eval_samples.glob("class_*.mp4"))) == 8  # 2 per class
    assert (run.eval_samples / "grid.png").is_file()
    # Each video has its own keyed generator: another batch size gives the same numbers.
    again = evaluate(EvalConfig(run=str(run.root), num_fake=12, steps=2, batch_size=12, num_frames=9))["results"]
    assert again["FVD (12 real / 12 generated)"] == pytest.approx(results["FVD (12 real / 12 generated)"], rel=1e-4)


def test_one_progress_bar_per_phase(run, monkeypatch):
    shown = []

    class Counting(generation.tqdm):
        def __init__(self, *args, **kwargs):
            if not kwargs.get("disable"):
                shown.append(kwargs.get("desc"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(generation, "tqdm", Counting)
    monkeypatch.setattr(metrics, "tqdm", Counting)
    evaluate(EvalConfig(run=str(run.root), num_fake=8, steps=2, batch_size=3, num_frames=9))
    assert shown == ["generating 8 videos", "real clips", "reconstructions"]


def test_benchmark_evaluation_without_detectors_says_where_to_get_them(run, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate_script.main(["--run", str(run.root), "--dataset", "ucf101", "--data-root", str(tmp_path),
                              "--detector-cache", str(tmp_path / "detectors"), "--num-fake", "2"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "i3d_torchscript.pt" in err and "dropbox.com" in err
    with pytest.raises(SystemExit) as exit_info:
        evaluate_script.main(["--run", str(run.root), "--dataset", "sky"])
    assert exit_info.value.code == 2 and "--data-root" in capsys.readouterr().err


def test_report_summarises_a_run(tmp_path):
    layout = RunLayout(tmp_path)
    write_json(layout.vae_run.summary, {"vae": str(layout.vae), "step": 800, "val": {"psnr": 25.5, "ssim": 0.8},
                                        "latents_std": [0.5, 0.25]})
    write_json(layout.manifest, {"clips": 64, "latent_shape": [2, 5, 8, 8], "vae": {"class": "LeanVAE"}})
    write_json(layout.dit_run.summary, {"pipeline": str(layout.pipeline), "step": 2500, "logs": {"loss/total": 0.1}})
    write_json(layout.metrics, {"results": {"FVD (4 real / 4 generated)": 103.0, "IS": {"mean": 5.6, "std": 0.5},
                                            "class accuracy": 0.59}, "detector_note": "offline"})
    record(tmp_path, "1/5 train VAE", 90)
    record(tmp_path, "3/5 train DiT", 30)
    lines = summary(tmp_path).splitlines()
    table = {line[:len("class accuracy") + 40].split("  ")[0]: line for line in lines}
    assert "PSNR 25.50 dB, SSIM 0.8000" in table["VAE reconstruction (held-out clips)"]
    assert "latent std per channel 0.5, 0.25" in table["VAE"]
    assert "(64 clips, latent (2, 5, 8, 8), LeanVAE)" in table["latent cache"]
    assert "2500 steps, final loss 0.1000" in table["DiT pipeline"]
    assert table["IS"].endswith("5.600 ± 0.500") and table["class accuracy"].endswith("0.59")
    assert table["time: 1/5 train VAE"].endswith("1.5 min") and table["time: total"].endswith("2.0 min")
    assert np.isclose(json.loads(layout.stage_times.read_text())["3/5 train DiT"], 30)
