"""Smoke run of benchmarks/matching.py: the conv-limit and reference reports must print.

The benchmark scripts are not collected by pytest; this keeps the --reference path and the
conv-limit measurement from rotting silently (one mode only, to stay around 15 s on a CPU).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_matching_quick_reference_prints_conv_limit_and_reference() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "benchmarks" / "matching.py"), "--quick", "--device", "cpu"]
    cmd += ["--threads", "1", "--modes", "reference", "--reference"]
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "conv limit batch" in out
    assert "Convolution limit:" in out
    assert "achieved / limit" in out
    assert "Reference: plain-PyTorch MTT iteration" in out
