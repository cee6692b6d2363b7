"""A distillation killed with SIGKILL and started again ends with exactly the synthetic set of an
uninterrupted run: the checkpoint carries every tensor and the generator state.

The killed run needs a real process; the restart and the uninterrupted reference run in this
process (as `main(argv)`, the console script's code path) with the same torch thread count
(CPU reductions are bit-reproducible only at a fixed thread count).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from imagefolders import image_folder
from safetensors import safe_open
from safetensors.torch import load_file

from meddistill.cli import main

ITERATIONS = 24


def distill_args(ds: Path, buf: Path, out: Path) -> list[str]:
    return [
        "distill",
        "--method",
        "hoptm",
        "--dataset",
        f"folder:{ds}",
        "--buffer",
        str(buf),
        "--out",
        str(out),
        "--ipc",
        "2",
        "--iterations",
        str(ITERATIONS),
        "--seed",
        "7",
        "--no-progress",
        "model.width=4",
        "match.syn_steps=4",
        "match.max_start=2",
        "match.checkpoint_every=1",
        "final_eval=false",
    ]


def checkpoint_iteration(path: Path) -> int:
    with safe_open(str(path), framework="pt") as fh:
        return int((fh.metadata() or {})["iteration"])


def test_killed_distillation_resumes_to_the_same_synthetic_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDDISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MEDDISTILL_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    ds = image_folder(tmp_path / "ds", {"a": 6, "b": 6, "c": 6})
    buf = tmp_path / "buf"
    argv = ["buffer", "--dataset", f"folder:{ds}", "--out", str(buf), "--experts", "2"]
    assert main([*argv, "--epochs", "3", "buffer.model.width=4", "--no-progress"]) == 0

    threads = ["--threads", str(torch.get_num_threads())]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "meddistill.cli", *distill_args(ds, buf, tmp_path / "killed")]
    cmd += threads
    killed = tmp_path / "killed"
    ckpt = killed / "checkpoint.safetensors"

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not ckpt.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    # killed by us, not finished or failed on its own before the signal
    assert proc.returncode == -signal.SIGKILL, err.decode()
    reached = checkpoint_iteration(ckpt)
    assert 1 <= reached < ITERATIONS
    assert not (killed / "synthetic").exists() and not (killed / "results.json").exists()

    assert main(distill_args(ds, buf, killed)) == 0  # the same command, run again
    log = (killed / "log.txt").read_text()
    assert f"resuming from {ckpt} at iteration {reached}" in log  # resumed, not restarted
    iterations = [
        r["iteration"]
        for r in map(json.loads, (killed / "metrics.jsonl").read_text().splitlines())
        if r["stage"] == "distill"
    ]
    assert set(iterations) == set(range(ITERATIONS))
    assert not ckpt.exists()  # the set is saved: a finished run drops its checkpoint

    reference = tmp_path / "reference"
    assert main(distill_args(ds, buf, reference)) == 0
    got = load_file(str(killed / "synthetic" / "synthetic.safetensors"))
    want = load_file(str(reference / "synthetic" / "synthetic.safetensors"))
    assert sorted(got) == sorted(want) == ["images", "labels", "syn_lr"]
    for name in want:
        assert torch.equal(got[name], want[name]), name
    # the run really moved the images and the step size (not a trivially equal pair)
    assert float(want["syn_lr"]) != 0.01
    got_meta = json.loads((killed / "synthetic" / "meta.json").read_text())
    want_meta = json.loads((reference / "synthetic" / "meta.json").read_text())
    assert got_meta == want_meta
