"""What a run reports while it trains: running means of the logged values, throughput and model FLOP utilisation.

MFU is the model's FLOP rate (forward + backward, counted by torch's FlopCounterMode on the first micro-step
of step 0) over the best rate a dense matmul or a wide 3-D convolution reaches on the same device and in the
run's precision at start-up (and once more if the MFU comes out above 100%, the sign of a peak measured while
another process held the device): a ceiling this machine really reaches, not a datasheet peak. The convolution is
there because on a CPU oneDNN's convolutions can outrun its matmul (in bfloat16 here by 1.3x), so a
matmul-only peak let a convolutional model log an MFU above 100%. The count travels in checkpoints: FlopCounterMode
changes a step's float rounding slightly, so a resumed run must not count again to stay bit-identical.
"""

from __future__ import annotations

import functools
import time
from typing import Callable, TypeVar

import torch
from accelerate import Accelerator
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, sdpa_flop_count
from tqdm.auto import tqdm

from ..common.device_speed import best_seconds, matmul_flops_per_second

T = TypeVar("T")
PRECISION_DTYPES = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class RunningMeans:
    """Sums of logged scalars between two log steps, averaged over steps and processes on `pop`."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, values: dict[str, torch.Tensor | float]) -> None:
        for key, value in values.items():
            value = torch.as_tensor(value, dtype=torch.float64).detach()
            self.sums[key] = self.sums.get(key, 0) + value.cpu()
            self.counts[key] = self.counts.get(key, 0) + 1

    def pop(self, accelerator: Accelerator) -> dict[str, float]:
        """Means since the last pop; a collective call: every process must call it at the same step."""
        keys = sorted(self.sums)
        local = torch.stack([self.sums[k] / self.counts[k] for k in keys]) if keys else torch.zeros(0)
        means = accelerator.reduce(local.to(accelerator.device), reduction="mean") if keys else local
        self.sums, self.counts = {}, {}
        return dict(zip(keys, means.tolist()))


@functools.lru_cache(maxsize=None)
def conv_flops_per_second(device: torch.device, dtype: torch.dtype = torch.float32, channels: int = 256,
                          repeats: int = 3) -> float:
    """The same for a 3x3x3 convolution of `channels` to `channels` over 4x16x16 positions, channels-last."""
    x = torch.full((1, channels, 4, 16, 16), 0.5, device=device, dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last_3d)
    weight = torch.full((channels, channels, 3, 3, 3), 0.01, device=device, dtype=dtype)
    weight = weight.contiguous(memory_format=torch.channels_last_3d)
    flops = 2 * x[0, 0].numel() * channels * weight[0].numel()
    return flops / best_seconds(lambda: torch.nn.functional.conv3d(x, weight, padding=1), repeats)


def peak_flops_per_second(device: torch.device, dtype: torch.dtype = torch.float32, again: bool = False) -> float:
    """MFU's denominator: the faster of the matmul and the convolution; `again` measures anew instead of
    returning this process's first measurement."""
    probes = [matmul_flops_per_second, conv_flops_per_second]
    return max((probe.__wrapped__ if again else probe)(device, dtype) for probe in probes)


def _conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                         _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """Each gradient a convolution's backward computes (input, weight) costs one forward convolution. torch's own
    formula counts the weight gradient of a grouped convolution `groups` times over (65x for LeanVAE's
    depthwise 3x3x3 convolutions, which put its step at 2.5x its real count)."""
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed=transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def _attention_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _attention_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    """The gradients of attention's two products: twice its forward, as the math kernel (and the meta device)
    runs it. torch counts a fused kernel's backward at 2.5x, its recomputed scores included: hardware FLOPs,
    which would make a GPU's MFU and a CPU's or a recipe's count differ for the same model."""
    return 2 * sdpa_flop_count(query_shape, key_shape, value_shape)


_ATTENTION = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
              "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")


def flop_counter() -> FlopCounterMode:
    """torch's FlopCounterMode (a multiply-add is 2 FLOPs) with grouped convolutions' backward counted right and
    every attention kernel counted alike; torch leaves the CPU's fused kernel out (0 FLOPs)."""
    mapping = {torch.ops.aten.convolution_backward: _conv_backward_flops}
    for name in _ATTENTION:
        mapping[getattr(torch.ops.aten, name)] = _attention_flops
        mapping[getattr(torch.ops.aten, f"{name}_backward")] = _attention_backward_flops
    return FlopCounterMode(display=False, custom_mapping=mapping)


def count_flops(fn: Callable[[], T]) -> tuple[T, int]:
    """Run `fn` once and count the FLOPs of the matmuls, convolutions and attention it ran; compiled models run
    eagerly for it (FlopCounterMode sees no operation inside a compiled graph)."""
    with torch.compiler.set_stance("force_eager"), flop_counter() as counter:
        result = fn()
    return result, counter.get_total_flops()


class Throughput:
    """Clips per second (all processes) and, once `flops_per_micro_step` is known, achieved TFLOP/s and MFU of
    one process, since `start()`. Register it for checkpointing: its state is the FLOP count."""

    def __init__(self, accelerator: Accelerator, mixed_precision: str, clips_per_micro_step: int):
        self.device, self.dtype = accelerator.device, PRECISION_DTYPES[mixed_precision]
        self.peak = peak_flops_per_second(self.device, self.dtype)
        self.clips_per_micro_step = clips_per_micro_step
        self.flops_per_micro_step = 0
        self.remeasured = False
        self.start()

    def start(self) -> None:
        self.started, self.micro_steps = time.perf_counter(), 0

    def add(self, micro_steps: int) -> None:
        self.micro_steps += micro_steps

    def remeasure_peak(self) -> None:
        """Measure the peak again, keeping the better one: a peak measured while another process held the device
        is too low and puts the MFU above 100%."""
        self.peak = max(self.peak, peak_flops_per_second(self.device, self.dtype, again=True))
        self.remeasured = True

    def state_dict(self) -> dict:
        return {"flops_per_micro_step": self.flops_per_micro_step}

    def load_state_dict(self, state: dict) -> None:
        self.flops_per_micro_step = int(state["flops_per_micro_step"])

    def logs(self) -> dict[str, float]:
        seconds = max(time.perf_counter() - self.started, 1e-9)
        flops = self.flops_per_micro_step * self.micro_steps / seconds
        if flops > self.peak and not self.remeasured:
            self.remeasure_peak()
        return {"train/clips_per_s": self.clips_per_micro_step * self.micro_steps / seconds,
                "perf/tflops": flops / 1e12, "perf/mfu": flops / self.peak}


def progress(accelerator: Accelerator, start: int, total: int, desc: str) -> tqdm:
    return tqdm(total=total, initial=start, desc=desc, disable=not accelerator.is_local_main_process,
                dynamic_ncols=True, unit="step")
