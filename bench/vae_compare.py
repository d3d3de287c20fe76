"""The bundled VAEs on equal terms: for LeanVAE, WF-VAE and IV-VAE (their CPU defaults: 4 latent channels, 4x8x8
compression), the same recipe with the same wall-clock budget per stage, on the built-in synthetic data set.

    nice python bench/vae_compare.py                         # 2 minutes of VAE training each, the default DiT
    python bench/vae_compare.py --vae-minutes 3 --models lean wfvae
    python bench/vae_compare.py dit:max_steps=1000           # any train_dit.py override (prefix dit:)

For each VAE: train it for `--vae-minutes` (its steps/s measured first on 10 steps, the steps set to fill the
budget, so its learning-rate schedule still ends at the end), reconstruct the held-out real clips of
`bench/vae_recon.py` (PSNR, SSIM against the 4x8x8 block-mean baseline), time encode and decode of 4 clips,
cache the latents, train the default DiT (configs/dit/default.yaml: the same steps for every VAE, since the
latents have the same shape), sample 256 videos and score them (class accuracy with the project's classifier,
trained once and shared; FVD with its floor and each VAE's ceiling). Prints one markdown table, like Table 2
of the WF-VAE paper. Run folders are `<output-dir>/<model>` (train.sh's layout), so `sample.py --run` works.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from vae_recon import CLIPS, block_mean_baseline, real_clips  # noqa: E402

from pipelines.common.cli import parse_cli  # noqa: E402
from pipelines.common.files import read_json  # noqa: E402
from pipelines.common.layout import RunLayout  # noqa: E402
from pipelines.evaluation.generation import EvalConfig, evaluate  # noqa: E402
from pipelines.evaluation.reconstruction import reconstruct, video_psnr, video_ssim  # noqa: E402
from pipelines.training import classifier_trainer, dit_trainer, vae_trainer  # noqa: E402
from pipelines.training.latent_cache import LatentCacheConfig, build_cache  # noqa: E402
from vae import load_autoencoder  # noqa: E402

MODELS = {"lean": "configs/vae/default.yaml", "wfvae": "configs/vae/wfvae-default.yaml",
          "ivvae": "configs/vae/ivvae-default.yaml"}
CALIBRATION_STEPS = 10


def vae_config(model: str, out: Path, **keys) -> vae_trainer.VAETrainConfig:
    overrides = [f"output_dir={out}", "report_to=none", *[f"{k}={v}" for k, v in keys.items()]]
    return parse_cli(vae_trainer.VAETrainConfig, overrides, default_config=ROOT / MODELS[model])


def train_vae_for(model: str, run: RunLayout, minutes: float) -> tuple[int, float]:
    """Train `model`'s VAE for about `minutes`; returns (steps, seconds)."""
    if (run.vae / "config.json").is_file():
        summary = read_json(run.vae_run.summary)
        return summary["step"], summary["seconds"]
    probe = vae_trainer.train(vae_config(model, run.root / "calibration", max_steps=CALIBRATION_STEPS,
                                         checkpoint_every=0, val_every=0, sample_every=0, stats_clips=0))
    steps = max(CALIBRATION_STEPS, round(minutes * 60 * CALIBRATION_STEPS / probe["seconds"]))
    summary = vae_trainer.train(vae_config(model, run.vae_run.root, max_steps=steps))
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


def generate_and_score(run: RunLayout, classifier: Path, dit_overrides: list[str]) -> dict:
    if not (run.manifest).is_file():
        build_cache(LatentCacheConfig(vae=str(run.vae), output_dir=str(run.latents)))
    if not (run.pipeline / "model_index.json").is_file():
        start = time.perf_counter()
        dit_trainer.train(parse_cli(dit_trainer.DiTTrainConfig, [
            f"output_dir={run.dit_run.root}", f"vae={run.vae}", f"cache_dir={run.latents}", "report_to=none",
            *dit_overrides], default_config=dit_trainer.DEFAULT_CONFIG))
        print(f"DiT: {(time.perf_counter() - start) / 60:.1f} min")
    if not run.classifier.exists():
        run.classifier_run.root.mkdir(parents=True, exist_ok=True)
        run.classifier.symlink_to(classifier.resolve(), target_is_directory=True)
    results = evaluate(EvalConfig(run=str(run.root)))["results"]
    fvd = next(key for key in results if key.startswith("FVD ("))
    return {"accuracy": results["class accuracy"], "fvd": results[fvd],
            "floor": results["FVD floor (real vs other real clips)"],
            "ceiling": results["FVD ceiling (VAE reconstructions)"]}


def shared_classifier(out: Path) -> Path:
    layout = RunLayout(out / "shared")
    if not (layout.classifier / "config.json").is_file():
        classifier_trainer.train(parse_cli(classifier_trainer.ClassifierTrainConfig,
                                           [f"output_dir={layout.classifier_run.root}", "report_to=none"],
                                           default_config=classifier_trainer.DEFAULT_CONFIG))
    return layout.classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--vae-minutes", type=float, default=2.0, help="VAE training budget per model")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/vae_compare"))
    parser.add_argument("dit", nargs="*", help="train_dit.py overrides as dit:key=value")
    args = parser.parse_args()
    dit_overrides = [item.removeprefix("dit:") for item in args.dit]
    classifier = shared_classifier(args.output_dir)
    rows = {}
    for model in args.models:
        run = RunLayout(args.output_dir / model)
        steps, seconds = train_vae_for(model, run, args.vae_minutes)
        rows[model] = {"steps": steps, "minutes": seconds / 60, **reconstruction_and_speed(run.vae),
                       **generate_and_score(run, classifier, dit_overrides)}
    print(f"\n{len(CLIPS)} real videos' 17-frame 64x64 clips for reconstruction; 256 generated videos (16 per class) "
          f"for class accuracy and FVD; VAE budget {args.vae_minutes} min each\n")
    print("| VAE | params (M) | VAE steps (min) | PSNR / SSIM (real clips) | baseline PSNR | encode / decode 4 clips (s) "
          "| class accuracy | FVD (floor / ceiling) |")
    print("|---|---|---|---|---|---|---|---|")
    for model, r in rows.items():
        print(f"| {model} | {r['params']:.2f} | {r['steps']} ({r['minutes']:.1f}) | {r['psnr']:.2f} / {r['ssim']:.4f} | "
              f"{r['base_psnr']:.2f} | {r['encode']:.2f} / {r['decode']:.2f} | {r['accuracy']:.1%} | "
              f"{r['fvd']:.1f} ({r['floor']:.1f} / {r['ceiling']:.1f}) |")


if __name__ == "__main__":
    main()
