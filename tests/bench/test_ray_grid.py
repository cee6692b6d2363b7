"""Grids on Ray (bench/ray_grid.py): the same rows as one process, each row once, retries.

Tiny real jobs (8x8 images, ConvNet-1 of width 4, 2 iterations, networks of 2 epochs) in one
local Ray session of 2 CPUs shared by the module; workers are other processes, so nothing is
faked with monkeypatch: a hook shipped with the tasks kills a worker instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from imagefolders import image_folder

from meddistill.bench.db import ResultsDB
from meddistill.bench.run import run_grid
from meddistill.bench.spec import grid_from_dict
from meddistill.cli import main

ray = pytest.importorskip("ray")

from meddistill.bench.ray_grid import run_grid_ray  # noqa: E402


@pytest.fixture(scope="module")
def ray_local() -> Any:
    """One local Ray session for the module (run_grid_ray uses it and leaves it running)."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A generated 3-class image folder; the test's own cache (it travels to the workers)."""
    monkeypatch.setenv("MEDDISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MEDDISTILL_DATA", raising=False)
    return image_folder(tmp_path / "ds", {"a": 6, "b": 6, "c": 6})


def tiny_grid(ds: Path, **extra: Any) -> dict[str, Any]:
    """Two trajectory methods sharing one buffer, DM and the random subset, 2 networks each."""
    tiny = {
        "dataset": {"name": f"folder:{ds}"},
        "model": {"name": "convnet", "depth": 1, "width": 4},
        "experts": {
            "num_experts": 1,
            "epochs": 2,
            "train": {"epochs": 2, "lr": 0.01, "momentum": 0.0, "batch_size": 16},
        },
        "expert_optimizer": "sgd",
        "match": {"iterations": 2},
        "eval": {"num_nets": 2, "epochs": 2, "batch_size": 16},
    }
    short = ["match.syn_steps=2", "match.expert_epochs=1", "match.max_start=1",
             "match.step_size_param=log", "match.lr_lr=1e-3", "match.lr_img=10"]  # fmt: skip
    return {
        "name": "tiny",
        "datasets": [{"name": "toy", "config": tiny}],
        "methods": ["mtt", "hoptm", "dm"],
        "method_overrides": {"mtt": short, "hoptm": short},
        "baselines": ["random"],
        "ipcs": [1],
        "seeds": [0],
        "eval_archs": ["convnet"],
        "device": "cpu",
        **extra,
    }


def rows(db_path: Path) -> dict[tuple[str, str, int], tuple[Any, ...]]:
    """The numbers of every network, by (artifact, arch, eval seed)."""
    with ResultsDB(db_path, create=False) as db:
        return {
            (r.artifact_id, r.arch, r.eval_seed): (r.method, r.acc, r.auc, r.val_acc, r.lr)
            for r in db.results(grid="tiny")
        }


@pytest.mark.slow
def test_ray_gives_the_rows_of_one_process(ray_local, data, tmp_path, one_thread) -> None:
    grid = grid_from_dict(tiny_grid(data))
    one = run_grid(grid, tmp_path / "one", progress=False, log=None)
    lines: list[str] = []
    many = run_grid_ray(grid, tmp_path / "ray", log=lines.append, threads=1)
    assert {k: v for k, v in many.items() if k != "db"} == {
        k: v for k, v in one.items() if k != "db"
    }
    assert many["networks_trained"] == 8 and many["skipped"] == 0
    a, b = rows(tmp_path / "one" / "results.sqlite"), rows(tmp_path / "ray" / "results.sqlite")
    assert len(a) == 8 and sorted({v[0] for v in a.values()}) == ["dm", "hoptm", "mtt", "random"]
    assert a == b  # seeded: bit for bit, acc, AUC, val acc and the learned lr
    with ResultsDB(tmp_path / "ray" / "results.sqlite", create=False) as db:
        buffers = db.artifacts(kind="buffer")
        assert len(buffers) == 1  # made once, by its own task, before its two cells
        synthetic = {x.method: x for x in db.artifacts(kind="synthetic")}
        assert synthetic["mtt"].parent == synthetic["hoptm"].parent == buffers[0].id
        assert db.count("grid_cells") == 4 and db.count("claims") == 0
        assert Path(buffers[0].path).parent == (tmp_path / "ray" / "buffers").resolve()
    assert sum("buffer" in line and "made" in line for line in lines) == 1
    assert sum(line.startswith("[") and "2 networks" in line for line in lines) == 4


@pytest.mark.slow
def test_ray_trains_only_what_a_one_process_run_left(ray_local, data, tmp_path) -> None:
    one = tiny_grid(data)
    runs = tmp_path / "runs"
    run_grid(grid_from_dict(one).subset(methods=["hoptm"]), runs, progress=False, log=None)
    with ResultsDB(runs / "results.sqlite", create=False) as db:
        before = {a.id: a for a in db.artifacts()}  # the buffer, hoptm's set, the random subset
    lines: list[str] = []
    more = grid_from_dict({**one, "eval_archs": ["convnet", "lenet"]})
    summary = run_grid_ray(more, runs, log=lines.append, threads=1)
    assert summary["networks_trained"] == 2 * 2 + 2 * 4  # lenet of the two done, all of the two new
    assert sum("buffer: reusing" in line for line in lines) == 1  # mtt's, from the database
    assert not any("training experts" in line for line in lines)
    made = sorted(line.strip() for line in lines if "distill:" in line)
    assert made == ["distill: dm ipc 1 seed 0", "distill: mtt ipc 1 seed 0"]  # not hoptm again
    with ResultsDB(runs / "results.sqlite", create=False) as db:
        assert db.count("results") == 16 and db.count("artifacts") == 5
        for art_id, art in before.items():
            assert db.artifact(art_id) == art  # not written again, not even its `updated`


def _crash_once(marker: Path, label: str) -> Any:
    """A hook that kills the worker of `label` once, after its artifact is made."""

    def hook(stage: str, cell: Any) -> None:
        if stage == "produced" and cell.label() == label and not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)  # as a killed worker: no exception, no return value

    return hook


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_each_row_written_once(ray_local, data, tmp_path) -> None:
    grid = grid_from_dict(tiny_grid(data))
    runs, marker = tmp_path / "runs", tmp_path / "killed"
    hook = _crash_once(marker, "toy hoptm ipc1 seed0")
    summary = run_grid_ray(grid, runs, log=None, threads=1, max_retries=2, hook=hook)
    assert marker.is_file()  # the first attempt died
    assert summary["networks_trained"] == 8
    with ResultsDB(runs / "results.sqlite", create=False) as db:
        assert db.count("results") == 8 and db.count("artifacts") == 5
        hoptm = db.artifacts(method="hoptm")[0]
    # the retry found the distillation the killed worker had finished and did not redo it
    log = (Path(hoptm.path).parent / "log.txt").read_text()
    assert "was made by this configuration; evaluating it again" in log
    again = run_grid_ray(grid, runs, log=None, threads=1)
    assert again["networks_trained"] == 0 and again["skipped"] == 4
    with ResultsDB(runs / "results.sqlite", create=False) as db:
        assert db.count("results") == 8


@pytest.mark.slow
def test_a_worker_killed_more_often_than_retried_fails_the_grid_after_the_rest(
    ray_local, data, tmp_path
) -> None:
    grid = grid_from_dict(tiny_grid(data)).subset(methods=["dm"])
    runs = tmp_path / "runs"

    def always(stage: str, cell: Any) -> None:
        if stage == "cell" and cell.method == "dm":
            os._exit(1)

    with pytest.raises(ray.exceptions.WorkerCrashedError):
        run_grid_ray(grid, runs, log=None, threads=1, max_retries=0, hook=always)
    with ResultsDB(runs / "results.sqlite", create=False) as db:
        assert {r.method for r in db.results()} == {"random"}  # the other cell is recorded


def test_a_failed_buffer_fails_its_cells_and_its_error_is_raised(ray_local, data, tmp_path):
    from meddistill.errors import ConfigError

    def refuse(stage: str, cell: Any) -> None:
        if stage == "buffer":
            raise ConfigError("no experts today")

    lines: list[str] = []
    with pytest.raises(ConfigError, match="no experts today"):  # the cause, not Ray's wrapper
        run_grid_ray(grid_from_dict(tiny_grid(data)), tmp_path / "runs", log=lines.append,
                     threads=1, hook=refuse)  # fmt: skip
    assert sum("not run, its buffer failed" in line for line in lines) == 2  # mtt and hoptm
    with ResultsDB(tmp_path / "runs" / "results.sqlite", create=False) as db:
        assert {r.method for r in db.results()} == {"dm", "random"}
        assert db.count("results") == 4


def test_cli_ray_with_filters_and_an_override_after_the_flag(
    ray_local, data, tmp_path, capsys, monkeypatch
) -> None:
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_grid(data)))
    runs = tmp_path / "runs"
    args = ["bench", str(path), "--runs-dir", str(runs), "--methods", "dm", "--no-progress"]
    assert main([*args, "--ray", "eval_archs=[lenet]"]) == 0
    out = capsys.readouterr().out
    assert "toy dm ipc1 seed0: 2 networks" in out and '"networks_trained": 4' in out
    with ResultsDB(runs / "results.sqlite", create=False) as db:
        # the grid's baselines stay, as without Ray; no buffer: no trajectory method asked for
        assert {(r.method, r.arch) for r in db.results()} == {("dm", "lenet"), ("random", "lenet")}
        assert db.count("artifacts") == 2
    assert main([*args, "--ray", "eval_archs=[lenet]"]) == 0
    assert "done already" in capsys.readouterr().out


def test_without_ray_the_error_says_what_to_install(monkeypatch) -> None:
    import builtins

    from meddistill.bench import ray_grid
    from meddistill.errors import ConfigError

    real = builtins.__import__

    def no_ray(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ConfigError, match=r"pip install 'meddistill\[cluster\]'"):
        ray_grid.import_ray()
