"""`meddistill tune`: the search space, the val-only search, its record, preset and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from imagefolders import image_folder

from meddistill.cli import main
from meddistill.data.dataset import MedicalDataset
from meddistill.errors import ConfigError
from meddistill.methods.hoptm import HoPTMConfig
from meddistill.methods.ptm import PTMConfig
from meddistill.tuning.space import SearchSpace, apply

optuna = pytest.importorskip("optuna")


@pytest.fixture(autouse=True)
def _in_workdir(workdir: Path) -> Path:
    return workdir


class FakeTrial:
    """Suggests each range's low end, recording what was asked."""

    def __init__(self) -> None:
        self.asked: dict[str, tuple] = {}

    def suggest_float(self, name, low, high, *, log=False):
        self.asked[name] = (low, high, log)
        return low

    def suggest_int(self, name, low, high, *, log=False):
        self.asked[name] = (low, high, log)
        return low


def test_space_is_centred_on_the_configured_values_and_kept_in_the_buffer() -> None:
    cfg = HoPTMConfig(lr_img=10.0, syn_lr_init=0.01, lr_lr=1e-7, syn_steps=80)
    space = SearchSpace.for_config(cfg, buffer_epochs=10)
    trial = FakeTrial()
    space.suggest(trial)
    assert trial.asked["lr_img"] == pytest.approx((1.0, 100.0, True))
    assert trial.asked["syn_lr_init"] == pytest.approx((0.002, 0.05, True))
    assert trial.asked["lr_lr"] == pytest.approx((1e-9, 1e-5, True))
    assert trial.asked["syn_steps"] == (40, 160, True)
    assert trial.asked["expert_epochs"] == (1, 5, False)  # at most half the buffer
    assert trial.asked["max_start"] == (1, 9, False)
    assert "kappa_quantile" not in trial.asked  # absolute kappa: no scale-free knob
    quantile = SearchSpace.for_config(HoPTMConfig(kappa_mode="quantile"), 10, ["kappa_quantile"])
    assert [k.name for k in quantile.knobs] == ["kappa_quantile"]
    # PTM's progressive window grows on its own: its pace is searched, not a start range
    ptm = SearchSpace.for_config(PTMConfig(progressive_steps_per_epoch=9.0), 10)
    names = [k.name for k in ptm.knobs]
    assert "max_start" not in names and "overlap_weight" in names
    pace = next(k for k in ptm.knobs if k.name == "progressive_steps_per_epoch")
    assert (pace.low, pace.high) == pytest.approx((3.0, 27.0))
    # a window of 4 epochs in a 10-epoch buffer starts at epoch 6 at the latest
    clipped = apply(cfg, {"expert_epochs": 4, "max_start": 9}, buffer_epochs=10)
    assert (clipped.expert_epochs, clipped.max_start) == (4, 7)
    with pytest.raises(ConfigError, match="tune.params: shape_lambda cannot be searched"):
        SearchSpace.for_config(cfg, 10, ["lr_img", "shape_lambda"])


def _tune_argv(ds: Path, trials: int) -> list[str]:
    return [
        "tune", "--method", "hoptm", "--dataset", f"folder:{ds}", "--ipc", "1",
        "--iterations", "4", "--experts", "2", "--expert-epochs", "4", "--trials", str(trials),
        "--params", "lr_img", "syn_steps", "max_start", "--no-progress",
        "model.width=4", "match.syn_steps=3", "match.expert_epochs=1", "match.max_start=2",
        "match.eval.epochs=2", "match.eval.num_nets=1", "eval.epochs=2", "eval.num_nets=1",
        "tune.startup_trials=1", "tune.report_every=2", "experts.train.batch_size=16",
    ]  # fmt: skip


def test_tune_searches_on_val_never_reads_test_and_resumes(capsys, workdir, monkeypatch):
    ds = image_folder(workdir / "ds", {"a": 12, "b": 12}, size=8)
    # the first run makes the buffer (its experts report a final test accuracy, as every
    # buffer does) and the base trial; a larger budget then continues the same study
    assert main(_tune_argv(ds, 1)) == 0
    capsys.readouterr()

    def no_test(self):
        raise AssertionError("tune read the test split")

    real_test = MedicalDataset.__dict__["test"]
    monkeypatch.setattr(MedicalDataset, "test", property(no_test))
    assert main(_tune_argv(ds, 3)) == 0
    out = capsys.readouterr().out
    assert "val accuracy" in out
    preset = Path(out.splitlines()[-1].split()[1])
    folder = preset.parent
    record = json.loads((folder / "trials.json").read_text())
    assert record["split"] == "val" and len(record["trials"]) == 3
    first = record["trials"][0]
    assert first["base"] and first["params"] == {"lr_img": 10.0, "syn_steps": 3, "max_start": 2}
    finished = [t for t in record["trials"] if t["state"] in ("complete", "pruned")]
    assert len(finished) == 3
    complete = [t for t in record["trials"] if t["state"] == "complete"]
    best = max(complete, key=lambda t: t["val_acc"])
    assert record["best"]["number"] == best["number"]
    text = preset.read_text()
    assert "chosen on the VALIDATION split" in text
    config = yaml.safe_load(text)
    assert config["tuned_for"] == f"folder:{ds}" and "tune" not in config
    assert {k: config["match"][k] for k in best["params"]} == best["params"]

    # a stop mid-trial leaves it running in study.db: the next run fails it and goes on
    study = optuna.load_study(study_name="tune", storage=f"sqlite:///{folder / 'study.db'}")
    study.ask()
    assert main(_tune_argv(ds, 4)) == 0
    capsys.readouterr()
    record = json.loads((folder / "trials.json").read_text())
    states = [t["state"] for t in record["trials"]]
    assert states[3] == "fail" and len(states) == 5
    assert sum(s in ("complete", "pruned") for s in states) == 4
    # the preset runs as a distill config (here: the test split may be read again)
    monkeypatch.setattr(MedicalDataset, "test", real_test)
    assert main(["distill", "--config", str(preset), "--no-progress", "--out", "final"]) == 0
    results = json.loads((workdir / "final" / "results.json").read_text())
    stats = results["rows"][0]["archs"]["convnet"]
    assert stats["val_acc_mean"] is not None and stats["acc_mean"] is not None


def test_tune_without_optuna_names_the_extra_to_install(capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_optuna(name, *args, **kwargs):
        if name == "optuna":
            raise ImportError("No module named 'optuna'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_optuna)
    assert main(["tune", "--dataset", "bloodmnist", "--no-progress"]) == 2
    assert "pip install 'meddistill[tune]'" in capsys.readouterr().err


def test_the_report_of_a_tune_folder_shows_the_search(workdir) -> None:
    folder = workdir / "tune"
    folder.mkdir()
    trials = [
        {"number": 0, "state": "complete", "params": {"lr_img": 10.0}, "val_acc": 0.5,
         "intermediate": {"2": 0.4}, "seconds": 3.0, "base": True},
        {"number": 1, "state": "pruned", "params": {"lr_img": 50.0}, "val_acc": None,
         "intermediate": {"2": 0.2}, "seconds": 1.0, "base": False},
        {"number": 2, "state": "complete", "params": {"lr_img": 3.0}, "val_acc": 0.625,
         "intermediate": {"2": 0.5}, "seconds": 3.0, "base": False},
    ]  # fmt: skip
    record = {"method": "hoptm", "dataset": "toy", "ipc": 1, "split": "val", "budget": "3 trials",
              "space": ["lr_img: float in [1, 100] (log)"], "trials": trials,
              "importance": {"lr_img": 1.0}, "best": {"number": 2, "val_acc": 0.625}}  # fmt: skip
    (folder / "trials.json").write_text(json.dumps(record))
    (folder / "preset.yaml").write_text("method: hoptm\n")
    assert main(["report", str(folder)]) == 0
    page = (folder / "report.html").read_text()
    assert "Tuning hoptm on toy, IPC 1" in page and 'id="trials"' in page
    assert "62.50" in page and "2 / 1 / 0" in page  # best val; complete / pruned / failed
    assert "0 (base)" in page and "method: hoptm" in page
    numbers = (folder / "analysis" / "tuning_search.csv").read_text().splitlines()
    assert numbers[0] == "number,state,val_acc,last_intermediate"
    assert numbers[2] == "1,pruned,,0.2"
    assert (folder / "analysis" / "tuning_search.png").stat().st_size > 1000


def test_a_pruned_trial_has_no_val_score_only_its_short_evaluations() -> None:
    from meddistill.app.tune import trial_records

    study = optuna.create_study(direction="maximize")
    done = study.ask({"lr_img": optuna.distributions.FloatDistribution(1, 100, log=True)})
    study.tell(done, 0.61)
    cut = study.ask({"lr_img": optuna.distributions.FloatDistribution(1, 100, log=True)})
    cut.report(0.4, 50)
    study.tell(cut, state=optuna.trial.TrialState.PRUNED)
    records = trial_records(study)
    assert [(r["state"], r["val_acc"]) for r in records] == [("complete", 0.61), ("pruned", None)]
    assert records[1]["intermediate"] == {"50": 0.4}


def test_preset_holds_the_winners_window_as_it_ran_clipped_into_the_buffer() -> None:
    from types import SimpleNamespace

    from meddistill.app.config import DistillJob, resolve
    from meddistill.app.distill import resolve_distill
    from meddistill.app.tune import _winner_values

    job = resolve(DistillJob, {"method": "hoptm", "experts": {"epochs": 4},
                               "match": {"expert_epochs": 1, "max_start": 4}})  # fmt: skip
    search = SimpleNamespace(plan=resolve_distill(job), buffer_epochs=4, report_every=1)
    # a 3-epoch window in a 4-epoch buffer starts before 4 - 3 + 1 = 2 (exclusive bound):
    # the trial ran with max_start 2, and the preset must say so, though it was not searched
    ran = _winner_values(search, SimpleNamespace(params={"expert_epochs": 3}))
    assert ran == {"expert_epochs": 3, "max_start": 2}
    assert _winner_values(search, SimpleNamespace(params={"expert_epochs": 1})) == {
        "expert_epochs": 1
    }
