"""Wall time of `evaluate_set` for K fresh networks: one by one, in worker processes, batched.

K = 5 (`--nets`) ConvNet-3 networks (instance norm) per measurement, trained on a synthetic set
of random 3 x 28 x 28 images of 8 classes at IPC 1 and 10 (`--ipcs`), widths 32 and 128
(`--widths`), for `--epochs` epochs each with the evaluation protocol's settings (SGD lr 0.01,
momentum 0.9, batch 256, DSA), then tested on `--test-images` random test images. Modes:

- sequential: workers=1, batched=False (the networks one after another in this process)
- workers: workers=auto (one one-thread worker process per available core, at most K); CPU
- compiled: workers=1 with compile=True (torch.compile'd training steps, in this process)
- workers+compiled: workers=auto and compile=True (each worker compiles once, from the cache)
- batched: batched=True (the K networks vmapped together); by default on CUDA only

Each (IPC, width, mode) runs once untimed (warm-up; its time is shown as "first run": it pays
the compile, cold unless torch's compile cache already holds the shapes), then `--repeats`
timed runs; the median is reported, with its speed-up over the sequential median of the same run. The table also says
whether each mode's test accuracies equal the sequential ones (workers: bit-identical when the
sequential run uses one thread, `--threads 1`; batched: equal up to float rounding).

Usage: python benchmarks/evaluation.py [--device cpu] [--threads 1] [--epochs 50] [--out r.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from _common import (
    add_common_options,
    environment,
    int_list,
    markdown_table,
    now,
    print_provenance,
    random_dataset,
    settings_of,
    setup,
)
from _common import write_json as save_json

from meddistill.data.dataset import MedicalDataset
from meddistill.models import ModelSpec
from meddistill.training.evaluate import EvalConfig, evaluate_set
from meddistill.utils import make_generator

MODES: dict[str, dict[str, Any]] = {
    "sequential": {"workers": 1, "batched": False, "compile": False},
    "workers": {"workers": "auto", "batched": False, "compile": False},
    "compiled": {"workers": 1, "batched": False, "compile": True},
    "workers+compiled": {"workers": "auto", "batched": False, "compile": True},
    "batched": {"workers": 1, "batched": True, "compile": False},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_options(p)
    p.add_argument("--out", dest="json", type=Path, help="write the results here (= --json)")
    p.add_argument("--epochs", type=int, default=50, help="training epochs per network")
    p.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported")
    p.add_argument("--nets", type=int, default=5, help="networks per evaluation (K)")
    p.add_argument("--ipcs", type=int_list, default=[1, 10], help="images per class of the set")
    p.add_argument("--widths", type=int_list, default=[32, 128], help="ConvNet-3 widths")
    p.add_argument(
        "--modes",
        default="",
        help="comma-separated of " + ", ".join(MODES) + " (default: sequential, workers, "
        "workers+compiled on CPU; sequential, batched, compiled on CUDA)",
    )
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--batch", type=int, default=256, help="training batch size")
    p.add_argument("--test-images", type=int, default=800, help="size of the random test split")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.repeats, args.widths, args.test_images = 2, 1, [16], 80
    return args


def modes_for(text: str, device: torch.device) -> list[str]:
    """The modes to time, sequential first (every ratio is relative to it)."""
    if not text:
        if device.type == "cuda":
            return ["sequential", "batched", "compiled"]
        return ["sequential", "workers", "workers+compiled"]
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in MODES]
    if unknown:
        raise SystemExit(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    return ["sequential", *[m for m in chosen if m != "sequential"]]


def synthetic_data(args: argparse.Namespace) -> MedicalDataset:
    """The benchmark's random dataset (_common.random_dataset) at its command's sizes."""
    return random_dataset(
        args.seed, args.classes, args.channels, args.image_size, 10 * args.classes, args.test_images
    )


def synthetic_set(ipc: int, args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    gen = make_generator(args.seed + ipc)
    labels = torch.arange(args.classes).repeat_interleave(ipc)
    images = torch.randn(
        (labels.shape[0], args.channels, args.image_size, args.image_size), generator=gen
    )
    return images, labels


def time_mode(
    mode: str, ipc: int, width: int, data: MedicalDataset, args: argparse.Namespace,
    device: torch.device,
) -> dict[str, Any]:  # fmt: skip
    """One warm-up, then the median wall time of `repeats` evaluate_set calls."""
    cfg = EvalConfig(
        num_nets=args.nets, epochs=args.epochs, lr=0.01, batch_size=args.batch, **MODES[mode]
    )
    images, labels = synthetic_set(ipc, args)
    spec = ModelSpec(name="convnet", depth=3, width=width)

    def run() -> list[float]:
        report = evaluate_set(
            images, labels, data, cfg, base_spec=spec, seed=args.seed, progress=False,
            device=device,
        )  # fmt: skip
        return [n.acc for n in report.archs["convnet"].nets]

    t0 = now(device)
    run()
    first = now(device) - t0
    times, accs = [], []
    for _ in range(args.repeats):
        t0 = now(device)
        accs = run()
        times.append(now(device) - t0)
    return {
        "mode": mode,
        "ipc": ipc,
        "width": width,
        "workers": cfg.workers_for(args.nets, device),
        "batched": cfg.batched_on(device),
        "compiled": cfg.compile_on(images.shape[0], device),
        "first_run_s": first,
        "median_s": statistics.median(times),
        "runs_s": times,
        "accs": accs,
    }


def _agreement(row: dict[str, Any], base: dict[str, Any], test_images: int) -> str:
    if row is base:
        return "-"
    if row["accs"] == base["accs"]:
        return "identical"
    worst = max(abs(a - b) for a, b in zip(row["accs"], base["accs"], strict=True))
    return f"max diff {round(worst * test_images)} test image(s)"


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """One line per measurement, with the speed-up over the sequential run of the same setting."""
    lines = []
    for row in rows:
        base = next(
            r for r in rows
            if r["mode"] == "sequential" and (r["ipc"], r["width"]) == (row["ipc"], row["width"])
        )  # fmt: skip
        how = f"{row['workers']} processes" if row["workers"] > 1 else "in-process"
        how = f"{args.nets} vmapped" if row["batched"] else how
        how += ", compiled" if row["compiled"] else ""
        lines.append([
            row["ipc"], row["width"], f"{row['mode']} ({how})", f"{row['first_run_s']:.2f}",
            f"{row['median_s']:.2f}", f"{row['median_s'] / args.nets:.2f}",
            f"{base['median_s'] / row['median_s']:.2f}x",
            _agreement(row, base, args.test_images),
        ])  # fmt: skip
    headers = ["IPC", "width", "mode", "first run (s)", "time (s)", "per net (s)", "speed-up"]
    headers.append("test accuracies")
    return markdown_table(headers, lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = setup(args.device, args.threads)
    env = environment(device)
    modes = modes_for(args.modes, device)
    data = synthetic_data(args)
    print(f"# Evaluation speed ({env['device_name']}, torch {env['torch']})\n", flush=True)
    rows = []
    for ipc in args.ipcs:
        for width in args.widths:
            for mode in modes:
                rows.append(time_mode(mode, ipc, width, data, args, device))
                r = rows[-1]
                print(
                    f"  IPC {ipc:3d} width {width:4d} {mode:10s}: {r['median_s']:.2f} s",
                    file=sys.stderr,
                    flush=True,
                )
    print(
        f"evaluate_set of {args.nets} ConvNet-3 networks, {args.epochs} epochs each (batch "
        f"{args.batch}, DSA), {args.classes} classes of random {args.channels}x{args.image_size}x"
        f"{args.image_size} images, {args.test_images} test images; median of {args.repeats} "
        "run(s) after one warm-up; speed-up = sequential time / this mode's time:\n"
    )
    print(table(rows, args))
    print_provenance(env, args.quick)
    settings = settings_of(args)
    save_json(
        args.json,
        {"benchmark": "evaluation", "environment": env, "settings": settings, "results": rows},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
