"""`torchrun --nproc_per_node 2 -m meddistill ...` on CPU (gloo): the commands a user runs.

Buffer and distillation with 2 windows per iteration on 2 ranks end with the set one process
makes; rank 0 alone writes the run folder; a rank killed mid-run fails the job, and the same
command then resumes from the last checkpoint to the same set.
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
from safetensors.torch import load_file

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ITERATIONS = 12


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "MEDDISTILL_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    env.pop("MEDDISTILL_DATA", None)
    env.pop("WORLD_SIZE", None)
    return env


def _distill(ds: Path, buf: Path, out: Path) -> list[str]:
    return [
        "-m", "meddistill", "distill", "--method", "hoptm", "--dataset", f"folder:{ds}",
        "--buffer", str(buf), "--out", str(out), "--ipc", "2", "--iterations", str(ITERATIONS),
        "--seed", "7", "--no-progress", "--threads", "1", "model.width=4", "match.syn_steps=4",
        "match.max_start=2", "match.checkpoint_every=1", "match.windows_per_iteration=2",
        "eval.num_nets=2", "eval.epochs=5",
    ]  # fmt: skip


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A tiny image folder and its 3-expert buffer made by 2 ranks."""
    tmp = tmp_path_factory.mktemp("torchrun")
    ds = image_folder(tmp / "ds", {"a": 6, "b": 6, "c": 6})
    buf = tmp / "buf"
    cmd = [*TORCHRUN, "-m", "meddistill", "buffer", "--dataset", f"folder:{ds}", "--out",
           str(buf), "--experts", "3", "--epochs", "3", "--threads", "1", "--no-progress",
           "buffer.model.width=4"]  # fmt: skip
    _run(cmd, _env(tmp), tmp)
    return tmp, ds, buf


def test_buffer_on_two_ranks_holds_every_expert(folders):
    _, _, buf = folders
    meta = json.loads((buf / "buffer.json").read_text())
    assert [e["index"] for e in meta["experts"]] == [0, 1, 2]
    assert sorted(p.name for p in buf.glob("expert_*.safetensors")) == [
        f"expert_{i:03d}.safetensors" for i in range(3)
    ]


def _set(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "synthetic" / "synthetic.safetensors"))


def test_distill_on_two_ranks_matches_one_process_and_survives_a_killed_rank(folders):
    tmp, ds, buf = folders
    env = _env(tmp)
    _run([sys.executable, *_distill(ds, buf, tmp / "one")], env, tmp)
    two = tmp / "two"
    proc = subprocess.Popen([*TORCHRUN, *_distill(ds, buf, two)], env=env, cwd=tmp,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    ckpt = two / "checkpoint.safetensors"
    deadline = time.monotonic() + 180
    while not ckpt.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    ranks = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
    os.kill(int(ranks.stdout.split()[-1]), signal.SIGKILL)  # one rank dies mid-run
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0, err[-2000:]
    assert not (two / "synthetic").exists()

    _run([*TORCHRUN, *_distill(ds, buf, two)], env, tmp)  # the same command again
    assert "resuming from" in (two / "log.txt").read_text()
    one_set, two_set = _set(tmp / "one"), _set(two)
    for name in one_set:
        assert torch.equal(one_set[name], two_set[name]), name
    records = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    steps = [r["iteration"] for r in records if r["stage"] == "distill"]
    assert sorted(steps) == list(range(ITERATIONS))  # each iteration logged once, by rank 0
    got, want = (json.loads((f / "results.json").read_text())["rows"] for f in (two, tmp / "one"))
    assert len(got) == 1 and len(got[0]["archs"]["convnet"]["nets"]) == 2  # one net per rank
    assert got[0]["archs"]["convnet"]["nets"] == want[0]["archs"]["convnet"]["nets"]
    costs = json.loads((two / "costs.json").read_text())
    assert all(s.get("ranks") == 2 for s in costs["sessions"])


def test_evaluate_on_two_ranks_trains_the_networks_one_process_trains(folders):
    tmp, ds, _ = folders
    env = _env(tmp)
    evaluate = ["-m", "meddistill", "evaluate", "--dataset", f"folder:{ds}", "--ipc", "2",
                "--threads", "1", "--no-progress", "eval.num_nets=3", "eval.epochs=4"]  # fmt: skip
    one = _run([sys.executable, *evaluate, "--runs-dir", str(tmp / "runs-one")], env, tmp)
    two = _run([*TORCHRUN, *evaluate, "--runs-dir", str(tmp / "runs-two")], env, tmp)
    # rank 0 printed the table once (only the wall-time column may differ)
    assert two.stdout.count("results:") == 1
    assert len(two.stdout.splitlines()) == len(one.stdout.splitlines())
    rows = [
        json.loads(next((tmp / runs).glob("evaluate/*/results.json")).read_text())["rows"]
        for runs in ("runs-one", "runs-two")
    ]
    assert len(rows[1][0]["archs"]["convnet"]["nets"]) == 3  # 2 on rank 0, 1 on rank 1
    assert rows[0][0]["archs"] == rows[1][0]["archs"]
