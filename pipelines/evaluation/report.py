"""The end-of-run summary of train.sh, and the stage bookkeeping behind it: each finished stage's wall time, the
command that made it and the contents of the files it named (its config), so that a re-run skips a finished stage
only if it would run the same command on the same files.

    python -m pipelines.evaluation.report record runs/default "1/5 train VAE" 312 train_vae.py output_dir=...
    python -m pipelines.evaluation.report plan runs/default "2/5 cache latents" runs/default/latents/manifest.json \
        "1/5 train VAE" cache_latents.py vae=...     # exit 0: skip it, 10: run it, 2: refused
    python -m pipelines.evaluation.report summary runs/default
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..common.errors import ConfigError
from ..common.files import read_json, write_json
from ..common.layout import RunLayout


def record(run: str | Path, stage: str, seconds: float, command: Sequence[str] = ()) -> None:
    """Add a finished stage's wall time, its command, the files it named and its place in the order of finishing
    (atomically)."""
    layout = RunLayout(run)
    records = read_json(layout.stage_commands)
    finished = 1 + max((r["finished"] for r in records.values()), default=0)
    entry = {"command": _portable(run, command), "files": _file_digests(run, command), "finished": finished}
    write_json(layout.stage_commands, {**records, stage: entry})
    write_json(layout.stage_times, {**read_json(layout.stage_times), stage: float(seconds)})


def plan(run: str | Path, stage: str, marker: str | Path, inputs: Sequence[str], command: Sequence[str]) -> str:
    """"skip" a stage that finished (`marker` there, its time recorded) with this `command` after every stage in
    `inputs`; "run" it otherwise; ConfigError if it finished with another command, or with a file it names (its
    config) edited since (never silently reused)."""
    layout = RunLayout(run)
    records = read_json(layout.stage_commands)
    if not (Path(marker).exists() and stage in read_json(layout.stage_times)):
        return "run"
    if stage not in records:  # finished before commands were recorded
        return "skip"
    then, now = records[stage]["command"], _portable(run, command)
    if then != now:
        added = [arg for arg in now if arg not in then] or ["-"]
        dropped = [arg for arg in then if arg not in now] or ["-"]
        raise ConfigError(f"stage '{stage}' of {run} finished with other settings (now {' '.join(added)}; then "
                          f"{' '.join(dropped)}): use another RUN, or remove that stage's output to redo it")
    digests = _file_digests(run, command)
    edited = [name for name, digest in records[stage].get("files", {}).items() if digests.get(name, digest) != digest]
    if edited:
        raise ConfigError(f"stage '{stage}' of {run} finished with other settings ({', '.join(edited)} edited since): "
                          "use another RUN, or remove that stage's output to redo it")
    redone = [name for name in inputs if records.get(name, {}).get("finished", 0) > records[stage]["finished"]]
    return "run" if redone else "skip"


def _portable(run: str | Path, command: Sequence[str]) -> list[str]:
    """`command` without its launcher (python, accelerate launch ...) and with the run folder as <run>: the same
    stage launched on other hardware, or in a copied run folder, is the same stage."""
    command = list(command)
    start = next((i for i, arg in enumerate(command) if arg.endswith(".py") or arg == "-m"), 0)
    root = str(run).rstrip("/")

    def portable(arg: str) -> str:
        key, sep, value = arg.rpartition("=")
        return key + sep + ("<run>" + value[len(root):] if value == root or value.startswith(root + "/") else value)
    return [portable(arg) for arg in command[start:]]


CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def _file_digests(run: str | Path, command: Sequence[str]) -> dict[str, str]:
    """The sha256 of every config file `command` names, as an argument or a key=value's value, keyed as `_portable`
    writes it: a config file edited between two runs of the same command is another command. Weights files are
    not read here (they can be gigabytes, and the stages check the weights they are given themselves). A deleted
    file drops out: the stage's output stands, and running the stage would fail on the missing file anyway."""
    portable = _portable(run, command)
    digests = {}
    for arg, name in zip(list(command)[len(command) - len(portable):], portable):
        path = Path(arg.rpartition("=")[2])
        if path.suffix in CONFIG_SUFFIXES and path.is_file():
            digests[name.rpartition("=")[2]] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def _vae_rows(vae: dict, where: Path) -> list[tuple[str, str]]:
    val = vae.get("val", {})
    std = vae.get("latents_std")
    stds = ", ".join(f"{s:.3g}" for s in (std if isinstance(std, list) else [std])) if std is not None else "?"
    return [("VAE", f"{where}  ({vae.get('step')} steps, latent std per channel {stds})"),
            ("VAE reconstruction (held-out clips)",
             f"PSNR {val.get('psnr', float('nan')):.2f} dB, SSIM {val.get('ssim', float('nan')):.4f}")]


def summary(run: str | Path) -> str:
    """A table of where everything was written and what it measured."""
    layout = RunLayout(run)
    vae, cache = read_json(layout.vae_run.summary), read_json(layout.manifest)
    dit, metrics = read_json(layout.dit_run.summary), read_json(layout.metrics)
    times = read_json(layout.stage_times)
    # Paths from the layout, not the summaries: those name where the run was trained, and it may have moved.
    rows = [("run folder", str(layout.root))] + (_vae_rows(vae, layout.vae) if vae else [])
    if cache:
        rows.append(("latent cache", f"{layout.latents}  ({cache['clips']} clips, latent "
                                     f"{tuple(cache['latent_shape'])}, {cache['vae'].get('class', '?')})"))
    if dit:
        rows.append(("DiT pipeline", f"{layout.pipeline}  ({dit.get('step')} steps, final loss "
                                     f"{dit.get('logs', {}).get('loss/total', float('nan')):.4f})"))
    if metrics:
        rows += [(name, _format_metric(value)) for name, value in metrics.get("results", {}).items()]
        rows += [("metrics", f"{layout.metrics}  ({metrics.get('detector_note', '')})"),
                 ("samples", str(layout.eval_samples))]
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
    if len(argv) >= 4 and argv[0] == "record":
        record(argv[1], argv[2], float(argv[3]), argv[4:])
    elif len(argv) >= 5 and argv[0] == "plan":  # exit status for train.sh: 0 skip, 10 run, 2 refused
        inputs = [name for name in argv[4].split("|") if name]
        try:
            decision = plan(argv[1], argv[2], argv[3], inputs, argv[5:])
        except ConfigError as err:  # one line, and no torch import (exit_on_user_error's) for a bookkeeping step
            print(f"train.sh: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        raise SystemExit(0 if decision == "skip" else 10)
    elif len(argv) == 2 and argv[0] == "summary":
        print(summary(argv[1]))
    else:
        print("usage: python -m pipelines.evaluation.report record RUN_DIR STAGE SECONDS [COMMAND...] | "
              "plan RUN_DIR STAGE MARKER 'INPUT|INPUT' COMMAND... | summary RUN_DIR", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main()
