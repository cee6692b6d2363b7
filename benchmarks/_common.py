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
    """Resolve the device and set the CPU thread count (scripts may; library code never does)."""
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
