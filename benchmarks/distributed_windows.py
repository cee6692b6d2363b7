"""W windows per iteration on 1 process against W torchrun ranks: time per iteration, same set.

Runs `meddistill distill` (CLI, as a user does) with match.windows_per_iteration=W:
(a) one process, W windows one after the other; (b) `torchrun --nproc_per_node W`, one window
per rank (gloo on CPU, NCCL on CUDA); and (c) one process, one window (the papers' loop), for
scale. Time per iteration is the median of the runs' per-iteration `seconds` in metrics.jsonl
(rank 0's step, the all-gather included) after `--warmup` iterations; each run is repeated
`--repeats` times, interleaved, in fresh run folders. The synthetic sets of (a) and (b) are
compared bit for bit. Nothing is evaluated (final_eval=false).

    python benchmarks/distributed_windows.py --data-root ../shared/data/medmnist --threads 1 \
        --buffer runs/buffers/<bloodmnist buffer>   # or let it make a 2-expert buffer
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO, command_line, markdown_table
from safetensors.torch import load_file


def _options() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/bloodmnist/hoptm/ipc10.yaml")
    p.add_argument("--data-root", default="../shared/data/medmnist")
    p.add_argument("--buffer", help="an expert buffer for the config (default: made here)")
    p.add_argument("--windows", type=int, default=2, help="W (also the number of ranks)")
    p.add_argument("--iterations", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2, help="iterations left out of the timing")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, help="work folder (default: a temporary one)")
    p.add_argument("--json", type=Path)
    return p.parse_args()


def _env(args: argparse.Namespace) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    return env


def _call(cmd: list[str], args: argparse.Namespace) -> None:
    proc = subprocess.run(cmd, cwd=REPO, env=_env(args), capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")


def _buffer(args: argparse.Namespace, work: Path) -> str:
    if args.buffer:
        return str(Path(args.buffer).resolve())
    out = work / "buffer"
    _call([sys.executable, "-m", "meddistill", "buffer", "--config", args.config, "--data-root",
           args.data_root, "--out", str(out), "--experts", "2", "--threads", str(args.threads),
           "--no-progress", "--device", args.device], args)  # fmt: skip
    return str(out)


def _distill(args: argparse.Namespace, buffer: str, out: Path, windows: int, ranks: int) -> dict:
    """One run; its per-iteration seconds after the warm-up and its wall time."""
    launcher = [sys.executable, "-m", "meddistill"]
    if ranks > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node", str(ranks), "-m", "meddistill"]  # fmt: skip
    cmd = [*launcher, "distill", "--config", args.config, "--data-root", args.data_root,
           "--buffer", buffer, "--out", str(out), "--iterations", str(args.iterations),
           "--threads", str(args.threads), "--device", args.device, "--no-progress",
           f"match.windows_per_iteration={windows}", "final_eval=false"]  # fmt: skip
    start = time.perf_counter()
    _call(cmd, args)
    wall = time.perf_counter() - start
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    seconds = [r["seconds"] for r in records if r.get("stage") == "distill"]
    return {"seconds": seconds[args.warmup :], "wall_s": wall}


RUNS = {  # name: (windows, ranks)
    "W windows, 1 process": ("W", 1),
    "W windows, W ranks": ("W", "W"),
    "1 window, 1 process": (1, 1),
}


def _measure(args: argparse.Namespace, buffer: str, work: Path) -> dict[str, Any]:
    times: dict[str, list[float]] = {name: [] for name in RUNS}
    walls: dict[str, list[float]] = {name: [] for name in RUNS}
    for repeat in range(args.repeats):
        for k, (name, (w, r)) in enumerate(RUNS.items()):
            windows = args.windows if w == "W" else w
            ranks = args.windows if r == "W" else r
            out = work / f"run{repeat}-{k}"
            got = _distill(args, buffer, out, windows, ranks)
            times[name] += got["seconds"]
            walls[name].append(got["wall_s"])
    same = _same_sets(work / "run0-0", work / "run0-1")
    return {"per_iteration_s": {n: statistics.median(t) for n, t in times.items()},
            "wall_s": walls, "same_set": same}  # fmt: skip


def _same_sets(a: Path, b: Path) -> bool:
    x = load_file(str(a / "synthetic" / "synthetic.safetensors"))
    y = load_file(str(b / "synthetic" / "synthetic.safetensors"))
    return x.keys() == y.keys() and all(bool((x[k] == y[k]).all()) for k in x)


def main() -> None:
    args = _options()
    work = args.out or Path(tempfile.mkdtemp(prefix="windows-"))
    work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    result = _measure(args, _buffer(args, work), work)
    t = result["per_iteration_s"]
    one_proc, ranks = t["W windows, 1 process"], t["W windows, W ranks"]
    rows = [[name, f"{sec:.3f}"] for name, sec in t.items()]
    print(f"Command: {command_line()}")
    print(
        f"load average before: {load:.2f}; after: {os.getloadavg()[0]:.2f}; cores: {os.cpu_count()}"
    )
    print(markdown_table(["run", "median s / iteration"], rows))
    print(f"W={args.windows}: 1 process / {args.windows} ranks = {one_proc / ranks:.2f}x; "
          f"same synthetic set (bit for bit): {result['same_set']}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({**result, "settings": vars(args) | {"out": str(work),
                             "json": str(args.json)}, "load": load}, indent=2, default=str))  # fmt: skip
    if args.out is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
