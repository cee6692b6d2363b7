"""Issue 11, point 5: cost as a first-class result.

meddistill.costs.measure gives sane numbers (wall, user and system CPU, peak memory) and nests;
every run folder's costs.json holds each stage's cost (sessions accumulate); results.json's
buffer_s / distill_s come from it; the report shows it; `meddistill table --cost` sets accuracy
against the cost the benchmark database recorded."""

from __future__ import annotations

import json
import mmap
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from imagefolders import image_folder

from meddistill.bench.db import Artifact, Result, ResultsDB
from meddistill.cli import main
from meddistill.costs import COSTS_FILE, measure, read_costs
from meddistill.memory import reset_peak_rss
from meddistill.report.html import build_report

TINY = [
    "--seed", "5", "--threads", "1", "--no-progress", "model.width=4", "eval.num_nets=1",
    "eval.epochs=2",
]  # fmt: skip
COST_KEYS = {"wall_s", "cpu_user_s", "cpu_sys_s", "peak_rss_mb", "peak_gpu_mb", "device"}


def distill_argv(ds: Path, *extra: str) -> list[str]:
    return [
        "distill", "--method", "hoptm", "--dataset", f"folder:{ds}", "--ipc", "1",
        "--iterations", "3", "experts.num_experts=1", "experts.epochs=2", "match.syn_steps=2",
        "match.expert_epochs=1", "match.max_start=1", *TINY, *extra,
    ]  # fmt: skip


# ---------------------------------------------------------------------------------- measure


def test_a_sleep_costs_wall_time_not_cpu_time() -> None:
    with measure("sleep") as cost:
        time.sleep(0.2)
    assert cost.stage == "sleep" and cost.device == "cpu"
    assert cost.wall_s >= 0.2
    assert cost.wall_s >= cost.cpu_s >= 0 and cost.cpu_user_s >= 0 and cost.cpu_sys_s >= 0
    assert cost.cpu_s < 0.15
    assert cost.peak_gpu_mb is None and cost.threads == torch.get_num_threads()


def test_a_busy_loop_costs_cpu_time() -> None:
    with measure("busy") as cost:
        deadline, total = time.process_time() + 0.3, 0
        while time.process_time() < deadline:
            total += sum(i * i for i in range(20_000))  # arithmetic: user time
    assert total > 0
    assert cost.cpu_s >= 0.29  # process_time is this process's user + system time
    assert cost.cpu_user_s > cost.cpu_sys_s


BUSY = "import time\nt = time.process_time() + 0.3\nwhile time.process_time() < t: sum(range(999))"
# A live child that runs the busy grandchild, waits for it and stays alive (like a forkserver
# and its workers: the grandchild is the child's to reap, never ours).
SERVER = (
    "import subprocess, sys\n"
    f"subprocess.run([sys.executable, '-c', {BUSY!r}], check=True)\n"
    "print('done', flush=True)\n"
    "sys.stdin.read()"
)


def test_worker_processes_count_waited_for_or_not() -> None:
    with measure("child") as child:
        subprocess.run([sys.executable, "-c", BUSY], check=True)
    assert child.cpu_s >= 0.29
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        with measure("grandchild") as grandchild:
            assert server.stdout is not None and server.stdout.readline() == "done\n"
    finally:
        server.communicate("")
    if not Path("/proc/self/task").is_dir():
        pytest.skip("no /proc: the workers of a live process are not visible")
    assert grandchild.cpu_s >= 0.29


def _touch_fresh_pages(mib: int) -> None:
    """Make `mib` MiB resident from pages no allocator held before (an anonymous map), so the
    rise shows whatever earlier tests left free in the process's heap."""
    block = mmap.mmap(-1, mib * 2**20)
    for offset in range(0, len(block), 4096):
        block[offset] = 1
    block.close()


def test_peak_rss_covers_an_allocated_array() -> None:
    with measure("alloc") as cost:
        _touch_fresh_pages(64)
    assert cost.peak_rss_mb is not None and cost.peak_rss_mb >= 64
    if cost.rss_kind == "rss_hwm":  # the peak mark could be reset: the rise itself is exact
        assert 56 <= cost.peak_mem_mb < 200


def test_an_inner_measurement_keeps_the_outer_peak() -> None:
    """The inner one resets the kernel's peak mark; the outer one still sees what came before."""
    if not reset_peak_rss():
        pytest.skip("this kernel cannot reset the peak RSS mark (/proc/self/clear_refs)")
    with measure("outer") as outer:
        _touch_fresh_pages(64)
        with measure("inner") as inner:
            assert float(torch.ones(1000).sum()) == 1000
    assert inner.peak_mem_mb < 20
    assert outer.peak_mem_mb >= 56 and outer.wall_s >= inner.wall_s


class FakeCuda:
    """torch.cuda's memory counters, driven by hand (no GPU needed to check the CUDA path)."""

    def __init__(self) -> None:
        self.now, self.peak = 10 * 2**20, 10 * 2**20

    def use(self, nbytes: int) -> None:
        self.now += nbytes
        self.peak = max(self.peak, self.now)

    def reset(self, device: object = None) -> None:
        self.peak = self.now


def test_the_cuda_path_reads_the_allocator_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = FakeCuda()
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", gpu.reset)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: gpu.now)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: gpu.peak)
    with measure("outer", "cuda") as outer:
        gpu.use(300 * 2**20)
        gpu.use(-300 * 2**20)
        with measure("inner", "cuda") as inner:  # resets the peak: outer keeps its 310 MiB
            gpu.use(50 * 2**20)
    assert outer.device == inner.device == "cuda" and outer.mem_kind == "cuda_allocated"
    assert inner.peak_gpu_mb == 60 and inner.peak_mem_mb == 50
    assert outer.peak_gpu_mb == 310 and outer.peak_mem_mb == 300
    assert outer.peak_rss_mb is not None  # host memory is measured on CUDA too


# ---------------------------------------------------------------------------------- run folders


@pytest.fixture(scope="module")
def distilled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny distill run folder, made once for the tests below (which may add to it)."""
    root = tmp_path_factory.mktemp("costs")
    ds = image_folder(root / "ds", {"a": 6, "b": 6, "c": 6})
    argv = [*distill_argv(ds), "--runs-dir", str(root / "runs")]
    assert main(argv) == 0
    (run,) = (root / "runs" / "distill").iterdir()
    return run


def test_costs_json_holds_every_stage_and_the_device(distilled: Path) -> None:
    costs = read_costs(distilled)
    assert costs["device"] == "cpu" and costs["threads"] == 1 and costs["device_name"]
    assert list(costs["stages"]) == ["buffer", "distill", "final_eval"]
    for name, total in costs["stages"].items():
        assert total["sessions"] == 1, name
        assert set(total) >= COST_KEYS and total["wall_s"] > 0 and total["peak_rss_mb"] > 0
        assert total["cpu_s"] == pytest.approx(total["cpu_user_s"] + total["cpu_sys_s"])
    assert [s["stage"] for s in costs["sessions"]] == ["buffer", "distill", "final_eval"]
    assert costs["sessions"][-1]["eval_id"]
    assert not (distilled / "timings.json").exists()  # costs.json replaced it
    results = json.loads((distilled / "results.json").read_text())
    assert results["buffer_s"] == round(costs["stages"]["buffer"]["wall_s"], 1)
    assert results["distill_s"] == round(costs["stages"]["distill"]["wall_s"], 1)
    log = (distilled / "log.txt").read_text()
    for stage in ("stage buffer:", "stage distill: hoptm ipc 1 in", "stage final evaluation"):
        (line,) = [x for x in log.splitlines() if stage in x]
        assert " user + " in line and "peak rss" in line, line


def test_a_re_evaluated_run_adds_a_session(distilled: Path) -> None:
    """The same configuration again: the set is kept, its evaluation is a second session."""
    argv = ["distill", "--config", str(distilled / "config.yaml"), "--no-progress"]
    assert main([*argv, "--threads", "1", "--runs-dir", str(distilled.parents[1])]) == 0
    stages = read_costs(distilled)["stages"]
    assert stages["buffer"]["sessions"] == stages["distill"]["sessions"] == 1
    assert stages["final_eval"]["sessions"] == 2
    sessions = read_costs(distilled)["sessions"]
    evals = [s["wall_s"] for s in sessions if s["stage"] == "final_eval"]
    assert stages["final_eval"]["wall_s"] == pytest.approx(sum(evals), abs=2e-3)
    results = json.loads((distilled / "results.json").read_text())
    assert results["distill_s"] == round(stages["distill"]["wall_s"], 1)  # still filled


def test_the_report_shows_the_costs(distilled: Path) -> None:
    page = build_report(distilled, figures=False).read_text()
    assert 'id="costs"' in page and "final eval" in page and "peak RSS (MB)" in page


def test_evaluate_and_baseline_record_their_costs(distilled: Path, workdir: Path) -> None:
    ds = image_folder(workdir / "ds", {"a": 6, "b": 6, "c": 6})
    syn = distilled / "synthetic"
    argv = ["evaluate", "--dataset", f"folder:{ds}", "--synthetic", str(syn), *TINY]
    assert main(argv) == 0
    (run,) = (workdir / "runs" / "evaluate").iterdir()
    assert list(read_costs(run)["stages"]) == ["evaluate"]
    argv = ["baseline", "--dataset", f"folder:{ds}", "--no-full", "--ipc", "1", *TINY]
    assert main(argv) == 0
    (run,) = (workdir / "runs" / "baseline").iterdir()
    stages = read_costs(run)["stages"]
    assert list(stages) == ["random_ipc1"] and stages["random_ipc1"]["cpu_s"] > 0
    assert "peak rss" in (run / "log.txt").read_text()


def test_the_buffer_command_records_its_cost(workdir: Path) -> None:
    ds = image_folder(workdir / "ds", {"a": 6, "b": 6, "c": 6})
    argv = ["buffer", "--dataset", f"folder:{ds}", "--out", "buf", "--experts", "1"]
    argv += ["--epochs", "1", "buffer.model.width=4", "--no-progress", "--threads", "1"]
    assert main(argv) == 0
    costs = json.loads((workdir / "buf" / "run" / COSTS_FILE).read_text())
    assert list(costs["stages"]) == ["buffer"] and costs["device"] == "cpu"


# ---------------------------------------------------------------------------------- table --cost


def test_table_cost_sets_accuracy_against_cost(tmp_path: Path, capsys) -> None:
    path = tmp_path / "results.sqlite"
    with ResultsDB(path) as db:
        db.add_eval("ev", {})
        made = {"wall_s": 100.0, "cpu_s": 150.0, "peak_mem_mb": 512.0, "mem_kind": "rss_hwm"}
        db.add_artifact(Artifact("buf", "buffer", "toy", "buffer", None, 0, "b", wall_s=40.0))
        for seed, acc in ((0, 0.6), (1, 0.7)):
            art = f"hoptm-{seed}"
            db.add_artifact(Artifact(art, "synthetic", "toy", "hoptm", 1, seed, "s", parent="buf",
                                     **{**made, "wall_s": 100.0 + 20 * seed}))  # fmt: skip
            db.add_result(Result(art, "convnet", "ev", seed, 0, acc, 0.5, 1.0, 2, 0.01, wall_s=3.0))
        db.add_artifact(Artifact("rand", "baseline", "toy", "random", 1, 0, "r"))
        db.add_result(Result("rand", "convnet", "ev", 0, 0, 0.4, 0.5, 1.0, 2, 0.01, wall_s=2.0))
    assert main(["table", "--db", str(path), "--cost"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == (
        "| Method | Dataset | IPC | accuracy (%) | % of full | over random | set wall (s) | "
        "set CPU (s) | set peak mem (MB) | buffer wall (s) | eval wall (s/net) | set bytes |"
    )
    # no full-data row here: '% of full' is '-'; HoP-TM gains 65 - 40 = 25 points over random
    assert lines[2] == "| Random | toy | 1 | 40.00 ± 0.00 | - | - | - | - | - | - | 2.00 | - |"
    assert lines[3] == (
        "| HoP-TM | toy | 1 | 65.00 ± 5.00 | - | +25.00 | 110.0 | 150.0 | 512 | 40.0 | 3.00 | - |"
    )
    assert main(["table", "--db", str(path), "--cost", "--kind", "cross-arch"]) == 2
    assert "--cost goes with the main table" in capsys.readouterr().err


def test_table_cost_compares_soft_labels_with_real_images_under_the_same_labels(
    tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "synthetic.safetensors").write_bytes(b"x" * 1234)
    path = tmp_path / "results.sqlite"
    soft = {"match": {"soft_labels": True}}
    cells = [
        ("rand", "baseline", "random", 0.40, {}, None),
        ("rsoft", "synthetic", "random+soft", 0.55, soft, None),
        ("mtt", "synthetic", "mtt", 0.50, {}, None),
        ("hop", "synthetic", "hoptm+soft", 0.60, soft, str(folder)),
    ]
    with ResultsDB(path) as db:
        db.add_eval("ev", {})
        for art, kind, method, acc, config, where in cells:
            db.add_artifact(
                Artifact(art, kind, "toy", method, 1, 0, art, config=config, path=where)
            )
            db.add_result(Result(art, "convnet", "ev", 0, 0, acc, 0.5, 1.0, 2, 0.01))
    assert main(["table", "--db", str(path), "--cost"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[2:]
    over = {line.split(" | ")[0][2:]: line.split(" | ")[5] for line in lines}
    # hard labels against the random subset (50 - 40); soft against real images under the
    # same soft labels (60 - 55), not against the hard-label random row (which would be +20)
    assert over == {"Random": "-", "Random +soft": "-", "MTT": "+10.00", "HoP-TM +soft": "+5.00"}
    assert lines[-1].startswith("| HoP-TM +soft") and lines[-1].endswith("| 1234 |")
