"""The README's first command, end to end at small scale: it still parses and runs, and it
gives the numbers it gave when they were recorded here (same seed, one thread).

A change that moves these numbers moves the README's numbers too: re-measure the README's
rows (its commands are printed beside them) and update GOLDEN in the same commit."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from meddistill.cli import main

REPO = Path(__file__).resolve().parents[1]
# the README command, shrunk: 1 expert x 2 epochs, 3 iterations, 2 networks x 30 epochs
SMALL = [
    "experts.num_experts=1", "experts.epochs=2", "match.iterations=3", "match.max_start=1",
    "eval.num_nets=2", "eval.epochs=30", "--threads", "1", "--no-progress",
]  # fmt: skip
# the learned step size, then (test accuracy, val accuracy) of each network, measured at the
# commit that set them (rounded to 6 decimals)
GOLDEN: list[float | tuple[float, float]] = [0.009963, (0.34259, 0.336449), (0.345513, 0.361565)]


def readme_first_command() -> list[str]:
    """The `meddistill distill ...` of the README's first code block, as argv."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block is not None, "README.md has no bash block"
    command = block.group(1).strip().split("&&")[-1].strip()
    argv = shlex.split(command)
    assert argv[:2] == ["meddistill", "distill"], command
    return argv[1:]


def absolute(argv: list[str], data: Path) -> list[str]:
    """The README's paths (relative to a clone with ../shared beside it) made absolute."""
    out = list(argv)
    out[out.index("--config") + 1] = str(REPO / out[out.index("--config") + 1])
    out[out.index("--data-root") + 1] = str(data / "medmnist")
    return out


def test_the_readme_first_command_reproduces_at_small_scale(shared_data, workdir, one_thread):
    argv = absolute(readme_first_command(), shared_data)
    assert main([*argv, *SMALL]) == 0
    (run,) = (workdir / "runs" / "distill").iterdir()
    results = json.loads((run / "results.json").read_text())
    nets = results["rows"][0]["archs"]["convnet"]["nets"]
    measured = [round(results["syn_lr"], 6)]
    measured += [(round(n["acc"], 6), round(n["val_acc"], 6)) for n in nets]
    if not GOLDEN:
        pytest.fail(f"record GOLDEN = {measured}")
    assert measured == GOLDEN
