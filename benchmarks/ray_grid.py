"""Time one grid in one process and with `bench --ray`, one after the other, and compare tables.

Each run goes into a fresh runs folder, so both make every buffer, set and network. The load
average before each run is printed with it: on a shared machine a ratio is only fair when
nothing else competes for the cores.

    python benchmarks/ray_grid.py configs/bench/ray_small.yaml --data-root ../shared/data \
        --out /tmp/ray-bench --ray-cpus 2 --threads 1
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def meddistill(*args: str, log: Path | None = None) -> tuple[float, str]:
    """Run the CLI of this checkout in a subprocess; (wall seconds, stdout)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    code = (
        "import sys; from meddistill.cli import main; sys.argv[0] = 'meddistill'; sys.exit(main())"
    )
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, check=False)  # fmt: skip
    wall = time.perf_counter() - start
    if log is not None:
        log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"meddistill {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for both runs folders")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ray-cpus", type=int, default=2)
    args = parser.parse_args()
    one, many = args.out / "one", args.out / "ray"
    for folder in (one, many):
        if folder.exists():
            raise SystemExit(f"{folder} exists; give a fresh --out")
    args.out.mkdir(parents=True, exist_ok=True)
    common = ["bench", args.grid, "--data-root", args.data_root, "--threads", str(args.threads),
              "--no-progress"]  # fmt: skip
    rows = {}
    for name, runs, extra in (
        ("one process", one, []),
        (f"ray, {args.ray_cpus} CPUs", many, ["--ray", "--ray-cpus", str(args.ray_cpus)]),
    ):
        before = load()
        wall, _ = meddistill(*common, "--runs-dir", str(runs), *extra, log=runs.with_suffix(".log"))
        rows[name] = {"wall_s": round(wall, 1), "load_before": before, "load_after": load()}
        print(f"{name}: {wall:.1f} s (load before {before}, after {rows[name]['load_after']})")
    tables = [meddistill("table", "--runs-dir", str(r))[1] for r in (one, many)]
    diff = list(difflib.unified_diff(tables[0].splitlines(), tables[1].splitlines(), lineterm=""))
    walls = [r["wall_s"] for r in rows.values()]
    print(f"ratio one process / ray: {walls[0] / walls[1]:.2f}")
    print("tables identical" if not diff else "tables differ:\n" + "\n".join(diff))
    print(tables[0])
    summary = {"runs": rows, "ratio": walls[0] / walls[1], "tables_identical": not diff}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
