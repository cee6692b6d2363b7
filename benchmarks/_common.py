"""Helpers shared by the benchmark scripts: device and thread setup, timing, tables, JSON.

Imported as a sibling module (`python benchmarks/<script>.py` puts this folder on sys.path).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from meddistill.data.dataset import MedicalDataset, Normalization, Split
from meddistill.memory import keep_freed_memory
from meddistill.utils import make_generator, resolve_device, write_json_atomic

REPO = Path(__file__).resolve().parents[1]


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark script takes."""
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0: leave torch's default); also sets OMP_NUM_THREADS in workers",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--quick", action="store_true", help="tiny smoke run (seconds); numbers are meaningless"
    )


def int_list(text: str) -> list[int]:
    """'128,64,32' -> [128, 64, 32] (argparse type)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from exc
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def setup(device_name: str, threads: int) -> torch.device:
    """Resolve the device and set the CPU thread count (scripts may; library code never does);
    glibc keeps freed memory as the `meddistill` command does, so the numbers are the CLI's."""
    keep_freed_memory()
    if threads > 0:
        torch.set_num_threads(threads)
    return resolve_device(device_name)


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work so wall-clock times cover the computation."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now(device: torch.device) -> float:
    sync(device)
    return time.perf_counter()


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name}, {torch.get_num_threads()} torch threads"


def command_line() -> str:
    """The exact command that produced these numbers, with the script path relative to the repo."""
    script = Path(sys.argv[0]).resolve()
    try:
        script_text = str(script.relative_to(REPO))
    except ValueError:
        script_text = str(script)
    env = (
        f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} "
        if "OMP_NUM_THREADS" in os.environ
        else ""
    )
    return f"{env}python {shlex.join([script_text, *sys.argv[1:]])}"


def environment(device: torch.device) -> dict[str, Any]:
    return {
        "device": str(device),
        "device_name": device_description(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "command": command_line(),
    }


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub Markdown table; floats are expected to be formatted by the caller."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def print_provenance(env: dict[str, Any], quick: bool) -> None:
    """What every benchmark prints under its tables: the device, the exact command, and for
    --quick the warning that its numbers are not for reporting."""
    print(f"\nDevice: {env['device_name']} ({env['device']}), torch {env['torch']}")
    print(f"Command: {env['command']}")
    if quick:
        print("(--quick: smoke-run settings; do not report these numbers)")


def settings_of(args: argparse.Namespace, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The parsed options as JSON-ready settings (paths as text), minus internal ones."""
    return {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in skip
    }


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path is not None:
        write_json_atomic(path, payload)
        print(f"\nResults written to {path}")


def random_dataset(
    seed: int, classes: int, channels: int, image_size: int, n_train: int, n_test: int
) -> MedicalDataset:
    """Random images of `classes` classes (train and test splits, no validation split): the
    benchmarks time computation, so what the pixels show does not matter."""
    gen = make_generator(seed)
    shape = (channels, image_size, image_size)

    def split(n: int) -> Split:
        labels = torch.arange(n) % classes
        return Split(torch.randn((n, *shape), generator=gen), labels)

    return MedicalDataset(
        name="random",
        splits={"train": split(n_train), "test": split(n_test)},
        class_names=[f"class{c}" for c in range(classes)],
        normalization=Normalization((0.0,) * channels, (1.0,) * channels),
        source_id="random",
    )


# ---------------------------------------------------------------------------------------------
# Convolution limit: what this device reaches on the ConvNet-3 convolutions alone
# ---------------------------------------------------------------------------------------------


def convnet_conv_shapes(
    batch: int, channels: int, width: int, image_size: int, depth: int = 3
) -> list[tuple[int, int, int, int]]:
    """(N, C_in, C_out, H) of each 3x3 pad-1 conv of ConvNet-`depth` (H halves after each pool)."""
    shapes, c_in, size = [], channels, image_size
    for _ in range(depth):
        shapes.append((batch, c_in, width, size))
        c_in, size = width, size // 2
    return shapes


def conv_forward_flops(n: int, c_in: int, c_out: int, size: int, k: int = 3) -> float:
    """2 * N * Cout * Cin * k * k * H * W (multiply-adds x 2) of one same-size conv forward."""
    return 2.0 * n * c_out * c_in * k * k * size * size


def network_forward_flops(
    batch: int, channels: int, width: int, image_size: int, classes: int, depth: int = 3
) -> float:
    """Conv + linear FLOPs of one ConvNet forward (norm, ReLU, pooling are negligible)."""
    shapes = convnet_conv_shapes(batch, channels, width, image_size, depth)
    size = image_size // 2**depth
    linear = 2.0 * batch * width * size * size * classes
    return sum(conv_forward_flops(*s) for s in shapes) + linear


def _time_conv(
    device: torch.device, shape: tuple[int, int, int, int], warmup: int, repeats: int
) -> float:
    """Median seconds of forward + input grad + weight grad of one conv at `shape`."""
    n, c_in, c_out, size = shape
    gen = make_generator(0)
    x = torch.randn((n, c_in, size, size), generator=gen).to(device).requires_grad_(True)
    w = torch.randn((c_out, c_in, 3, 3), generator=gen).to(device).requires_grad_(True)
    b = torch.zeros(c_out, device=device, requires_grad=True)
    grad_out = torch.randn((n, c_out, size, size), generator=gen).to(device)
    times = []
    for i in range(warmup + repeats):
        t0 = now(device)
        out = torch.nn.functional.conv2d(x, w, b, padding=1)
        torch.autograd.grad(out, (x, w, b), grad_out)
        if i >= warmup:
            times.append(now(device) - t0)
    return sorted(times)[len(times) // 2]


def conv_limit(
    device: torch.device,
    batch: int,
    channels: int,
    width: int,
    image_size: int,
    warmup: int = 2,
    repeats: int = 5,
) -> dict[str, Any]:
    """GFLOP/s of conv forward + backward (input and weight grads) at ConvNet-3's layer shapes:
    the ceiling a matching iteration, made almost only of these convs, can approach."""
    layers = []
    for shape in convnet_conv_shapes(batch, channels, width, image_size):
        flops = 3 * conv_forward_flops(*shape)  # forward + input grad + weight grad
        seconds = _time_conv(device, shape, warmup, repeats)
        layers.append({"shape": list(shape), "gflop": flops / 1e9, "s": seconds})
    total_flops = sum(layer["gflop"] for layer in layers)
    total_s = sum(layer["s"] for layer in layers)
    return {
        "batch": batch,
        "layers": layers,
        "gflop": total_flops,
        "s": total_s,
        "gflops_per_s": total_flops / total_s if total_s > 0 else float("nan"),
    }
