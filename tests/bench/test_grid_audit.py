"""grid.audit: every synthetic set of a tiny real grid is audited after its evaluation (LiRA
too, its shadows made as the set was, experts from the shared buffer's buffer.json), recorded
in the audits table, skipped on a re-run, shown by `meddistill table --kind audit` and by the
set's report page; identities of the cells are those of the grid without audits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from imagefolders import image_folder

from meddistill.bench import audits as bench_audits
from meddistill.bench.db import ResultsDB
from meddistill.bench.plan import plan
from meddistill.bench.run import run_grid
from meddistill.bench.spec import grid_from_dict
from meddistill.bench.tables import make_table
from meddistill.cli import main
from meddistill.errors import ConfigError
from meddistill.report.html import build_report

AUDIT = {
    "enabled": True, "bootstrap": 20, "pairs": 1, "references": ["full"], "shadows": 2,
    "shadow_overrides": ["match.iterations=1"], "full_train": {"epochs": 1},
    "eval": {"num_nets": 1, "epochs": 2, "batch_size": 16},
}  # fmt: skip


def tiny_grid(ds: Path, audit: dict | None) -> dict:
    tiny = {
        "dataset": {"name": f"folder:{ds}"},
        "model": {"name": "convnet", "depth": 1, "width": 4},
        "experts": {"num_experts": 1, "epochs": 2,
                    "train": {"epochs": 2, "lr": 0.01, "momentum": 0.0, "batch_size": 16}},
        "expert_optimizer": "sgd",
        "match": {"iterations": 2},
        "eval": {"num_nets": 1, "epochs": 2, "batch_size": 16},
    }  # fmt: skip
    mtt = ["match.syn_steps=2", "match.expert_epochs=1", "match.max_start=1",
           "match.step_size_param=log", "match.lr_lr=1e-3", "match.lr_img=10"]  # fmt: skip
    grid = {"name": "tiny", "datasets": [{"name": "toy", "config": tiny}],
            "methods": ["mtt", "dm"], "method_overrides": {"mtt": mtt}, "baselines": [],
            "ipcs": [1], "seeds": [0], "eval_archs": ["convnet"], "device": "cpu"}  # fmt: skip
    return grid if audit is None else {**grid, "audit": audit}


@pytest.fixture(autouse=True)
def _in_workdir(workdir: Path) -> Path:
    return workdir


def test_a_grid_audits_its_sets_once_and_tables_them(workdir, capsys, monkeypatch):
    ds = image_folder(workdir / "ds", {"a": 8, "b": 8, "c": 8})
    plain = plan(grid_from_dict(tiny_grid(ds, None)))
    cells = plan(grid_from_dict(tiny_grid(ds, AUDIT)))
    assert [c.artifact_id for c in cells] == [c.artifact_id for c in plain]  # ids unchanged
    assert all(c.audit_id and c.audit_id != c.artifact_id for c in cells)
    runs = workdir / "runs"
    summary = run_grid(grid_from_dict(tiny_grid(ds, AUDIT)), runs, progress=False, log=None)
    assert summary["networks_trained"] == 2
    with ResultsDB(runs / "results.sqlite") as db:
        audits = db.audits(grid="tiny")
        assert sorted(a.method for a in audits) == ["dm", "mtt"]
        for a in audits:
            assert a.light in ("green", "amber", "red") and a.shadows == 2
            assert a.attack_auc_lo <= a.attack_auc <= a.attack_auc_hi
            assert a.lira_auc is not None and a.wall_s > 0
            data = json.loads(Path(a.path).read_text())
            assert data["verdict"]["light"] == a.light and data["lira"]["shadows"] == 2
            assert Path(a.path).parent.parent == Path(db.artifact(a.artifact_id).path).parent
        mtt = next(a for a in audits if a.method == "mtt")
        # the set was distilled from the grid's shared buffer: its shadows made experts alike
        job = json.loads(Path(mtt.path).read_text())["config"]["job"]
        assert job["audit"]["shadow_overrides"] == ["match.iterations=1"]

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an audited set was audited again")

    monkeypatch.setattr(bench_audits, "run_audit", refuse)
    again = run_grid(grid_from_dict(tiny_grid(ds, AUDIT)), runs, progress=False, log=None)
    assert again["networks_trained"] == 0 and again["skipped"] == 2
    other = {**tiny_grid(ds, AUDIT), "name": "other"}  # another grid, the same audits
    run_grid(grid_from_dict(other), runs, progress=False, log=None)
    with ResultsDB(runs / "results.sqlite") as db:
        assert db.count("audits") == 2 and db.count("grid_audits") == 4

    assert main(["table", "--runs-dir", str(runs), "--grid", "tiny", "--kind", "audit"]) == 0
    out = capsys.readouterr().out
    assert "| Method | Dataset | IPC | Seed | Verdict | Near copies (pixel / features) |" in out
    assert "LiRA AUC [95 % CI]" in out and "| DM | toy | 1 | 0 |" in out and "| MTT |" in out
    page = build_report(Path(mtt.path).parent.parent).read_text()
    assert "Privacy audit" in page and f"light-{mtt.light}" in page


def test_bad_audit_sections_are_refused_when_the_grid_is_read(workdir):
    ds = workdir / "ds"
    for section, words in (({"enabled": "yes"}, "grid.audit.enabled must be true or false"),
                           ({"enabled": True, "quantile": 2}, "grid.audit: option audit.quantile"),
                           ({"enabled": True, "nope": 1}, "unknown option(s) audit.nope")):  # fmt: skip
        with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
            grid_from_dict(tiny_grid(ds, section))
    off = plan(grid_from_dict(tiny_grid(ds, {"enabled": False, "quantile": 2})))
    assert all(c.audit is None for c in off)
    with (
        ResultsDB(workdir / "r.sqlite") as db,
        pytest.raises(ConfigError, match="no audits with these filters"),
    ):
        make_table(db, "audit")
