"""`meddistill tune`: search a method's key knobs on the VALIDATION split with Optuna.

Each trial distils with the base job's settings plus the trial's values (tuning/space.py), is
watched every `tune.report_every` iterations by a short evaluation on val (median pruning stops
trials below the median of earlier ones at the same point), and is scored by the job's `eval`
protocol on val. The test split is never read: the winner is written as preset.yaml, which a
`meddistill distill --config preset.yaml` run then reports on test, once.

The study lives in SQLite in the run folder (study.db), so a killed search resumes where it
stopped (a trial cut short is marked failed and run again). The first trial is the base
configuration itself, so the winner is never worse on val than what the user started from.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from meddistill.app.config import TuneConfig, TuneJob, job_identity
from meddistill.app.distill import (
    DistillPlan,
    buffer_epochs,
    check_before_work,
    expert_store,
    fit_plan_to_data,
    periodic_evaluator,
    resolve_distill,
)
from meddistill.app.private import refuse_private_tune
from meddistill.app.record import evaluate_row
from meddistill.config import to_dict
from meddistill.data.dataset import MedicalDataset
from meddistill.errors import ConfigError, MeddistillError
from meddistill.experts.store import TrajectoryStore
from meddistill.matching.loop import DistillRun
from meddistill.runs import RunDir, inside, slug
from meddistill.tuning import PRESET_FILE, STUDY_FILE, TRIALS_FILE
from meddistill.tuning.space import SearchSpace, apply
from meddistill.utils import atomic_path, derive_seed, stable_hash, write_json_atomic


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as exc:
        raise ConfigError(
            "meddistill tune needs Optuna, which is not installed; install the extra: "
            "pip install 'meddistill[tune]'"
        ) from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


@dataclass
class _Search:
    """What every trial shares: the base plan, the data, the space, the run folder."""

    job: TuneJob
    plan: DistillPlan
    dataset: MedicalDataset
    space: SearchSpace
    buffer_epochs: int | None
    store: TrajectoryStore | None  # the buffer every trial matches (made or reused once)
    run: RunDir
    report_every: int


def _trial_plan(search: _Search, values: dict[str, Any]) -> DistillPlan:
    """The base plan with a trial's values (window kept in the buffer) and val watching."""
    cfg = apply(search.plan.config, values, search.buffer_epochs)
    cfg = dataclasses.replace(cfg, eval_every=search.report_every)
    return dataclasses.replace(search.plan, config=cfg)


def _watcher(search: _Search, plan: DistillPlan, trial: Any, optuna: Any) -> Any:
    """The periodic val evaluation, reporting to the trial and pruning it when it lags."""
    evaluate = periodic_evaluator(plan, search.dataset)
    if evaluate is None:
        return None

    def watch(syn: Any, iteration: int) -> dict[str, Any]:
        metrics = evaluate(syn, iteration)
        score = _val_score(search.job, metrics)
        if score is not None:
            trial.report(float(score), iteration)
            if search.job.tune.prune and trial.should_prune():
                raise optuna.TrialPruned(
                    f"val accuracy {100 * score:.2f} % at iteration {iteration}"
                )
        return metrics

    return watch


def _score(search: _Search, plan: DistillPlan, syn: Any) -> float:
    """The job's evaluation protocol on the validation split (never test)."""
    job = search.job
    eval_cfg = dataclasses.replace(job.eval, dsa_strategy=plan.dsa_strategy)
    row = evaluate_row(
        syn.images, syn.labels, search.dataset, eval_cfg, job.model,
        seed=derive_seed(job.seed, "tune-eval"), lr=job.eval.lr if job.eval.lr is not None else syn.syn_lr,
        label=plan.method.name, ipc=plan.ipc, progress=False, splits=("val",),
    )  # fmt: skip
    return float(_val_score(job, row["archs"]))


def _val_score(job: TuneJob, archs: dict[str, Any]) -> float | None:
    """The val accuracy a trial is judged by: the distillation network's row (evaluations
    name it by its architecture, or "convnet" for its 3D variant), else the first row."""
    stats = archs.get(job.model.name) or next(iter(archs.values()), {})
    return stats.get("val_acc_mean")


def _objective(search: _Search, optuna: Any) -> Any:
    def objective(trial: Any) -> float:
        values = search.space.suggest(trial)
        plan = _trial_plan(search, values)
        check_before_work(plan, search.dataset)
        run = DistillRun(
            seed=search.job.seed, out_dir=None, dsa_strategy=plan.dsa_strategy,
            method=plan.method.name, log=search.run.log, progress=False,
            evaluate=_watcher(search, plan, trial, optuna),
        )  # fmt: skip
        started = time.perf_counter()
        syn = plan.method.distill(
            search.dataset, plan.config, experts=search.store, model=search.job.model,
            device=plan.device, run=run,
        )  # fmt: skip
        score = _score(search, plan, syn)
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
        trial.set_user_attr("syn_lr", float(syn.syn_lr) if syn.syn_lr is not None else None)
        search.run.log(f"trial {trial.number}: val accuracy {100 * score:.2f} % with {values}")
        return score

    return objective


def _study(search: _Search, optuna: Any) -> Any:
    """The study in study.db (made, or loaded to resume); a trial a killed search left
    running is marked failed, and a new study starts with the base configuration."""
    cfg = search.job.tune
    storage = f"sqlite:///{(search.run.path / STUDY_FILE).resolve()}"
    study = optuna.create_study(
        storage=storage, study_name="tune", direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=cfg.seed),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=cfg.startup_trials, n_warmup_steps=search.report_every
        ),
    )  # fmt: skip
    for trial in study.get_trials(deepcopy=False):
        if trial.state == optuna.trial.TrialState.RUNNING:
            study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            search.run.log(f"trial {trial.number} was cut short by a stop; marked failed")
    if not study.trials:
        base = {k.name: getattr(search.plan.config, k.name) for k in search.space.knobs}
        study.enqueue_trial(base, user_attrs={"base": True})
    return study


def _finished(study: Any, optuna: Any) -> int:
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(t.state in states for t in study.get_trials(deepcopy=False))


def _complete_value(trial: Any) -> float | None:
    """A finished trial's val score; None for a pruned one (Optuna stores its last short
    evaluation as its value, which is not the protocol's score) or one without a value."""
    value = trial.value
    if trial.state.name != "COMPLETE" or value is None or not math.isfinite(value):
        return None
    return float(value)


def trial_records(study: Any) -> list[dict[str, Any]]:
    """trials.json: every trial's values, state, val score and its short val evaluations."""
    return [
        {
            "number": t.number,
            "state": t.state.name.lower(),
            "params": t.params,
            "val_acc": _complete_value(t),
            "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
            "seconds": t.user_attrs.get("seconds"),
            "base": bool(t.user_attrs.get("base", False)),
        }
        for t in study.get_trials(deepcopy=False)
    ]


def _importance(study: Any, optuna: Any) -> dict[str, float]:
    """Optuna's parameter importance (its default evaluator) once enough trials completed."""
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 3 or len(complete[0].params) < 2:
        return {}
    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError):  # too little variation to fit
        return {}


def _winner_values(search: _Search, best: Any) -> dict[str, Any]:
    """The winning trial's searched values as it ran them: its max_start clipped into the
    buffer (tuning.space.apply) where its window reached past it."""
    ran = _trial_plan(search, best.params).config
    values = {name: getattr(ran, name) for name in best.params}
    if hasattr(ran, "max_start") and ran.max_start != search.plan.config.max_start:
        values["max_start"] = ran.max_start
    return values


def preset_text(
    job: TuneJob, best: Any, values: dict[str, Any], dataset: MedicalDataset, budget: str
) -> str:
    """preset.yaml: the base distill config with the winning `values`, headed by how it was
    chosen (val score, trial, budget); usable as `meddistill distill --config preset.yaml`."""
    config = to_dict(job)
    config.pop("tune")
    for key in ("out", "buffer"):
        config.pop(key, None)
    config["match"] = {**config.get("match", {}), **values}
    config["experts"]["model"] = config["model"]  # the network the experts are (resolve_distill)
    config["tuned_for"] = dataset.name
    header = [
        f"# meddistill tune: {job.method} on {dataset.name}, chosen on the VALIDATION split",
        f"# val accuracy {100 * best.value:.2f} % (trial {best.number}; {budget})",
        "# the test split was not read; `meddistill distill --config` this file to report it",
    ]
    return "\n".join(header) + "\n" + yaml.safe_dump(config, sort_keys=False)


def _record(search: _Search, study: Any, optuna: Any, budget: str) -> None:
    """trials.json, and preset.yaml once a trial completed; written after every trial."""
    record = {
        "method": search.job.method,
        "dataset": search.dataset.name,
        "ipc": search.plan.ipc,
        "split": "val",
        "space": search.space.describe(),
        "budget": budget,
        "trials": trial_records(study),
        "importance": _importance(study, optuna),
    }
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        best = max(complete, key=lambda t: t.value)
        record["best"] = {"number": best.number, "val_acc": best.value, "params": best.params}
        text = preset_text(search.job, best, _winner_values(search, best), search.dataset, budget)
        with atomic_path(search.run.path / PRESET_FILE) as tmp:
            tmp.write_text(text)
    write_json_atomic(search.run.path / TRIALS_FILE, record)


def tune_folder(job: TuneJob, plan: DistillPlan, dataset: MedicalDataset, runs_root: Path) -> Path:
    """runs/tune/<dataset>-<method>-ipc<k>-<hash>: the hash over the base job and the search
    space settings (not its budget: a larger budget continues the same study)."""
    if job.out:
        return Path(job.out)
    config = job_identity(job)  # experts.dp left out while unset: older studies' folders hold
    config["tune"] = {k: v for k, v in config["tune"].items() if k not in ("trials", "minutes")}
    config.pop("out", None)
    key = stable_hash({"job": config, "data": dataset.describe().get("source_id")}, 8)
    name = f"{slug(dataset.name)}-{slug(plan.method.name)}-ipc{plan.ipc}-{key}"
    return inside(runs_root, runs_root / "tune" / name, "tune folder")


def _budget(cfg: TuneConfig) -> str:
    limit = f" or {cfg.minutes:g} minutes" if cfg.minutes > 0 else ""
    return f"{cfg.trials} trials{limit}"


def run_tune(job: TuneJob, runs_root: str | Path, progress: bool = True) -> dict[str, Any]:
    """Search on val until `tune.trials` trials finished (or `tune.minutes` passed); return
    the best trial and where preset.yaml and trials.json are."""
    plan = resolve_distill(job)
    refuse_private_tune(plan)
    optuna = _optuna()
    runs_root = Path(runs_root)
    dataset = job.dataset.load()
    if dataset.val is None:
        raise ConfigError(
            f"meddistill tune chooses on the validation split and dataset '{dataset.name}' has "
            "none; image folders get one with val_fraction > 0 (the default)"
        )
    plan = fit_plan_to_data(plan, dataset)
    check_before_work(plan, dataset)
    dataset = dataset.to(plan.device)
    epochs = buffer_epochs(job, plan.method)
    space = SearchSpace.for_config(plan.config, epochs, job.tune.params or None)
    report_every = job.tune.report_every or max(1, plan.config.iterations // 4)
    folder = tune_folder(job, plan, dataset, runs_root)
    with RunDir(folder, to_dict(job)) as run:
        store = expert_store(plan, dataset, runs_root, False, run.log)
        search = _Search(job, plan, dataset, space, epochs, store, run, report_every)
        return _search(search, optuna, progress)


def _search(search: _Search, optuna: Any, progress: bool) -> dict[str, Any]:
    cfg = search.job.tune
    budget = _budget(cfg)
    study = _study(search, optuna)
    for note in search.plan.notes:
        search.run.log(f"note: {note}")
    search.run.log(f"tune: {budget} over {'; '.join(search.space.describe())}")
    left = cfg.trials - _finished(study, optuna)
    if left > 0:
        study.optimize(
            _objective(search, optuna), n_trials=left,
            timeout=cfg.minutes * 60 if cfg.minutes > 0 else None,
            catch=(MeddistillError,), show_progress_bar=progress,
            callbacks=[lambda st, _t: _record(search, st, optuna, budget)],
        )  # fmt: skip
    _record(search, study, optuna, budget)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise ConfigError(
            f"no trial of {search.run.path} completed (see {TRIALS_FILE} and the log); "
            "widen the budget or check the base configuration"
        )
    best = max(complete, key=lambda t: t.value)
    return {
        "run_dir": str(search.run.path),
        "best": {"number": best.number, "val_acc": best.value, "params": best.params},
        "trials": len(study.trials),
        "preset": str(search.run.path / PRESET_FILE),
    }
