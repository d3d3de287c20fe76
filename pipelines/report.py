"""The end-of-run summary of train.sh, and the stage-time bookkeeping behind it.

    python -m pipelines.report record runs/default/stage_times.json "1/5 train VAE" 312
    python -m pipelines.report summary runs/default
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def record(times_file: str | Path, stage: str, seconds: float) -> None:
    """Add a stage's wall time to the run's times file (atomically)."""
    path = Path(times_file)
    times = _read(path)
    times[stage] = float(seconds)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(times, indent=2))
    tmp.replace(path)


def summary(run: str | Path) -> str:
    """A table of where everything was written and what it measured."""
    run = Path(run)
    vae, cache = _read(run / "vae" / "train_summary.json"), _read(run / "latents" / "manifest.json")
    dit, metrics = _read(run / "dit" / "train_summary.json"), _read(run / "eval" / "metrics.json")
    times = _read(run / "stage_times.json")
    rows = [("run folder", str(run))]
    if vae:
        val = vae.get("val", {})
        rows += [("VAE", f"{vae.get('vae')}  ({vae.get('step')} steps)"),
                 ("VAE reconstruction (held-out clips)",
                  f"PSNR {val.get('psnr', float('nan')):.2f} dB, SSIM {val.get('ssim', float('nan')):.4f}")]
    if cache:
        rows += [("latent cache", f"{run / 'latents'}  ({cache['clips']} clips, latent {tuple(cache['latent_shape'])}, "
                                  f"scaling factor {cache['stats']['scaling_factor']:.4f})")]
    if dit:
        rows += [("DiT pipeline", f"{dit.get('pipeline')}  ({dit.get('step')} steps, final loss "
                                  f"{dit.get('logs', {}).get('loss/total', float('nan')):.4f})")]
    if metrics:
        rows += [(f"{name}", _format_metric(value)) for name, value in metrics.get("results", {}).items()]
        rows += [("metrics", f"{run / 'eval' / 'metrics.json'}  ({metrics.get('detector_note', '')})"),
                 ("samples", str(metrics.get("samples_dir", "")))]
    for stage, seconds in times.items():
        rows.append((f"time: {stage}", f"{seconds / 60:.1f} min"))
    if times:
        rows.append(("time: total", f"{sum(times.values()) / 60:.1f} min"))
    width = max(len(name) for name, _ in rows)
    lines = [f"{'':-<{width + 2}}", *(f"{name:<{width}}  {value}" for name, value in rows), f"{'':-<{width + 2}}"]
    return "\n".join(lines)


def _format_metric(value) -> str:
    if isinstance(value, dict) and "mean" in value:
        return f"{value['mean']:.3f} ± {value['std']:.3f}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main(argv: Optional[list[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 4 and argv[0] == "record":
        record(argv[1], argv[2], float(argv[3]))
    elif len(argv) == 2 and argv[0] == "summary":
        print(summary(argv[1]))
    else:
        sys.exit("usage: python -m pipelines.report record TIMES_FILE STAGE SECONDS | summary RUN_DIR")


if __name__ == "__main__":
    main()
