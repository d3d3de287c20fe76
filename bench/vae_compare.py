"""The bundled VAEs on equal terms: for LeanVAE, WF-VAE and IV-VAE (their CPU defaults: 4x8x8 compression, 4 latent
channels, IV-VAE's small preset 8), the same recipe with the same wall-clock budget per stage, on the built-in
synthetic data set.

    nice python bench/vae_compare.py                         # 2 minutes of VAE training each, the default DiT
    python bench/vae_compare.py --vae-minutes 3 --models lean wfvae
    python bench/vae_compare.py dit:max_steps=1000           # any train_dit.py override (prefix dit:)
    python bench/vae_compare.py --models lean --vae /models/Wan2.1-T2V-1.3B-Diffusers/vae  # a VAE you bring

For each VAE: train it for `--vae-minutes` (its steps/s measured first on 10 steps, the steps set to fill the
budget, so its learning-rate schedule still ends at the end), reconstruct the held-out real clips of
`bench/vae_recon.py` (PSNR, SSIM against the 4x8x8 block-mean baseline), time encode and decode of 4 clips,
cache the latents, train the default DiT (configs/dit/default.yaml: the same steps for every VAE, on the
same latent grid), sample 256 videos and score them (class accuracy with the project's classifier,
trained once and shared; FVD with its floor and each VAE's ceiling). A `--vae` folder (a trained or imported VAE,
e.g. a diffusers Wan, CogVideoX, HunyuanVideo or LTX-Video VAE) skips the training and gets the rest. Prints one
markdown table, like Table 2 of the WF-VAE paper. Run folders are `<output-dir>/<model>` (train.sh's layout), so `sample.py --run` works.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

from pipelines.common.files import read_json
from pipelines.common.layout import RunLayout
from pipelines.evaluation.reconstruction import reconstruct, video_psnr, video_ssim
from vae import load_autoencoder
from vae_recon import CLIPS, block_mean_baseline, real_clips  # bench/, beside this script

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"lean": "configs/vae/default.yaml", "wfvae": "configs/vae/wfvae-default.yaml",
          "ivvae": "configs/vae/ivvae-default.yaml"}
CALIBRATION_STEPS = 10


def run(*argv) -> float:
    """Run a stage (`python *argv` in the project folder) as its own process, as train.sh does: accelerate's
    state is per process. Returns seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, *map(str, argv)], check=True, cwd=ROOT)
    return time.perf_counter() - start


def train_vae_for(model: str, layout: RunLayout, minutes: float) -> tuple[int, float]:
    """Train `model`'s VAE for about `minutes` (steps from a timed 10-step run); returns (steps, seconds)."""
    if not (layout.vae / "config.json").is_file():
        config = ["--config", ROOT / MODELS[model], "report_to=none"]
        probe = layout.root / "calibration"
        run("train_vae.py", *config, f"output_dir={probe}", f"max_steps={CALIBRATION_STEPS}", "checkpoint_every=0",
            "val_every=0", "sample_every=0", "stats_clips=0")
        per_step = read_json(probe / "train_summary.json")["seconds"] / CALIBRATION_STEPS
        steps = max(CALIBRATION_STEPS, round(minutes * 60 / per_step))
        run("train_vae.py", *config, f"output_dir={layout.vae_run.root}", f"max_steps={steps}")
    summary = read_json(layout.vae_run.summary)
    return summary["step"], summary["seconds"]


@torch.no_grad()
def reconstruction_and_speed(vae_dir: Path) -> dict:
    vae = load_autoencoder(vae_dir).eval()
    clips = torch.cat([real_clips(path) for path in CLIPS])  # (N, 3, 17, 64, 64)
    recon, base = reconstruct(vae, clips), block_mean_baseline(clips)
    times = {}
    for name, fn in (("encode", lambda x: vae.encode(x).latent_dist.mean), ("decode", vae.decode)):
        x = clips[:4] if name == "encode" else vae.encode(clips[:4]).latent_dist.mean
        fn(x)  # warm-up
        start = time.perf_counter()
        fn(x)
        times[name] = time.perf_counter() - start
    return {"params": sum(p.numel() for p in vae.parameters()) / 1e6, "psnr": video_psnr(clips, recon).mean().item(),
            "ssim": video_ssim(clips, recon).mean().item(), "base_psnr": video_psnr(clips, base).mean().item(),
            "encode": times["encode"], "decode": times["decode"]}


def generate_and_score(layout: RunLayout, vae: Path, classifier: Path, dit_overrides: list[str]) -> dict:
    """Cache with `vae`, train the default DiT, evaluate; returns the scores and the DiT's minutes."""
    if not layout.manifest.is_file():
        run("cache_latents.py", f"vae={vae}", f"output_dir={layout.latents}")
    if not (layout.pipeline / "model_index.json").is_file():
        run("train_dit.py", f"output_dir={layout.dit_run.root}", f"vae={vae}", f"cache_dir={layout.latents}",
            "report_to=none", *dit_overrides)
    if not layout.classifier.exists():
        layout.classifier_run.root.mkdir(parents=True, exist_ok=True)
        layout.classifier.symlink_to(classifier.resolve(), target_is_directory=True)
    if not layout.metrics.is_file():
        run("evaluate.py", "--run", layout.root)
    results = read_json(layout.metrics)["results"]
    fvd = next(key for key in results if key.startswith("FVD ("))
    return {"accuracy": results["class accuracy"], "fvd": results[fvd],
            "floor": results["FVD floor (real vs other real clips)"],
            "ceiling": results["FVD ceiling (VAE reconstructions)"],
            "dit_minutes": read_json(layout.dit_run.summary)["seconds"] / 60}


def shared_classifier(out: Path) -> Path:
    """train.sh's classifier (its recipe, so the detector cache hands the same one to both): one scale."""
    layout = RunLayout(out / "shared")
    if not (layout.classifier / "config.json").is_file():
        run("-m", "pipelines.training.classifier_trainer", "--config", ROOT / "configs/classifier/default.yaml",
            f"output_dir={layout.classifier_run.root}", "report_to=none")
    return layout.classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--vae", nargs="*", type=Path, default=[], help="trained or imported VAE folders to put "
                        "beside them (not trained here; the row is named after the folder)")
    parser.add_argument("--vae-minutes", type=float, default=2.0, help="VAE training budget per model")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/vae_compare"))
    parser.add_argument("dit", nargs="*", help="train_dit.py overrides as dit:key=value")
    args = parser.parse_args()
    dit_overrides = [item.removeprefix("dit:") for item in args.dit]
    out = args.output_dir.resolve()
    classifier = shared_classifier(out)
    rows = {}
    for model in args.models:
        layout = RunLayout(out / model)
        steps, seconds = train_vae_for(model, layout, args.vae_minutes)
        rows[model] = {"trained": f"{steps} ({seconds / 60:.1f})", **reconstruction_and_speed(layout.vae),
                       **generate_and_score(layout, layout.vae, classifier, dit_overrides)}
    for folder in args.vae:
        name = folder.resolve().name if folder.name != "vae" else folder.resolve().parent.name
        rows[name] = {"trained": "brought", **reconstruction_and_speed(folder),
                      **generate_and_score(RunLayout(out / name), folder.resolve(), classifier, dit_overrides)}
    print(f"\n{len(CLIPS)} real videos' 17-frame 64x64 clips for reconstruction; 256 generated videos (16 per class) "
          f"for class accuracy and FVD; VAE budget {args.vae_minutes} min each\n")
    print("| VAE | params (M) | VAE steps (min) | PSNR / SSIM (real clips) | baseline PSNR | encode / decode 4 clips (s) "
          "| DiT (min) | class accuracy | FVD (floor / ceiling) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model, r in rows.items():
        print(f"| {model} | {r['params']:.2f} | {r['trained']} | {r['psnr']:.2f} / {r['ssim']:.4f} | "
              f"{r['base_psnr']:.2f} | {r['encode']:.2f} / {r['decode']:.2f} | {r['dit_minutes']:.1f} | {r['accuracy']:.1%} | "
              f"{r['fvd']:.1f} ({r['floor']:.1f} / {r['ceiling']:.1f}) |")


if __name__ == "__main__":
    main()
