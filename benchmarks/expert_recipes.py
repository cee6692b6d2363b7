"""Experts worth matching: the cheapest expert recipe that reaches a share of full-data accuracy,
chosen on the VALIDATION split (issue 12, point 4).

A distilled set rarely beats the experts it matches, so their accuracy caps the table. Each
recipe (learning rate, optimiser, width) trains one expert with `meddistill buffer`; its
buffer.json holds the expert's val accuracy after every epoch, so one run per recipe gives the
whole epochs axis. A recipe at E epochs qualifies when its val accuracy reaches `--share` of
the full-data val accuracy (`--full-val`, e.g. from `meddistill table --grid results --metric
val_acc`); the cheapest qualifying (recipe, E) is the one with the least CPU time to E epochs
(measured CPU seconds of the run, prorated by epoch). Test accuracy is never read to choose:
the table prints each recipe's final test accuracy (read once at its last epoch) for reporting.

    python benchmarks/expert_recipes.py --dataset bloodmnist --data-root ../shared/data/medmnist \
        --full-val 91.0 --epochs 10 --threads 1 --out /tmp/recipes
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

# name -> overrides of `meddistill buffer` (the CPU presets' experts: plain SGD, lr 0.01, width 32)
RECIPES: dict[str, list[str]] = {
    "sgd lr 0.01 w32 (presets)": [],
    "sgd lr 0.03 w32": ["buffer.train.lr=0.03"],
    "sgd lr 0.1 w32": ["buffer.train.lr=0.1"],
    "gsam lr 0.01 w32": ["buffer.train.optimizer=gsam"],
    "sgd lr 0.03 w64": ["buffer.train.lr=0.03", "buffer.model.width=64"],
}


def child_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def train_one(name: str, overrides: list[str], args: argparse.Namespace) -> dict:
    """One expert of `name`: its per-epoch val accuracy, final test accuracy, CPU seconds."""
    folder = args.out / name.replace(" ", "_").replace("(", "").replace(")", "")
    argv = [
        sys.executable, "-m", "meddistill.cli", "buffer", "--dataset", args.dataset,
        "--data-root", args.data_root, "--experts", "1", "--epochs", str(args.epochs),
        "--out", str(folder), "--threads", str(args.threads), "--no-progress",
        "buffer.model.width=32", "buffer.workers=1", *overrides,
    ]  # fmt: skip
    cpu, wall = child_cpu_s(), time.perf_counter()
    subprocess.run(argv, check=True)
    cpu, wall = child_cpu_s() - cpu, time.perf_counter() - wall
    (expert,) = json.loads((folder / "buffer.json").read_text())["experts"]
    return {"name": name, "val": expert["val_acc"], "test": expert["final_test_acc"],
            "cpu_s": cpu, "wall_s": wall}  # fmt: skip


def cheapest(rows: list[dict], target: float) -> tuple[dict, int] | None:
    """(recipe, epochs) with the least prorated CPU time whose val accuracy reaches target."""
    best = None
    for row in rows:
        epochs = len(row["val"]) - 1  # entry 0 is the untrained network
        for e in range(1, epochs + 1):
            if row["val"][e] is not None and 100 * row["val"][e] >= target:
                cost = row["cpu_s"] * e / epochs
                if best is None or cost < best[0]:
                    best = (cost, row, e)
                break
    return None if best is None else (best[1], best[2])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="bloodmnist")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--full-val", type=float, required=True, help="full-data val acc, %%")
    parser.add_argument("--share", type=float, default=0.95)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = [train_one(name, RECIPES[name], args) for name in args.recipes]
    target = args.share * args.full_val
    print(f"\n{args.dataset}: target val accuracy {target:.2f} % "
          f"({100 * args.share:.0f} % of full-data val {args.full_val:.2f} %)")  # fmt: skip
    print("| recipe | val acc by epoch (%) | final test acc (%) | CPU s | wall s |")
    print("|---|---|---|---|---|")
    for row in rows:
        vals = " ".join("-" if v is None else f"{100 * v:.1f}" for v in row["val"][1:])
        print(f"| {row['name']} | {vals} | {100 * row['test']:.2f} | {row['cpu_s']:.0f} | "
              f"{row['wall_s']:.0f} |")  # fmt: skip
    found = cheapest(rows, target)
    if found is None:
        print("no recipe reaches the target within", args.epochs, "epochs")
    else:
        print(f"cheapest on val: {found[0]['name']} at {found[1]} epochs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
