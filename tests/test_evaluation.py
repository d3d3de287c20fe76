"""evaluate.py / pipelines.evaluation on a tiny saved run, and the train.sh summary report."""

import json

import pytest
import torch

import evaluate as evaluate_script
from dit import DIT_PRESETS, LatteDiT
from pipelines.classifier import VideoClassifier, save_classifier
from pipelines.evaluation import EvalConfig, evaluate
from pipelines.pipeline_latte import LatteVideoPipeline, make_scheduler
from pipelines.report import record, summary
from vae import VAE_PRESETS, LeanVAE


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    dit = LatteDiT(**DIT_PRESETS["Latte-tiny"], in_channels=4, num_frames=3, sample_size=2, num_classes=4)
    vae = LeanVAE(**VAE_PRESETS["lean-tiny"])
    LatteVideoPipeline(dit, vae, make_scheduler("ddpm"), class_names=list("abcd")).save_pretrained(
        root / "dit" / "pipeline")
    save_classifier(VideoClassifier(num_classes=4, widths=(8, 16), resolution=16), root / "classifier")
    return root


def test_synthetic_evaluation_writes_labelled_metrics_and_samples(run):
    report = evaluate(EvalConfig(run=str(run), num_fake=12, steps=2, batch_size=5, num_frames=9))
    results = report["results"]
    assert set(results) == {"FVD (12 real / 12 generated)", "IS", "class accuracy",
                            "class accuracy of VAE reconstructions", "chance"}
    assert results["FVD (12 real / 12 generated)"] >= 0 and 1.0 <= results["IS"]["mean"] <= 4.0
    assert 0.0 <= results["class accuracy"] <= 1.0 and results["chance"] == 0.25
    assert 0.0 <= results["class accuracy of VAE reconstructions"] <= 1.0
    assert "not I3D" in report["detector_note"]
    assert json.loads((run / "eval" / "metrics.json").read_text())["results"] == results
    assert len(list((run / "eval" / "samples").glob("class_*.mp4"))) == 8  # 2 per class
    assert (run / "eval" / "samples" / "grid.png").is_file()


def test_benchmark_evaluation_without_detectors_says_where_to_get_them(run, tmp_path, capsys):
    code = evaluate_script.main(["--run", str(run), "--dataset", "ucf101", "--data-root", str(tmp_path),
                                 "--detector-cache", str(tmp_path / "detectors"), "--num-fake", "2"])
    assert code == 2
    err = capsys.readouterr().err
    assert "i3d_torchscript.pt" in err and "dropbox.com" in err


def test_report_summarises_a_run(run, tmp_path):
    record(run / "stage_times.json", "1/5 train VAE", 90)
    record(run / "stage_times.json", "3/5 train DiT", 30)
    text = summary(run)
    assert "time: total" in text and "2.0 min" in text
    assert "class accuracy" in text
