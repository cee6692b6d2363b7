"""The real glue to meddistill.app: one shared buffer, tiny distillations, reused on re-run.

Tiny on purpose (8x8 images, ConvNet-1 of width 4, 2 iterations, 1 evaluation network of 2
epochs): it checks folders, hashes and reuse, not accuracy.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from imagefolders import image_folder

from meddistill.bench import runners
from meddistill.bench.db import ResultsDB
from meddistill.bench.plan import plan
from meddistill.bench.run import run_grid
from meddistill.bench.spec import grid_from_dict
from meddistill.bench.tables import main_table
from meddistill.data.synthetic import SyntheticSet


def test_grid_runs_jobs_shares_the_buffer_and_reuses_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDDISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MEDDISTILL_DATA", raising=False)
    ds = image_folder(tmp_path / "ds", {"a": 6, "b": 6, "c": 6})
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
        "eval": {"num_nets": 1, "epochs": 2, "batch_size": 16},
    }
    grid = {
        "name": "tiny",
        "datasets": [{"name": "toy", "config": tiny}],
        "methods": ["mtt", "hoptm", "dm"],
        "method_overrides": {
            m: [
                "match.syn_steps=2",
                "match.expert_epochs=1",
                "match.max_start=1",
                "match.step_size_param=log",
                "match.lr_lr=1e-3",
                "match.lr_img=10",
            ]
            for m in ("mtt", "hoptm")
        },
        "baselines": ["random"],
        "ipcs": [1],
        "seeds": [0],
        "eval_archs": ["convnet"],
        "device": "cpu",
    }
    runs = tmp_path / "runs"
    summary = run_grid(grid_from_dict(grid), runs, progress=False, log=None)
    assert summary["networks_trained"] == 4
    with ResultsDB(runs / "results.sqlite") as db:
        buffers = db.artifacts(kind="buffer")
        synthetic = {a.method: a for a in db.artifacts(kind="synthetic")}
        assert len(buffers) == 1  # both trajectory methods match the same experts
        assert sorted(synthetic) == ["dm", "hoptm", "mtt"]
        assert synthetic["mtt"].parent == synthetic["hoptm"].parent == buffers[0].id
        assert synthetic["dm"].parent is None  # an objective method: no experts
        synthetic = list(synthetic.values())
        assert Path(buffers[0].path).parent == (runs / "buffers").resolve()
        for art in synthetic:
            assert (Path(art.path) / "synthetic.safetensors").is_file()
            assert Path(art.path).parent.parent == (runs / "distill").resolve()
            assert art.wall_s > 0 and art.peak_mem_mb is not None
        rows = db.results()
        assert len(rows) == 4 and all(0.0 <= r.acc <= 1.0 and r.epochs == 2 for r in rows)
        syn_lr = {r.method: r.lr for r in rows}
        assert syn_lr["random"] == 0.01 and syn_lr["mtt"] != 0.01  # the learned step size

    # A database lost after the distillations (a kill between a job and its row): the jobs
    # find their hash-named folders and their finished sets, nothing is trained twice.
    for f in runs.glob("results.sqlite*"):
        f.unlink()
    run_grid(grid_from_dict(grid), runs, progress=False, log=None)
    assert len(list((runs / "buffers").iterdir())) == 1
    distilled = sorted((runs / "distill").iterdir())
    assert len(distilled) == 3
    for folder in distilled:
        assert (
            "was made by this configuration; evaluating it again"
            in (folder / "log.txt").read_text()
        )

    # Run again with another evaluation architecture: no expert, no distillation is redone.
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished artifact was made again")

    monkeypatch.setattr(runners, "run_distill", refuse)
    monkeypatch.setattr(runners, "run_buffer", refuse)
    grid["eval_archs"] = ["convnet", "lenet"]
    again = run_grid(grid_from_dict(grid), runs, progress=False, log=None)
    assert again["networks_trained"] == 4 and again["skipped"] == 0
    with ResultsDB(runs / "results.sqlite") as db:
        assert db.count("results") == 8 and db.count("artifacts") == 5
        cells = plan(grid_from_dict(grid))
        assert {c.artifact_id for c in cells} == {a.id for a in db.artifacts()} - {
            a.id for a in db.artifacts(kind="buffer")
        }


def test_coreset_cells_need_no_method_preset_and_train_at_the_random_lr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDDISTILL_CACHE", str(tmp_path / "cache"))
    ds = image_folder(tmp_path / "ds", {"a": 6, "b": 6})
    tiny = {
        "dataset": {"name": f"folder:{ds}"},
        "model": {"name": "convnet", "depth": 1, "width": 4},
        "eval": {"num_nets": 1, "epochs": 2, "batch_size": 16},
        "coreset": {"feature_epochs": 1},
    }
    grid = {
        "name": "coresets",
        "datasets": [{"name": "toy", "config": tiny}],
        "methods": ["herding", "kcenter"],
        "method_preset": "no/such/{method}/ipc{ipc}.yaml",  # coresets never read it
        "baselines": [],
        "ipcs": [2],
        "seeds": [0],
        "eval_archs": ["convnet"],
        "random_lr": 0.02,
        "device": "cpu",
    }
    cells = plan(grid_from_dict(grid))
    assert [c.config["method"] for c in cells] == ["herding", "kcenter"]
    assert cells[0].config["match"] == {"ipc": 2, "feature_epochs": 1}
    assert "experts" not in cells[0].config
    assert cells[0].eval["lr"] == 0.02
    run_grid(grid_from_dict(grid), tmp_path / "runs", progress=False, log=None)
    with ResultsDB(tmp_path / "runs" / "results.sqlite") as db:
        rows = db.results()
        assert sorted(r.method for r in rows) == ["herding", "kcenter"]
        assert all(r.lr == 0.02 for r in rows)
        for art in db.artifacts(kind="synthetic"):
            syn = SyntheticSet.load(art.path)
            assert syn.images.shape[0] == 4 and syn.meta["method"] == f"coreset-{art.method}"
            assert art.wall_s is not None and art.wall_s >= 0


def test_a_variant_is_its_method_under_other_settings_in_a_row_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDDISTILL_CACHE", str(tmp_path / "cache"))
    ds = image_folder(tmp_path / "ds", {"a": 6, "b": 6})
    tiny = {
        "dataset": {"name": f"folder:{ds}"},
        "model": {"name": "convnet", "depth": 1, "width": 4},
        "experts": {"num_experts": 1, "epochs": 1, "train": {"epochs": 1, "batch_size": 16}},
        "expert_optimizer": "sgd",
        "match": {
            "iterations": 1,
            "syn_steps": 2,
            "expert_epochs": 1,
            "max_start": 1,
            "step_size_param": "log",
            "lr_lr": 1e-3,
            "lr_img": 10,
        },
        "eval": {"num_nets": 1, "epochs": 1, "batch_size": 16},
    }
    unmatched = ["match.iterations=0", "match.soft_labels=true", "match.learn_labels=false"]
    grid = {
        "name": "labels",
        "datasets": [{"name": "toy", "config": tiny}],
        "methods": ["mtt", "mtt+unmatched"],
        "variants": {"mtt+unmatched": {"method": "mtt", "overrides": unmatched}},
        "baselines": [],
        "ipcs": [1],
        "device": "cpu",
    }
    run_grid(grid_from_dict(grid), tmp_path / "runs", progress=False, log=None)
    with ResultsDB(tmp_path / "runs" / "results.sqlite") as db:
        made = {a.method: a for a in db.artifacts(kind="synthetic")}
        assert sorted(made) == ["mtt", "mtt+unmatched"]
        assert made["mtt"].parent == made["mtt+unmatched"].parent  # one buffer
        match = made["mtt+unmatched"].config["match"]
        assert match["iterations"] == 0 and match["soft_labels"] and not match["learn_labels"]
        assert made["mtt+unmatched"].config["method"] == "mtt"
        soft = SyntheticSet.load(Path(made["mtt+unmatched"].path) / "synthetic.safetensors")
        hard = SyntheticSet.load(Path(made["mtt"].path) / "synthetic.safetensors")
        assert soft.labels.shape == (2, 2) and hard.labels.tolist() == [0, 1]
        rows = main_table(db, grid="labels").rows
    assert [name for name, _ in rows] == ["MTT", "MTT +unmatched"]
