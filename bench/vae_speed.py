"""Video VAE speed and memory, side by side with reference implementations on the same clip.

    python bench/vae_speed.py                      # lean-4ch vs AutoencoderKLWan, 1x3x17x256x256 (BENCHMARKS.md)
    python bench/vae_speed.py --size 128 --skip-wan  # a quicker look
    python bench/vae_speed.py --model wfvae-l-16ch --frames 33 --skip-wan --official /tmp/wfvae --also lean-4ch \\
        --stream-frames 33 65 129                  # WF-VAE vs the official code (a checkout of PKU-YuanGroup/WF-VAE)
    python bench/vae_speed.py --model ivvae-z16 --frames 33 --skip-wan --official /tmp/ivvae --also lean-4ch \
        --stream-frames 33 65 129                  # IV-VAE vs the official code (a checkout of ali-vilab/iv-vae)
    python bench/vae_speed.py --skip-wan --official /tmp/leanvae --stream-frames 17  # LeanVAE vs the official code
                                                   # (westlake-repl/LeanVAE; it imports beartype, PyWavelets)
    python bench/vae_speed.py --model AutoencoderKLLTXVideo --skip-wan  # a diffusers video VAE at its released
                                                   # size (random weights), or --model <a diffusers VAE folder>

Prints parameters, multiply-accumulates (torch's FlopCounterMode), encode / decode seconds (median of --repeats)
and peak memory for the model (--model, a preset; random weights unless --vae) in float32 and in bfloat16 (weights
cast by `to_inference_dtype`, as diffusers' `torch_dtype` does, channels-last where the model gains), for --also presets of ours, and for the references: AutoencoderKLWan (default config, random weights) and, with
--official, the official WF-VAE class holding the same weights; achieved GFLOP/s against this machine's float32
matmul GFLOP/s measured in the same run; PSNR of each reconstruction of a real clip (meaningful with --vae, a
trained model); and the peak memory of causal-cache chunked decoding at --stream-frames. Peak memory is measured
in a fresh subprocess per cell (CUDA: max_memory_allocated; CPU: resident set size sampled every millisecond,
with glibc told to unmap freed tensors).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import types
from contextlib import nullcontext
from pathlib import Path

import psutil
import torch
from accelerate import PartialState

from pipelines.data import probe, read_frames
from pipelines.data.clips import frames_to_tensor
from pipelines.training.monitor import (
    conv_flops_per_second,
    flop_counter,
    matmul_flops_per_second,
    peak_flops_per_second,
)
from vae import DiffusersVideoVAE, build_autoencoder, load_autoencoder
from vae.diffusers_video import VIDEO_VAES

CLIP = Path(__file__).resolve().parents[1] / "tests" / "data" / "carphone.mp4"
OFFICIAL_KEYS = ("latent_dim", "base_channels", "encoder_num_resblocks", "encoder_energy_flow_hidden_size",
                 "decoder_num_resblocks", "decoder_energy_flow_hidden_size", "attention_type", "use_attention",
                 "dropout", "norm_type", "t_interpolation", "connect_res_layer_num")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, repeats: int, device: torch.device) -> tuple[float, float]:
    """(median seconds of `repeats` timed calls, multiply-accumulates counted on an untimed first call)."""
    with flop_counter() as counter:  # also the warm-up: allocator, oneDNN primitive caches
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), counter.get_total_flops() / 2


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a.float().clamp(-1, 1) - b.float()) / 2).pow(2).mean()
    return float(-10 * torch.log10(mse))


def clip(frames: int, size: int, device: torch.device) -> torch.Tensor:
    """A real clip (carphone), looped to `frames`, resized to size x size: (1, 3, T, H, W) in [-1, 1]."""
    available = probe(CLIP).num_frames
    indices = [i % available for i in range(frames)]  # loop a short clip to any length
    return frames_to_tensor(read_frames(CLIP, indices), size).unsqueeze(0).to(device)  # (1, 3, T, H, W)


class OfficialVAE(torch.nn.Module):
    """An official IV-VAE or LeanVAE behind the diffusers-style calls this script makes. `encode` gives the
    posterior mean (IV-VAE: its sampling replaced by the mean; LeanVAE: the bottleneck's measurement), latents
    without released scale / shift. `scale`: our [-1, 1] video range over the official one (LeanVAE: [-0.5, 0.5])."""

    def __init__(self, official, family: str, scale: float = 1.0):
        super().__init__()
        self.official, self.family, self.scale = official, family, scale

    def encode(self, x):
        z = self.official.encode(x / self.scale)
        return types.SimpleNamespace(latent_dist=types.SimpleNamespace(mode=lambda: z))

    def decode(self, z):
        return types.SimpleNamespace(sample=self.scale * self.official.decode(z))


def build_official_leanvae(config, checkout: str) -> OfficialVAE:
    """The official LeanVAE at our config's size, with its own random initialisation (the time does not depend on
    the weights; the released-weight equality is tests/test_leanvae.py's). Its package `__init__` needs Lightning
    and a video reader, so the package is made without it, as tests/data/make_leanvae_golden.py does."""
    if not (Path(checkout) / "LeanVAE" / "models" / "autoencoder.py").is_file():
        print(f"--official {checkout}: no LeanVAE/models/autoencoder.py there; clone westlake-repl/LeanVAE",
              file=sys.stderr)
        raise SystemExit(2)
    package = types.ModuleType("LeanVAE")
    package.__path__ = [str(Path(checkout) / "LeanVAE")]
    sys.modules["LeanVAE"] = package
    try:
        from LeanVAE.models.autoencoder import LeanVAE as Official
    except ImportError as error:
        print(f"the official LeanVAE needs {error.name}: pip install beartype PyWavelets", file=sys.stderr)
        raise SystemExit(2) from None
    return OfficialVAE(Official(argparse.Namespace(
        embedding_dim=config.lc_dim + config.hc_dim, latent_dim=config.latent_channels, l_dim=config.lc_dim,
        h_dim=config.hc_dim, sep_num_layer=config.branch_layers, fusion_num_layer=config.fusion_layers,
        ista_iter_num=config.ista_phases, ista_layer_num=config.ista_depth, use_tile_inference=False)),
        "LeanVAE", scale=2.0)


def build_official(args, device: torch.device) -> torch.nn.Module:
    """The official class of --model's family, from the --official checkout: WF-VAE and IV-VAE holding our model's
    weights, LeanVAE at our model's size."""
    sys.path.insert(0, args.official)
    ours = build(args.model, args, torch.device("cpu"))
    if type(ours).__name__ == "LeanVAE":
        torch.manual_seed(0)
        return build_official_leanvae(ours.config, args.official).to(device).eval()
    if type(ours).__name__ == "IVVAE":
        from models.vae3d import VAutoencoder3d

        model = VAutoencoder3d(dim=ours.config.dim, z_dim=ours.config.z_dim, dim_mult=list(ours.config.dim_mult),
                               num_res_blocks=ours.config.num_res_blocks, attn_scales=[],
                               temperal_downsample=[False, True, True], dropout=0.0)
        model.load_state_dict(ours.state_dict())
        model.sample = lambda mu, log_var, deterministic=False: mu
        return OfficialVAE(model, "IV-VAE").to(device).eval()
    from causalvideovae.model.vae.modeling_wfvae import WFVAEModel

    model = WFVAEModel(**{key: ours.config[key] for key in OFFICIAL_KEYS})
    model.load_state_dict(ours.state_dict())
    return model.to(device).eval()


def build(kind: str, args, device: torch.device) -> torch.nn.Module:
    """"wan", "official" (the official WF-VAE or IV-VAE holding our --model's weights) or one of our presets."""
    if kind == "wan":
        from diffusers import AutoencoderKLWan

        torch.manual_seed(0)
        return AutoencoderKLWan().to(device).eval()
    if kind == "official":
        return build_official(args, device)
    if args.vae and kind == args.model:
        return load_autoencoder(args.vae).to(device).eval()
    torch.manual_seed(0)
    if kind in VIDEO_VAES:  # its default config is the released model's size
        return DiffusersVideoVAE.from_diffusers(VIDEO_VAES[kind]()).to(device).eval()
    if Path(kind).is_dir():
        return load_autoencoder(kind).to(device).eval()
    return build_autoencoder(kind).to(device).eval()


def in_precision(model, x: torch.Tensor, bf16: bool):
    """The model and input for a row: bfloat16 rows cast our models' weights (`to_inference_dtype`), and run
    references under autocast (the official classes have no such method)."""
    if bf16 and hasattr(model, "to_inference_dtype"):
        return model.to_inference_dtype(torch.bfloat16), x.bfloat16(), nullcontext()
    return model, x, torch.autocast(x.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


class PeakMemory:
    """Peak bytes above the starting point while the block runs."""

    def __init__(self, device: torch.device):
        self.device, self.peak = device, 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            self.process, self.running = psutil.Process(), True
            self.start = self.peak_rss = self.process.memory_info().rss
            self.thread = threading.Thread(target=self._poll, daemon=True)
            self.thread.start()
        return self

    def _poll(self):
        while self.running:
            self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.start
        else:
            self.running = False
            self.thread.join()
            self.peak = max(self.peak_rss, self.process.memory_info().rss) - self.start


def measure_memory(args) -> None:
    """Subprocess entry: print the peak memory (MiB) of one operation as JSON."""
    device = torch.device(args.device)
    model, x, autocast = in_precision(build(args.kind, args, device), clip(args.frames, args.size, device), args.bf16)
    s = model.spatial_compression_ratio  # decoding memory does not depend on the latents' values: random ones
    z = torch.randn(1, model.latent_channels, model.latent_num_frames(args.frames), args.size // s, args.size // s,
                    device=device, dtype=x.dtype)
    with torch.no_grad(), autocast:
        if args.measure == "encode":
            del z
            with PeakMemory(device) as mem:
                model.encode(x)
        elif args.measure in ("decode", "chunked"):
            with PeakMemory(device) as mem:
                model.decode(z, chunk_size=args.chunk if args.measure == "chunked" else None)
        else:  # streamed chunked decode: pieces are consumed (e.g. written to disk) as they come
            with PeakMemory(device) as mem:
                for piece in model.iter_decode(z, chunk_size=args.chunk):
                    del piece
    print(json.dumps({"peak_mib": mem.peak / 2**20}))


def peak_mib(op: str, kind: str, frames: int, args, bf16: bool = False) -> float:
    cmd = [sys.executable, __file__, "--measure", op, "--kind", kind, "--model", args.model, "--frames", str(frames),
           "--size", str(args.size), "--device", args.device, "--chunk", str(args.chunk)]
    cmd += ["--bf16"] if bf16 else []
    cmd += ["--vae", args.vae] if args.vae else []
    cmd += ["--official", args.official] if args.official else []
    # A fixed mmap threshold makes glibc return every large tensor to the OS when freed, so the resident
    # set follows live memory instead of keeping the high-water mark of earlier work.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mib"]


def row(name: str, kind: str, model, x, args, bf16: bool, reference: bool) -> dict:
    """Time, count and measure one model. The memory of a reference is not measured; Wan is timed once (it is
    ~100x slower)."""
    device = x.device
    repeats = 1 if kind == "wan" else args.repeats
    model, x, autocast = in_precision(model, x, bf16)
    with torch.no_grad(), autocast:
        z = model.encode(x).latent_dist.mode()
        enc_s, enc_macs = timed(lambda: model.encode(x), repeats, device)
        dec_s, dec_macs = timed(lambda: model.decode(z), repeats, device)
        quality = psnr(model.decode(z).sample, x)
    return dict(name=name, params=sum(p.numel() for p in model.parameters()) / 1e6, gmacs=(enc_macs + dec_macs) / 1e9,
                enc_s=enc_s, dec_s=dec_s, gflops=2 * (enc_macs + dec_macs) / (enc_s + dec_s) / 1e9, psnr=quality,
                enc_mib=float("nan") if reference else peak_mib("encode", kind, args.frames, args, bf16),
                dec_mib=float("nan") if reference else peak_mib("decode", kind, args.frames, args, bf16))


def print_rows(rows: list[dict], peak_gflops: float) -> None:
    print("\n| model | params (M) | GMAC enc+dec | encode s | decode s | GFLOP/s | % of peak | "
          "peak MiB enc / dec | PSNR dB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['params']:.2f} | {r['gmacs']:.1f} | {r['enc_s']:.3f} | {r['dec_s']:.3f} | "
              f"{r['gflops']:.1f} | {100 * r['gflops'] / peak_gflops:.0f}% | {r['enc_mib']:.0f} / {r['dec_mib']:.0f} | "
              f"{r['psnr']:.2f} |")
    total = lambda r: r["enc_s"] + r["dec_s"]  # noqa: E731
    print(f"\nbf16 speed-up over fp32: {total(rows[0]) / total(rows[1]):.2f}x; "
          f"PSNR difference: {abs(rows[0]['psnr'] - rows[1]['psnr']):.3f} dB")
    for other in rows[2:]:
        print(f"encode+decode time, {other['name']} / {rows[0]['name']}: {total(other) / total(rows[0]):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lean-4ch", help="the model to measure: a preset of ours, a diffusers "
                        f"video VAE class at its released size with random weights ({', '.join(VIDEO_VAES)}), or "
                        "a VAE folder load_autoencoder reads")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=1, help="latent frames per chunk for the chunked decode rows")
    parser.add_argument("--stream-frames", type=int, nargs="+", default=[17, 65, 129])
    parser.add_argument("--vae", default=None, help="a trained VAE folder of --model for the PSNR column")
    parser.add_argument("--also", nargs="*", default=[], help="more presets of ours to time side by side (fp32)")
    parser.add_argument("--official", default=None, help="a checkout of PKU-YuanGroup/WF-VAE (for wfvae-*),"
                        " ali-vilab/iv-vae (for ivvae-*) or westlake-repl/LeanVAE (for lean-*): time the official "
                        "class (WF-VAE, IV-VAE: with the same weights)")
    parser.add_argument("--device", default=None, help="default: the accelerator accelerate picks")
    parser.add_argument("--skip-wan", action="store_true")
    parser.add_argument("--measure", choices=["encode", "decode", "chunked", "stream"], help=argparse.SUPPRESS)
    parser.add_argument("--kind", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        return measure_memory(args)

    device = torch.device(args.device) if args.device else PartialState().device
    args.device = str(device)  # the memory subprocesses use the same device
    peak_gflops = peak_flops_per_second(device) / 1e9
    x = clip(args.frames, args.size, device)
    print(f"device {device}, {torch.get_num_threads()} threads, input {tuple(x.shape)}; float32 peak "
          f"{peak_gflops:.1f} GFLOP/s (matmul {matmul_flops_per_second(device) / 1e9:.1f}, "
          f"convolution {conv_flops_per_second(device) / 1e9:.1f})")
    ours = build(args.model, args, device)
    rows = [row(f"{args.model} fp32", args.model, ours, x, args, False, False),
            row(f"{args.model} bf16", args.model, ours, x, args, True, False)]
    rows += [row(f"{preset} fp32", preset, build(preset, args, device), x, args, False, False) for preset in args.also]
    if args.official:
        official = build("official", args, device)
        family = getattr(official, "family", "WF-VAE")
        rows.append(row(f"official {family} fp32", "official", official, x, args, False, True))
    if not args.skip_wan:
        rows.append(row("AutoencoderKLWan fp32", "wan", build("wan", args, device), x, args, False, True))
    print_rows(rows, peak_gflops)

    print(f"\n| chunked decode (chunk {args.chunk} latent frame(s)) | frames | streamed peak MiB | "
          f"assembled peak MiB (incl. output) |")
    print("|---|---|---|---|")
    streamed = {frames: peak_mib("stream", args.model, frames, args) for frames in args.stream_frames}
    for frames in args.stream_frames:
        print(f"| {args.model} fp32 | {frames} | {streamed[frames]:.0f} | "
              f"{peak_mib('chunked', args.model, frames, args):.0f} |")
    first, last = args.stream_frames[0], args.stream_frames[-1]
    print(f"\nstreamed peak, {last} vs {first} frames: {streamed[last] / streamed[first]:.2f}x")


if __name__ == "__main__":
    main()
