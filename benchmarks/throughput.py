"""Training throughput of ConvNet-3, and the wall time of one expert epoch on BloodMNIST.

Part 1: images/s of a full training step (forward, cross-entropy, backward, SGD step) at batch
256 on random 28 px 3-channel images, with and without DSA (fresh per-sample draw per batch, as
the expert and evaluation loops do), for ConvNet-3 widths 128, 64, 32 (instance norm).
Part 2: one expert epoch on the real BloodMNIST train split with `train_network` and the MTT
expert settings (`expert_train_config`: SGD lr 0.01, batch 256, DSA), plus the test-split
evaluation an expert does after every epoch.

Usage: python benchmarks/throughput.py [--device cpu] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _common import (
    REPO,
    add_common_options,
    environment,
    int_list,
    markdown_table,
    now,
    print_provenance,
    settings_of,
    setup,
    write_json,
)

from meddistill.augment import DSA
from meddistill.data.registry import default_dsa_strategy, load_dataset
from meddistill.errors import DatasetNotFoundError
from meddistill.experts.config import expert_train_config
from meddistill.models import ModelSpec, build_model, count_params
from meddistill.training import evaluate_model, train_network
from meddistill.utils import make_generator

DEFAULT_DATA_ROOT = REPO / ".." / "shared" / "data" / "medmnist"
EPOCH_DATASET = "bloodmnist"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_options(p)
    p.add_argument("--widths", type=int_list, default=[128, 64, 32], help="ConvNet-3 widths")
    p.add_argument("--batch", type=int, default=256, help="images per training step")
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    p.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported")
    p.add_argument(
        "--epoch-widths",
        type=int_list,
        default=[32],
        help="widths for the expert-epoch timing (32 = CPU preset; add 128 for the paper's)",
    )
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="MedMNIST folder")
    p.add_argument(
        "--epoch-subset",
        type=int,
        default=0,
        help="time the epoch on the first N train images only (0: the whole split)",
    )
    p.add_argument("--skip-epoch", action="store_true", help="only measure step throughput")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.widths, args.batch, args.warmup, args.steps, args.repeats = [16], 32, 1, 2, 1
        args.epoch_widths, args.epoch_subset = [16], 256
    return args


def step_throughput(
    width: int, use_dsa: bool, args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    """Median images/s over `repeats` runs of `steps` timed training steps."""
    model = build_model(
        ModelSpec(depth=3, width=width),
        in_channels=args.channels,
        num_classes=args.classes,
        image_size=args.image_size,
        seed=args.seed,
        device=device,
    )
    model.train()
    gen = make_generator(args.seed)
    shape = (args.batch, args.channels, args.image_size, args.image_size)
    images = torch.randn(shape, generator=gen).to(device)
    labels = torch.randint(0, args.classes, (args.batch,), generator=gen).to(device)
    dsa = DSA(spatial_dims=2) if use_dsa else None
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def one_step() -> None:
        x = dsa(images, gen, shared=False) if dsa is not None else images
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        one_step()
    rates = []
    for _ in range(args.repeats):
        t0 = now(device)
        for _ in range(args.steps):
            one_step()
        rates.append(args.steps * args.batch / (now(device) - t0))
    return {
        "width": width,
        "params": count_params(model),
        "dsa": use_dsa,
        "batch": args.batch,
        "images_per_s": statistics.median(rates),
        "runs_images_per_s": rates,
    }


def expert_epoch(width: int, data: Any, args: argparse.Namespace, device: torch.device) -> dict:
    """Wall time of one `train_network` epoch with the expert settings, then one test evaluation."""
    images, labels = data.train.images, data.train.labels
    if args.epoch_subset > 0:
        images, labels = images[: args.epoch_subset], labels[: args.epoch_subset]
    cfg = dataclasses.replace(
        expert_train_config(epochs=1), dsa_strategy=default_dsa_strategy(EPOCH_DATASET)
    )

    def build(seed: int) -> torch.nn.Module:
        return build_model(
            ModelSpec(depth=3, width=width),
            in_channels=data.channels,
            num_classes=data.num_classes,
            image_size=data.image_size,
            seed=seed,
            device=device,
        )

    # Warm-up on a throwaway network (allocator, kernels, cuDNN choices), not timed.
    warm = min(2 * cfg.batch_size, images.shape[0])
    train_network(
        build(args.seed + 1), images[:warm], labels[:warm], cfg, generator=make_generator(1)
    )
    model = build(args.seed)
    t0 = now(device)
    result = train_network(model, images, labels, cfg, generator=make_generator(args.seed))
    train_s = now(device) - t0
    t0 = now(device)
    evaluate_model(model, data.test.images, data.test.labels)
    eval_s = now(device) - t0
    return {
        "width": width,
        "images": int(images.shape[0]),
        "test_images": int(data.test.images.shape[0]),
        "train_s": train_s,
        "eval_s": eval_s,
        "images_per_s": images.shape[0] / train_s,
        "train_loss": result.train_loss,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = setup(args.device, args.threads)
    env = environment(device)
    print(f"# Training throughput ({env['device_name']}, torch {env['torch']})\n", flush=True)

    rows, table = [], []
    for width in args.widths:
        for use_dsa in (False, True):
            r = step_throughput(width, use_dsa, args, device)
            rows.append(r)
            print(
                f"  width {width:4d} dsa={'on ' if use_dsa else 'off'}: "
                f"{r['images_per_s']:.1f} images/s",
                file=sys.stderr,
                flush=True,
            )
    for width in args.widths:
        off, on = (
            next(r for r in rows if r["width"] == width and r["dsa"] == d) for d in (False, True)
        )
        table.append(
            [
                f"ConvNet-3 w{width}",
                f"{off['params']:,}",
                f"{off['images_per_s']:.0f}",
                f"{on['images_per_s']:.0f}",
                f"{on['images_per_s'] / off['images_per_s']:.2f}",
            ]
        )
    print(
        f"Training step (forward + backward + SGD), batch {args.batch}, "
        f"{args.channels}x{args.image_size}x{args.image_size} images, median of {args.repeats} "
        f"runs of {args.steps} steps after {args.warmup} warm-up steps:\n"
    )
    print(
        markdown_table(
            ["network", "parameters", "images/s (no DSA)", "images/s (DSA)", "DSA / no DSA"],
            table,
        )
    )

    epochs: list[dict[str, Any]] = []
    epoch_note = None
    if not args.skip_epoch:
        try:
            data = load_dataset(EPOCH_DATASET, root=args.data_root).to(device)
        except DatasetNotFoundError as exc:
            epoch_note = f"expert epoch skipped: {exc}"
            print(f"\n{epoch_note}")
        else:
            for width in args.epoch_widths:
                epochs.append(expert_epoch(width, data, args, device))
            subset = f" (first {args.epoch_subset} train images)" if args.epoch_subset else ""
            print(
                f"\nOne expert epoch on {EPOCH_DATASET}{subset}: train_network with "
                "expert_train_config (SGD lr 0.01, batch 256, DSA), then the per-epoch test "
                "evaluation:\n"
            )
            print(
                markdown_table(
                    ["network", "train images", "epoch (s)", "images/s", "test eval (s)"],
                    [
                        [
                            f"ConvNet-3 w{e['width']}",
                            f"{e['images']:,}",
                            f"{e['train_s']:.1f}",
                            f"{e['images_per_s']:.0f}",
                            f"{e['eval_s']:.2f} ({e['test_images']:,} images)",
                        ]
                        for e in epochs
                    ],
                )
            )
    print_provenance(env, args.quick)
    write_json(
        args.json,
        {
            "benchmark": "throughput",
            "environment": env,
            "settings": settings_of(args),
            "step_throughput": rows,
            "expert_epoch": epochs,
            "expert_epoch_note": epoch_note,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
