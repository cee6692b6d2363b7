"""`meddistill audit RUN audit.shadows=2`: LiRA against the whole pipeline on a tiny distill
run; the shadows follow the run's config.yaml with the overrides, say their cost first,
record their wall times, resume from their records; a set without its recipe is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from imagefolders import image_folder

from meddistill.cli import main

TINY = ["model.depth=1", "model.width=4", "--no-progress", "--threads", "1"]
DISTILL = ["--method", "mtt", "--experts", "1", "--expert-epochs", "2", "--ipc", "1",
           "--iterations", "2", "match.syn_steps=2", "match.expert_epochs=1",
           "match.max_start=1", "match.step_size_param=log", "match.lr_lr=1e-3",
           "final_eval=false", "experts.train.batch_size=16"]  # fmt: skip
AUDIT = ["eval.epochs=3", "eval.num_nets=1", "full_train.epochs=1", "audit.bootstrap=20",
         "audit.pairs=0", "audit.references=[]"]  # fmt: skip


@pytest.fixture(autouse=True)
def _in_workdir(workdir: Path) -> Path:
    return workdir


def test_lira_runs_shadow_pipelines_of_the_sets_recipe(capsys, workdir):
    ds = image_folder(workdir / "ds", {"a": 14, "b": 14}, size=8)
    assert main(["distill", "--dataset", f"folder:{ds}", "--out", "run", *DISTILL, *TINY]) == 0
    capsys.readouterr()
    shadows = ["audit.shadows=2", "audit.shadow_overrides=[match.iterations=1]"]
    assert main(["audit", "run", "--out", "aud", *AUDIT, *shadows, *TINY]) == 0
    err = capsys.readouterr().err
    assert (
        "audit: LiRA runs 2 shadow pipelines on halves of the data, each one expert buffer "
        "(1 experts x 2 epochs) + one mtt distillation (1 iterations) + one network" in err
    )
    audit = json.loads((workdir / "aud" / "audit.json").read_text())
    lira = audit["lira"]
    assert lira["shadows"] == 2 and lira["overrides"] == ["match.iterations=1"]
    assert [s["shadow"] for s in lira["per_shadow"]] == [0, 1]
    assert all(s["wall_s"] > 0 and not s["reused"] for s in lira["per_shadow"])
    assert lira["online_targets"] == audit["attack"]["lira"]["members"] * 2  # IN 1 of 2 each
    assert set(audit["attack"]) == {"synthetic", "lira"}
    assert "lira_auc" in audit["verdict"]["numbers"]
    assert len(audit["attack"]["lira"]["roc"]["fpr"]) >= 2
    work = workdir / "aud" / "shadows"
    assert (work / "shadow_0.json").is_file() and (work / "shadow_1" / "synthetic").is_dir()
    assert not (work / "shadow_0" / "buffer").exists()  # the experts go once the set exists
    # the same audit again: every shadow's record is reused, nothing is distilled again
    assert main(["audit", "run", "--out", "aud", *AUDIT, *shadows, *TINY]) == 0
    again = json.loads((workdir / "aud" / "audit.json").read_text())
    assert all(s["reused"] for s in again["lira"]["per_shadow"])
    assert again["attack"]["lira"]["auc"] == audit["attack"]["lira"]["auc"]


def test_lira_needs_the_sets_recipe(capsys, workdir):
    ds = image_folder(workdir / "ds", {"a": 14, "b": 14}, size=8)
    assert main(["distill", "--dataset", f"folder:{ds}", "--out", "run", *DISTILL, *TINY]) == 0
    capsys.readouterr()
    bare = workdir / "bare"
    (workdir / "run" / "synthetic").rename(bare)
    code = main(["audit", str(bare), "--dataset", f"folder:{ds}", "audit.shadows=2", *TINY])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and "audit.shadows needs the recipe of the set" in err[0]
    (bare).rename(workdir / "run" / "synthetic")
    code = main(["audit", "run", "audit.shadows=2", "audit.shadow_overrides=[match.nope=1]", *TINY])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and "the shadows' config" in err[0] and "nope" in err[0]
    code = main(["audit", "run", "audit.shadows=1", *TINY])
    assert code == 2 and "at least 2" in capsys.readouterr().err
    assert not (workdir / "runs" / "audit").exists()  # nothing was started
