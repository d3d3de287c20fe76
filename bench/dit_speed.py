"""Speed of one Latte DiT training step and one sampling step, ours vs diffusers' LatteTransformer3DModel and,
with --official, the official Latte code.

    python bench/dit_speed.py [--preset Latte-S/2] [--batch-size 1] [--repeats 5] [--warmup 1] [--threads N]
    git clone https://github.com/Vchitect/Latte /tmp/latte
    python bench/dit_speed.py --official /tmp/latte [--official-attention math]   # + `models/latte.py`'s Latte
    python bench/dit_speed.py --precision bf16 ...     # every step under bfloat16 autocast, as the configs train

All models get the same width, depth (diffusers' `num_layers` counts spatial+temporal pairs, ours counts
blocks) and heads, learned sigma and no cross-attention; ours and diffusers' exact-GELU MLPs, the official
Latte its tanh GELU and its `attention_mode` (released default "math"; "flash" is torch's fused attention).
All are timed in --precision (float32, or bfloat16 autocast) on the same inputs with the IDDPM hybrid loss and
fused AdamW, alternating repeats so machine noise hits every model alike.
GFLOP/s counts matmul/attention FLOPs (torch.utils.flop_counter) over the median wall time; "% matmul" is
the median over repeats of a step's GFLOP/s over a 2048x2048 float32 matmul's, measured right before it;
"normalised" compares medians of step time x that matmul speed, which cancels most drift in machine load.
"""

import argparse
import contextlib
import importlib.util
import statistics
import time
from pathlib import Path

import torch
from diffusers import LatteTransformer3DModel

from dit import DIT_PRESETS, LatteDiT, diffusion_loss, training_scheduler
from pipelines.training.monitor import flop_counter

NUM_CLASSES = 101
SHAPES = {  # name: latent (C, F, H, W)
    "lean-VAE 17f 256px": (4, 5, 32, 32),
    "SD-VAE 16f 256px": (4, 16, 32, 32),
}


def build_ours(preset: dict, shape: tuple[int, ...]) -> LatteDiT:
    c, f, h, _ = shape
    return LatteDiT(**preset, in_channels=c, num_frames=f, sample_size=h, num_classes=NUM_CLASSES)


def build_diffusers(preset: dict, shape: tuple[int, ...]) -> LatteTransformer3DModel:
    c, f, h, _ = shape
    hidden, heads = preset["hidden_size"], preset["num_heads"]
    return LatteTransformer3DModel(
        num_attention_heads=heads,
        attention_head_dim=hidden // heads,
        in_channels=c,
        out_channels=2 * c,
        num_layers=preset["depth"] // 2,
        sample_size=h,
        patch_size=preset["patch_size"],
        activation_fn="gelu",
        attention_bias=True,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        cross_attention_dim=None,
        caption_channels=hidden,
        video_length=f,
    )


def build_official(preset: dict, shape: tuple[int, ...], checkout: Path, attention_mode: str) -> torch.nn.Module:
    """`models/latte.py`'s class-conditional Latte from a checkout of Vchitect/Latte (the file alone: the
    package's `__init__` imports its text-to-video dependencies)."""
    spec = importlib.util.spec_from_file_location("official_latte", checkout / "models" / "latte.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c, f, h, _ = shape
    return module.Latte(input_size=h, patch_size=preset["patch_size"], in_channels=c,
                        hidden_size=preset["hidden_size"], depth=preset["depth"], num_heads=preset["num_heads"],
                        num_frames=f, num_classes=NUM_CLASSES, learn_sigma=True, extras=2,
                        attention_mode=attention_mode)


class Runner:
    """One model with its optimizer and fixed inputs; `train_step` and `sample_step` are what gets timed.
    kind: "ours", "diffusers" or "official" (which takes and returns (B, F, C, H, W) videos)."""

    def __init__(self, model: torch.nn.Module, kind: str, batch: int, shape: tuple[int, ...], bf16: bool):
        g = torch.Generator().manual_seed(0)
        self.model, self.kind = model, kind
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, fused=True)
        self.scheduler = training_scheduler()
        self.x0 = torch.randn(batch, *shape, generator=g)
        self.noise = torch.randn(batch, *shape, generator=g)
        self.t = torch.randint(0, 1000, (batch,), generator=g)
        self.x_t = self.scheduler.add_noise(self.x0, self.noise, self.t)
        self.labels = torch.randint(0, NUM_CLASSES, (batch,), generator=g)
        # diffusers' Latte always runs its caption projection; one token, unused without cross-attention.
        caption_channels = model.config.get("caption_channels") if kind == "diffusers" else 1
        self.caption = torch.randn(batch, 1, caption_channels, generator=g)
        self.x_t_frames_first = self.x_t.transpose(1, 2).contiguous()  # (B, F, C, H, W)
        self.params = sum(p.numel() for p in model.parameters())
        self.bf16 = bf16

    def precision(self):
        return torch.autocast(self.x0.device.type, torch.bfloat16) if self.bf16 else contextlib.nullcontext()

    def forward(self) -> torch.Tensor:
        if self.kind == "ours":
            return self.model(self.x_t, self.t, self.labels).sample
        if self.kind == "official":
            return self.model(self.x_t_frames_first, self.t, self.labels).transpose(1, 2)  # (B, 2C, F, H, W)
        return self.model(self.x_t, self.t, encoder_hidden_states=self.caption).sample

    def train_step(self) -> None:
        self.model.train()
        with self.precision():
            out = self.forward()
        loss = diffusion_loss(out.float(), self.x0, self.noise, self.t, self.scheduler)["loss"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def sample_step(self) -> None:
        self.model.eval()
        with torch.no_grad(), self.precision():
            self.forward()

    def flops(self, step) -> int:
        with flop_counter() as counter:
            step()
        return counter.get_total_flops()


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class MatmulProbe:
    """float32 2048x2048 matmul speed, measured next to every timed step: the machine is shared, so the
    throughput available drifts during a run and each step is compared with what was available just then."""

    def __init__(self, size: int = 2048):
        self.a, self.b = torch.randn(size, size), torch.randn(size, size)
        self.flops = 2 * size**3
        for _ in range(3):
            self.a @ self.b

    def gflops(self, repeats: int = 3) -> float:
        return self.flops / statistics.median(seconds(lambda: self.a @ self.b) for _ in range(repeats)) / 1e9


def bench_shape(preset: dict, shape, batch: int, warmup: int, repeats: int, probe: MatmulProbe, args) -> dict:
    builders = {"ours": lambda: build_ours(preset, shape), "diffusers": lambda: build_diffusers(preset, shape)}
    if args.official:
        builders["official"] = lambda: build_official(preset, shape, args.official, args.official_attention)
    runners = {}
    for kind, build in builders.items():
        torch.manual_seed(0)
        runners[kind] = Runner(build(), kind, batch, shape, args.precision == "bf16")
    results = {}
    for step_name in ("train", "sample"):
        runs = {name: [] for name in runners}  # (seconds, matmul GFLOP/s just before)
        for i in range(warmup + repeats):
            for name, runner in runners.items():  # alternate so load spikes hit both models alike
                reference = probe.gflops()
                dt = seconds(getattr(runner, f"{step_name}_step"))
                if i >= warmup:
                    runs[name].append((dt, reference))
        for name, runner in runners.items():
            flops = runner.flops(getattr(runner, f"{step_name}_step"))
            median = statistics.median(dt for dt, _ in runs[name])
            results[name, step_name] = dict(
                seconds=median,
                gflop=flops / 1e9,
                gflops=flops / median / 1e9,
                fraction=statistics.median(flops / 1e9 / dt / ref for dt, ref in runs[name]),
                matmul=statistics.median(ref for _, ref in runs[name]),
                # step time in units of the machine's speed at that moment: steadier when the load drifts
                normalised=statistics.median(dt * ref for dt, ref in runs[name]),
                params=runner.params,
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="Latte-S/2", choices=sorted(DIT_PRESETS))
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--official", type=Path, help="a checkout of github.com/Vchitect/Latte to time beside")
    parser.add_argument("--official-attention", default="math", choices=["math", "flash"],
                        help="the official Latte's attention_mode (its released default: math)")
    parser.add_argument("--precision", default="float32", choices=["float32", "bf16"])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    args = parser.parse_args()
    if min(args.batch_size, args.repeats, args.threads) < 1 or args.warmup < 0:
        parser.error("--batch-size, --repeats and --threads must be >= 1, --warmup >= 0")
    if args.official and not (args.official / "models" / "latte.py").is_file():
        parser.error(f"--official {args.official}: no models/latte.py there; clone github.com/Vchitect/Latte")
    torch.set_num_threads(args.threads)
    preset = DIT_PRESETS[args.preset]

    probe = MatmulProbe()
    all_results = {name: bench_shape(preset, SHAPES[name], args.batch_size, args.warmup, args.repeats, probe, args)
                   for name in args.shapes}

    threads = torch.get_num_threads()
    print(f"{args.preset}, batch {args.batch_size}, {args.precision}, {threads} threads, torch {torch.__version__}")
    print_table(all_results)


def print_table(all_results: dict) -> None:
    """One row per model; a reference's row holds ours' time over its own (raw and normalised)."""
    columns = ["latents (C x F x H x W)", "step", "model", "params", "GFLOP", "ms", "GFLOP/s", "matmul GFLOP/s",
               "% matmul", "ours/this", "ours/this normalised"]
    rows = []
    for shape_name, results in all_results.items():
        label = f"{shape_name} ({' x '.join(map(str, SHAPES[shape_name]))})"
        for step in ("train", "sample"):
            ours = results["ours", step]
            for model in [kind for kind, s in results if s == step]:
                r = results[model, step]
                ratios = [f"{ours[key] / r[key]:.3f}" if model != "ours" else "" for key in ("seconds", "normalised")]
                rows.append([label, step, model, f"{r['params'] / 1e6:.2f}M", f"{r['gflop']:.1f}",
                             f"{r['seconds'] * 1e3:.1f}", f"{r['gflops']:.1f}", f"{r['matmul']:.1f}",
                             f"{100 * r['fraction']:.1f}%", *ratios])
    widths = [max(len(cell) for cell in column) for column in zip(columns, *rows)]
    for i, row in enumerate([columns, *rows]):
        cells = [cell.ljust(w) if j < 3 else cell.rjust(w) for j, (cell, w) in enumerate(zip(row, widths))]
        print("| " + " | ".join(cells) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


if __name__ == "__main__":
    main()
