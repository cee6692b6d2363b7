"""Issue 10, points 1, 2 and 6: the files a run writes tell the truth about the run.

config.yaml is what every stage used (the buffer's network, one DSA strategy, the resolved
device); re-used as --config it names the same run; log.txt holds the stages' timings and the
results table stdout showed; a finished run drops its checkpoint unless asked to keep it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from imagefolders import image_folder

from meddistill.cli import main


@pytest.fixture(autouse=True)
def _in_workdir(workdir: Path) -> Path:
    """Every test of this module runs in its own folder (tests/conftest.py `workdir`)."""
    return workdir


def distill_argv(ds: Path, *extra: str) -> list[str]:
    return [
        "distill", "--method", "hoptm", "--dataset", f"folder:{ds}", "--ipc", "1",
        "--iterations", "3", "--seed", "5", "--threads", "1", "--no-progress",
        "model.width=4", "experts.num_experts=1", "experts.epochs=2", "match.syn_steps=2",
        "match.expert_epochs=1", "match.max_start=1", "eval.num_nets=1", "eval.epochs=2",
        *extra,
    ]  # fmt: skip


def strategies(section: object) -> set[str]:
    """Every dsa_strategy value anywhere in a nested config."""
    if isinstance(section, dict):
        found = {section["dsa_strategy"]} if "dsa_strategy" in section else set()
        for value in section.values():
            found |= strategies(value)
        return found
    return set()


def only_run(workdir: Path) -> Path:
    (run,) = (workdir / "runs" / "distill").iterdir()
    return run


def test_config_yaml_is_what_every_stage_used(workdir, capsys):
    ds = image_folder(workdir / "ds", {"a": 6, "b": 6, "c": 6})
    assert main(distill_argv(ds)) == 0
    run = only_run(workdir)
    config = yaml.safe_load((run / "config.yaml").read_text())
    meta = json.loads((run / "synthetic" / "meta.json").read_text())
    (buffer,) = (workdir / "runs" / "buffers").iterdir()
    made = json.loads((buffer / "buffer.json").read_text())
    # the buffer's network is the run's network (the job default would say width 128)
    assert config["experts"]["model"] == made["model"] == config["model"]
    assert config["experts"]["model"]["width"] == 4
    assert config["experts"]["train"]["optimizer"] == made["optimizer"] == "gsam"
    # one DSA strategy, the same in every stage, the buffer and the set
    assert strategies(config) == {made["train"]["dsa_strategy"]}
    assert config["dataset"]["dsa_strategy"] == made["train"]["dsa_strategy"]
    assert config["device"] == "cpu"
    assert config["match"]["iterations"] == 3 and "kappa_mode" in config["match"]
    assert meta["run_id"]

    # config.yaml re-used as the config: the same run, so the set is not made again
    again = ["distill", "--config", str(run / "config.yaml"), "--no-progress", "--threads", "1"]
    assert main(again) == 0
    assert [p.name for p in (workdir / "runs" / "distill").iterdir()] == [run.name]
    assert "evaluating it again" in (run / "log.txt").read_text()


def test_log_holds_stage_timings_and_the_results_table(workdir, capsys):
    ds = image_folder(workdir / "ds", {"a": 6, "b": 6, "c": 6})
    capsys.readouterr()
    assert main(distill_argv(ds)) == 0
    table = capsys.readouterr().out.split("results:")[0].strip()
    log = (only_run(workdir) / "log.txt").read_text()
    assert "stage buffer:" in log and "stage distill: hoptm ipc 1 in" in log
    assert "stage final evaluation" in log
    for line in table.splitlines():  # every line stdout printed is in the log
        assert line in log
    assert "\r" not in log and "\x1b[" not in log


@pytest.mark.parametrize(("keep", "kept"), [([], False), (["--keep-checkpoint"], True)])
def test_a_finished_run_drops_its_checkpoint_unless_kept(workdir, keep, kept):
    ds = image_folder(workdir / "ds", {"a": 6, "b": 6, "c": 6})
    assert main(distill_argv(ds, "final_eval=false", *keep)) == 0
    run = only_run(workdir)
    assert (run / "checkpoint.safetensors").exists() is kept
    assert (run / "synthetic" / "synthetic.safetensors").is_file()


def test_a_set_made_by_another_configuration_is_not_re_evaluated(workdir, capsys):
    ds = image_folder(workdir / "ds", {"a": 6, "b": 6, "c": 6})
    assert main(distill_argv(ds, "final_eval=false", "--out", "run")) == 0
    capsys.readouterr()
    code = main(distill_argv(ds, "final_eval=false", "--out", "run", "--seed", "6"))
    err = capsys.readouterr().err
    assert code == 2 and "holds a synthetic set made with another configuration" in err


def test_how_many_processes_train_or_evaluate_is_not_part_of_the_run_identity():
    from toydata import shifted_toy

    from meddistill.app.config import DistillJob, resolve
    from meddistill.app.distill import resolve_distill, run_identity

    data = shifted_toy()
    scheduling = [{}, {"experts": {"workers": 1, "compile": True}}, {"eval": {"workers": 1}},
                  {"match": {"eval": {"workers": 1, "batched": False, "compile": False}}},
                  {"eval": {"compile": True}}]  # fmt: skip
    ids = {
        run_identity(resolve_distill(resolve(DistillJob, {"method": "hoptm", **extra})), data)
        for extra in scheduling
    }
    assert len(ids) == 1
    other = resolve(DistillJob, {"method": "hoptm", "experts": {"epochs": 3}})
    assert run_identity(resolve_distill(other), data) not in ids  # what the experts are counts


def test_the_results_table_shows_test_to_report_and_val_to_choose_by():
    from meddistill.app.record import results_table

    scored = {"acc_mean": 0.625, "acc_std": 0.02, "auc_mean": 0.9, "auc_std": 0.01,
              "val_acc_mean": 0.6, "val_acc_std": 0.015}  # fmt: skip
    old = {"acc_mean": 0.5, "acc_std": 0.0, "auc_mean": None, "auc_std": None}
    text = results_table([
        {"set": "hoptm", "ipc": 1, "archs": {"convnet": scored}, "wall_s": 3.5},
        {"set": "full", "ipc": None, "archs": {"convnet": old}, "wall_s": 7},
    ])  # fmt: skip
    head, hoptm, full = text.splitlines()
    assert head.split() == ["set", "ipc", "arch", "test", "acc", "(%)", "test", "auc", "val",
                            "acc", "(%)", "wall", "s"]  # fmt: skip
    assert hoptm.split() == ["hoptm", "1", "convnet", "62.50", "±", "2.00", "0.900", "±",
                             "0.010", "60.00", "±", "1.50", "3.5"]  # fmt: skip
    assert full.split() == ["full", "-", "convnet", "50.00", "±", "0.00", "n/a", "-", "7"]
