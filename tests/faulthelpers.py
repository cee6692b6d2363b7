"""The fault-injection harness (issue 9): run a command on a hostile input, in process, and check
that it ends as the tool promises: exit non-zero, exactly ONE stderr line
`meddistill <cmd>: error: ...` (never a traceback), nothing on stdout, and no file outside the
expected folders created, changed or removed (snapshots of every path under the test folder).

A module of tests/ (on pytest's pythonpath) rather than a conftest, so `from faulthelpers
import hostile` always finds this file whatever other conftest pytest imported first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from meddistill.cli import main

REPO = Path(__file__).resolve().parents[1]


def snapshot(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under root (the cache excepted) with its (size, mtime_ns); folders as None."""
    cache = root / "cache"
    out: dict[str, tuple[int, int] | None] = {}
    for path in root.rglob("*"):
        if path == cache or cache in path.parents:
            continue
        st = path.lstat()
        out[str(path.relative_to(root))] = None if path.is_dir() else (st.st_size, st.st_mtime_ns)
    return out


def changed(before: dict, after: dict, allowed: tuple[str, ...] = ()) -> list[str]:
    """Paths created, removed or modified, outside the `allowed` relative prefixes."""
    keys = set(before) | set(after)
    diff = sorted(k for k in keys if before.get(k, "absent") != after.get(k, "absent"))
    return [k for k in diff if not any(k == a or k.startswith(a.rstrip("/") + "/") for a in allowed)]


def hostile(
    capsys: pytest.CaptureFixture[str],
    root: Path,
    argv: list[str],
    *,
    contains: tuple[str, ...] = (),
    allowed: tuple[str, ...] = (),
    code: int | None = None,
) -> str:
    """Run `meddistill argv` that must be refused; assert the one-line contract; return the
    message (after the `meddistill <cmd>: error: ` prefix)."""
    capsys.readouterr()
    before = snapshot(root)
    exit_code = main(argv)
    captured = capsys.readouterr()
    assert exit_code != 0, captured
    if code is not None:
        assert exit_code == code, (exit_code, captured.err)
    # a run's notes (settings it derived from the data, said before work starts) may precede
    # the error; the error itself is one line
    lines = [line for line in captured.err.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("note: ")]
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    prefix = f"meddistill {argv[0]}: error: "
    assert lines[0].startswith(prefix), lines[0]
    assert captured.out == ""
    assert changed(before, snapshot(root), allowed) == [], "files outside the run changed"
    message = lines[0][len(prefix) :]
    for part in contains:
        assert part in message, (part, message)
    return message


def run_cli(args: list[str], cwd: Path, **popen) -> subprocess.Popen:
    """Start `python -m meddistill.cli args` as a separate process (1 thread, own cache);
    args starting with "-c" run that Python code instead."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MEDDISTILL_CACHE": str(cwd / "cache"),
        "PYTHONPATH": str(REPO / "src"),
    }
    env.pop("MEDDISTILL_DATA", None)
    return subprocess.Popen(
        [sys.executable, *(args if args[:1] == ["-c"] else ["-m", "meddistill.cli", *args])],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen,
    )  # fmt: skip
