"""Wall time of `generate_buffer` for one buffer: experts one by one vs in worker processes.

One buffer of 4 (`--experts`) ConvNet-3 experts (instance norm, width 32, `--width`), 2 epochs
each (`--epochs`), with the MTT expert settings (SGD lr 0.01, no momentum, batch 256, DSA), on
`--train-images` random 3 x 28 x 28 images of 8 classes (`--test-images` for the final test).
Modes:

- one-by-one: workers=1 (every expert in this process, one after another, torch's threads)
- workers: workers=auto (one one-thread worker process per usable core, at most one per expert)
- compiled / workers+compiled: the same with compile=True (torch.compile'd training steps)

Each mode runs once untimed (warm-up: imports, the worker processes' fork server, the compile;
its time is shown as "first run"), then
`--repeats` timed runs, each into a fresh folder; the median is reported with its speed-up over
the one-by-one median of the same invocation. The table also says whether the mode's expert
trajectories equal the one-by-one ones (bit-identical when the one-by-one run uses one thread,
`--threads 1`; compiled: the largest relative difference of a final parameter vector).

Usage: python benchmarks/experts.py [--threads 1] [--experts 4] [--json r.json] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from _common import (
    add_common_options,
    environment,
    markdown_table,
    now,
    print_provenance,
    random_dataset,
    settings_of,
    setup,
)
from _common import write_json as save_json

from meddistill.data.dataset import MedicalDataset
from meddistill.experts import BufferConfig, TrajectoryStore, generate_buffer
from meddistill.experts.config import expert_train_config
from meddistill.experts.generate import expert_workers
from meddistill.models import ModelSpec

MODES: dict[str, dict[str, Any]] = {
    "one-by-one": {"workers": 1, "compile": False},
    "workers": {"workers": "auto", "compile": False},
    "compiled": {"workers": 1, "compile": True},
    "workers+compiled": {"workers": "auto", "compile": True},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_options(p)
    p.add_argument("--out", dest="json", type=Path, help="write the results here (= --json)")
    p.add_argument("--experts", type=int, default=4, help="experts in the buffer")
    p.add_argument("--epochs", type=int, default=2, help="training epochs per expert")
    p.add_argument("--width", type=int, default=32, help="ConvNet-3 width")
    p.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported")
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--train-images", type=int, default=512, help="size of the train split")
    p.add_argument("--test-images", type=int, default=256, help="size of the test split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--modes",
        type=lambda text: ["one-by-one", *[m for m in text.split(",") if m != "one-by-one"]],
        default=list(MODES),
        help="comma-separated of " + ", ".join(MODES) + " (one-by-one always runs: the base)",
    )
    args = p.parse_args(argv)
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        p.error(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    if args.quick:
        args.repeats, args.width, args.train_images, args.test_images = 1, 8, 448, 32
    return args


def synthetic_data(args: argparse.Namespace) -> MedicalDataset:
    """The benchmark's random dataset (_common.random_dataset) at its command's sizes."""
    return random_dataset(
        args.seed, args.classes, args.channels, args.image_size, args.train_images, args.test_images
    )


def buffer_config(mode: str, args: argparse.Namespace) -> BufferConfig:
    return BufferConfig(
        num_experts=args.experts,
        epochs=args.epochs,
        model=ModelSpec(name="convnet", depth=3, width=args.width),
        train=expert_train_config(args.epochs),
        seed=args.seed,
        **MODES[mode],
    )


def one_buffer(
    cfg: BufferConfig, data: MedicalDataset, device: torch.device
) -> tuple[float, list[torch.Tensor]]:
    """Wall time of one buffer made from scratch (a fresh folder), and its trajectories."""
    with tempfile.TemporaryDirectory(prefix="meddistill-bench-") as tmp:
        t0 = now(device)
        generate_buffer(data, cfg, Path(tmp) / "buffer", device=device, progress=False)
        elapsed = now(device) - t0
        store = TrajectoryStore(Path(tmp) / "buffer")
        epochs = list(range(cfg.epochs + 1))
        return elapsed, [store.load_many(i, epochs) for i in store.expert_ids]


def time_mode(
    mode: str, data: MedicalDataset, args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    """One warm-up, then the median wall time of `repeats` buffers."""
    cfg = buffer_config(mode, args)
    first, _ = one_buffer(cfg, data, device)
    times, trajectories = [], []
    for _ in range(args.repeats):
        elapsed, trajectories = one_buffer(cfg, data, device)
        times.append(elapsed)
    return {
        "mode": mode,
        "workers": expert_workers(data, cfg, args.experts, device),
        "compiled": cfg.compile_on(args.train_images, device),
        "first_run_s": first,
        "median_s": statistics.median(times),
        "runs_s": times,
        "trajectories": trajectories,
    }


def _agreement(trajectories: list[torch.Tensor], base: list[torch.Tensor]) -> str:
    """identical, or the largest relative difference of an expert's final parameters."""
    pairs = list(zip(trajectories, base, strict=True))
    if all(torch.equal(a, b) for a, b in pairs):
        return "identical"
    worst = max(float((a[-1] - b[-1]).norm() / b[-1].norm()) for a, b in pairs)
    return f"final params differ by {worst:.1e} (relative)"


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """One line per mode, with the speed-up over the one-by-one run of this invocation."""
    base = rows[0]
    lines = []
    for row in rows:
        how = f"{row['workers']} processes" if row["workers"] > 1 else "in-process"
        how += ", compiled" if row["compiled"] else ""
        lines.append([
            f"{row['mode']} ({how})", f"{row['first_run_s']:.2f}", f"{row['median_s']:.2f}",
            f"{row['median_s'] / args.experts:.2f}", f"{base['median_s'] / row['median_s']:.2f}x",
            "-" if row is base else _agreement(row["trajectories"], base["trajectories"]),
        ])  # fmt: skip
    headers = ["mode", "first run (s)", "time (s)", "per expert (s)", "speed-up", "trajectories"]
    return markdown_table(headers, lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = setup(args.device, args.threads)
    env = environment(device)
    data = synthetic_data(args)
    print(f"# Expert buffer speed ({env['device_name']}, torch {env['torch']})\n", flush=True)
    rows = []
    for mode in args.modes:
        rows.append(time_mode(mode, data, args, device))
        print(f"  {mode:16s}: {rows[-1]['median_s']:.2f} s", file=sys.stderr, flush=True)
    print(
        f"generate_buffer of {args.experts} ConvNet-3 (width {args.width}) experts, "
        f"{args.epochs} epochs each (SGD lr 0.01, batch 256, DSA), {args.classes} classes of "
        f"{args.train_images} random {args.channels}x{args.image_size}x{args.image_size} images; "
        f"median of {args.repeats} run(s) after one warm-up; speed-up = one-by-one time / this "
        "mode's time:\n"
    )
    print(table(rows, args))
    print_provenance(env, args.quick)
    settings = settings_of(args)
    results = [{k: v for k, v in r.items() if k != "trajectories"} for r in rows]
    save_json(
        args.json,
        {"benchmark": "experts", "environment": env, "settings": settings, "results": results},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
