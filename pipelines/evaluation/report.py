"""The end-of-run summary of train.sh, and the stage-time bookkeeping behind it.

    python -m pipelines.evaluation.report record runs/default "1/5 train VAE" 312
    python -m pipelines.evaluation.report summary runs/default
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from ..common.files import read_json, write_json
from ..common.layout import RunLayout


def record(run: str | Path, stage: str, seconds: float) -> None:
    """Add a stage's wall time to the run's times file (atomically)."""
    path = RunLayout(run).stage_times
    write_json(path, {**read_json(path), stage: float(seconds)})


def _vae_rows(vae: dict) -> list[tuple[str, str]]:
    val = vae.get("val", {})
    std = vae.get("latents_std")
    stds = ", ".join(f"{s:.3g}" for s in (std if isinstance(std, list) else [std])) if std is not None else "?"
    return [("VAE", f"{vae.get('vae')}  ({vae.get('step')} steps, latent std per channel {stds})"),
            ("VAE reconstruction (held-out clips)",
             f"PSNR {val.get('psnr', float('nan')):.2f} dB, SSIM {val.get('ssim', float('nan')):.4f}")]


def summary(run: str | Path) -> str:
    """A table of where everything was written and what it measured."""
    layout = RunLayout(run)
    vae, cache = read_json(layout.vae_run.summary), read_json(layout.manifest)
    dit, metrics = read_json(layout.dit_run.summary), read_json(layout.metrics)
    times = read_json(layout.stage_times)
    rows = [("run folder", str(layout.root))] + (_vae_rows(vae) if vae else [])
    if cache:
        rows.append(("latent cache", f"{layout.latents}  ({cache['clips']} clips, latent "
                                     f"{tuple(cache['latent_shape'])}, {cache['vae'].get('class', '?')})"))
    if dit:
        rows.append(("DiT pipeline", f"{dit.get('pipeline')}  ({dit.get('step')} steps, final loss "
                                     f"{dit.get('logs', {}).get('loss/total', float('nan')):.4f})"))
    if metrics:
        rows += [(name, _format_metric(value)) for name, value in metrics.get("results", {}).items()]
        rows += [("metrics", f"{layout.metrics}  ({metrics.get('detector_note', '')})"),
                 ("samples", str(metrics.get("samples_dir", "")))]
    rows += [(f"time: {stage}", f"{seconds / 60:.1f} min") for stage, seconds in times.items()]
    if times:
        rows.append(("time: total", f"{sum(times.values()) / 60:.1f} min"))
    width = max(len(name) for name, _ in rows)
    return "\n".join([f"{'':-<{width + 2}}", *(f"{name:<{width}}  {value}" for name, value in rows), f"{'':-<{width + 2}}"])


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
        print("usage: python -m pipelines.evaluation.report record RUN_DIR STAGE SECONDS | summary RUN_DIR",
              file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main()
