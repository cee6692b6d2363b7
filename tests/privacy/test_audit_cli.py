"""`meddistill audit` on a tiny image folder: a distill-style run folder is found with its
dataset, the run folder holds what it should, and bad input is one line with nothing left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from imagefolders import image_folder

from meddistill.api import load_dataset
from meddistill.cli import main
from meddistill.data.synthetic import SyntheticSet

FAST = ["model.depth=1", "model.width=4", "eval.epochs=3", "full_train.epochs=1",
        "audit.bootstrap=20", "audit.pairs=2", "--no-progress", "--threads", "1"]  # fmt: skip


@pytest.fixture(autouse=True)
def _in_workdir(workdir: Path) -> Path:
    return workdir


def copy_run(workdir: Path, ds: Path, name: str = "run", per_class: int = 1) -> Path:
    """A distill-like run folder: config.yaml naming the dataset, synthetic/ holding copies of
    the first `per_class` train images of each class (cycling where a class has fewer)."""
    data = load_dataset(f"folder:{ds}")
    index = [
        int(idx[k % len(idx)]) for idx in data.class_indices("train") for k in range(per_class)
    ]
    syn = SyntheticSet(
        images=data.train.images[index].clone(), labels=data.train.labels[index].clone(),
        normalization=data.normalization, class_names=list(data.class_names),
        dataset=data.name, source_id=data.source_id, syn_lr=0.01, meta={"method": "copy"},
    )  # fmt: skip
    run = workdir / name
    syn.save(run / "synthetic")
    (run / "config.yaml").write_text(
        yaml.safe_dump({"method": "copy", "dataset": {"name": f"folder:{ds}"}})
    )
    return run


def test_audit_of_a_run_folder_finds_its_dataset_and_writes_the_run(capsys, workdir):
    ds = image_folder(workdir / "ds", {"a": 10, "b": 10}, size=8)
    run = copy_run(workdir, ds)
    assert main(["audit", str(run), "--out", "aud", *FAST]) == 0
    out = capsys.readouterr().out
    assert out.startswith("verdict: RED\nRed: do not share")
    assert out.splitlines()[-1] == "audit: aud/audit.json"
    audit = json.loads((workdir / "aud" / "audit.json").read_text())
    assert audit["verdict"]["light"] == "red" and "R1" in audit["verdict"]["rules_fired"]
    assert audit["memorisation"]["pixel"]["near_copies"] == 2
    assert audit["set"]["dataset"] == f"folder:{ds}"
    assert set(audit["attack"]) == {"synthetic", "full", "random", "random_own"}
    config = yaml.safe_load((workdir / "aud" / "config.yaml").read_text())["job"]
    assert config["dataset"]["name"] == f"folder:{ds}" and config["synthetic"] == str(run)
    assert config["model"]["width"] == 4 and config["eval"]["dsa_strategy"]  # as it ran
    assert config["device"] == "cpu"
    log = (workdir / "aud" / "log.txt").read_text()
    assert "verdict red" in log and "stage audit in" in log
    for name in ("pairs.png", "pairs_features.png", "costs.json", "env.json"):
        assert (workdir / "aud" / name).is_file(), name


def test_config_show_audit_takes_the_sets_dataset_unless_one_is_named(capsys, workdir):
    ds = image_folder(workdir / "ds", {"a": 10, "b": 10}, size=8)
    run = copy_run(workdir, ds)
    assert main(["config", "show", "audit", str(run / "synthetic")]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["dataset"]["name"] == f"folder:{ds}"
    assert main(["config", "show", "audit", str(run), "--dataset", "breastmnist"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["dataset"]["name"] == "breastmnist" and shown["eval"]["num_nets"] == 2


def refused(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> str:
    """Run an audit that must fail: exit 2, ONE stderr line, no file left; the message."""
    capsys.readouterr()
    before = set(root.rglob("*"))
    code = main(["audit", *args])
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("meddistill audit: error: "), captured.err
    new = set(root.rglob("*")) - before
    assert captured.out == "" and all(root / "cache" in p.parents for p in new), new
    return lines[0].removeprefix("meddistill audit: error: ")


def test_bad_input_is_one_line(capsys, workdir):
    ds = image_folder(workdir / "ds", {"a": 10, "b": 10}, size=8)
    msg = refused(capsys, workdir, str(workdir / "nothing"), "--dataset", f"folder:{ds}")
    assert "synthetic set file missing" in msg and "meddistill distill" in msg
    run = copy_run(workdir, ds)
    other = image_folder(workdir / "other", {"a": 10, "b": 11}, size=8, seed=3)
    msg = refused(capsys, workdir, str(run), "--dataset", f"folder:{other}", *FAST)
    assert f"was made from folder:{ds}" in msg and "--dataset" in msg
    # the same layout has the same source id (names and sizes); its normalisation differs
    same = image_folder(workdir / "same", {"a": 10, "b": 10}, size=8, seed=3)
    msg = refused(capsys, workdir, str(run), "--dataset", f"folder:{same}", *FAST)
    assert f"folder:{same} with" in msg and "dataset.normalization" in msg
    msg = refused(capsys, workdir, str(run), "audit.quantile=2")
    assert "option audit.quantile must be in (0, 1)" in msg
    msg = refused(capsys, workdir, str(run), "eval.models=[convnet, lenet]")
    assert "eval.models" in msg and "one architecture" in msg
    small = image_folder(workdir / "small", {"a": 3, "b": 10}, size=8)  # 2 train images of a
    big = copy_run(workdir, small, "big", per_class=3)
    msg = refused(capsys, workdir, str(big), *FAST)
    assert "random reference needs 3 real images per class" in msg
    assert "audit.references=[full]" in msg


def test_help_lists_the_audit_keys(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["audit", "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for key in ("SET", "audit.quantile=0.01", "audit.members=1000", "eval.num_nets=2",
                "full_train.epochs=5", "meddistill config show audit"):  # fmt: skip
        assert key in text, key


def test_the_audit_attacks_networks_like_the_ones_the_set_was_made_and_evaluated_with(
    capsys, workdir
):
    ds = image_folder(workdir / "ds", {"a": 10, "b": 10}, size=8)
    run = copy_run(workdir, ds)
    made = {"method": "copy", "dataset": {"name": f"folder:{ds}"}}
    made |= {"model": {"name": "convnet", "depth": 1, "width": 6}}
    made |= {"eval": {"epochs": 7, "batch_size": 32, "num_nets": 5}}
    (run / "config.yaml").write_text(yaml.safe_dump(made))
    assert main(["config", "show", "audit", str(run)]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["model"]["width"] == 6 and shown["model"]["depth"] == 1
    assert (shown["eval"]["epochs"], shown["eval"]["batch_size"]) == (7, 32)
    assert shown["eval"]["num_nets"] == 2  # the audit's own count of attacked networks
    assert main(["config", "show", "audit", str(run), "model.width=9", "eval.epochs=3"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["model"]["width"] == 9 and shown["eval"]["epochs"] == 3  # yours win
