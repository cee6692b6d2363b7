"""`meddistill distill` (and `coreset`): resolve once, make the set through the method
registry, save it, evaluate it, write the run folder."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from meddistill.app.buffer import buffer_folder, dataset_identity
from meddistill.app.config import CoresetJob, DistillJob, dataset_section_identity, device_of
from meddistill.app.defaults import fit_to_data, fit_window, step_size_warning
from meddistill.app.private import check_private_distill, set_privacy
from meddistill.app.record import evaluate_row, finish_set, summary
from meddistill.config import to_dict
from meddistill.costs import measure, record_cost, stage_total
from meddistill.data.dataset import MedicalDataset
from meddistill.data.draws import check_ipc
from meddistill.data.synthetic import META, SyntheticSet
from meddistill.errors import ConfigError, MeddistillError
from meddistill.experts.config import BufferConfig, dp_conflict
from meddistill.experts.generate import generate_buffer
from meddistill.experts.private import buffer_dp_plan
from meddistill.experts.store import TrajectoryStore, read_meta, train_batch_size
from meddistill.matching.config import match_identity
from meddistill.matching.latent import Autoencoder, autoencoder_for
from meddistill.matching.loop import DistillRun
from meddistill.matching.parameterizations import stored_values
from meddistill.matching.schedule import check_schedule
from meddistill.methods.base import MethodEntry
from meddistill.methods.registry import get_method
from meddistill.runs import RunDir, environment_info, inside, slug
from meddistill.utils import derive_seed, stable_hash

log = logging.getLogger(__name__)


@dataclass
class DistillPlan:
    """A distill job resolved once: its method, the method's typed config, the device, the
    one DSA strategy of every stage, and the experts to make (None: none, or given)."""

    job: DistillJob
    method: MethodEntry
    config: Any
    device: torch.device
    dsa_strategy: str
    experts: BufferConfig | None
    notes: tuple[str, ...] = ()  # settings derived from the data, said in the run's log

    @property
    def ipc(self) -> int:
        return int(self.config.ipc)


def resolve_distill(job: DistillJob) -> DistillPlan:
    """Validate the method's options into its config and decide the DSA strategy (the
    method's `dsa_strategy` if set, else the dataset's) and the experts to make."""
    method = get_method(job.method)
    config = method.make_config(job.match)
    strategy = getattr(config, "dsa_strategy", None) or job.dataset.strategy()
    experts = None
    if method.experts is not None and job.buffer is None:
        experts = _experts_to_make(job, method, strategy)
    notes: tuple[str, ...] = ()
    epochs = buffer_epochs(job, method)
    if epochs is not None:
        config, note = fit_window(config, method.windows_of, epochs, set(job.match))
        notes = (note,) if note else ()
    return DistillPlan(job, method, config, device_of(job), strategy, experts, notes)


def _experts_to_make(job: DistillJob, method: MethodEntry, strategy: str) -> BufferConfig:
    """The experts a run makes: the job's, on its network, with the run's DSA strategy and the
    method's optimiser (SGD for DP experts, which cannot train with GSAM)."""
    train = job.experts.train
    if train.dsa:
        train = dataclasses.replace(train, dsa_strategy=strategy)
    default = "sgd" if job.experts.dp is not None else method.experts
    train = dataclasses.replace(train, optimizer=job.expert_optimizer or default)
    conflict = dp_conflict(job.experts.dp, job.model, train.optimizer)
    if conflict is not None:
        raise ConfigError(f"option experts.dp must be null {conflict}")
    return dataclasses.replace(job.experts, model=job.model, train=train)


def _given_buffer_meta(job: DistillJob) -> dict[str, Any] | None:
    """buffer.json of the buffer the job names (None without one, or where it cannot be read:
    the run's own check of the buffer reports that)."""
    if job.buffer is None:
        return None
    try:
        return read_meta(Path(job.buffer))
    except (MeddistillError, OSError):
        return None


def buffer_epochs(job: DistillJob, method: MethodEntry) -> int | None:
    """The epochs of the buffer the run will match: the one it makes, or a given one whose
    buffer.json can be read (None otherwise)."""
    if method.experts is None:
        return None
    if job.buffer is None:
        return int(job.experts.epochs)
    meta = _given_buffer_meta(job)
    return None if meta is None else int(meta["epochs"])


def _expert_batch(plan: DistillPlan) -> int | None:
    """The batch size of the experts the run matches: made here, or read from a given
    buffer's buffer.json (None where it is not known: the rules that need it are skipped)."""
    if plan.experts is not None:
        return int(plan.experts.train.batch_size)
    if plan.method.experts is None:
        return None
    meta = _given_buffer_meta(plan.job)
    return None if meta is None else train_batch_size(meta)


def fit_plan_to_data(plan: DistillPlan, dataset: MedicalDataset) -> DistillPlan:
    """The plan with the method's data-dependent defaults fitted to `dataset` (fit_to_data):
    only knobs the job left unset change, each said in a note of the run's log."""
    config, notes = fit_to_data(
        plan.config,
        set(plan.job.match),
        train_images=len(dataset.train),
        expert_batch=_expert_batch(plan),
        image_shape=dataset.image_shape,
        num_classes=dataset.num_classes,
    )
    return dataclasses.replace(plan, config=config, notes=plan.notes + notes)


def check_buffer(plan: DistillPlan, store: TrajectoryStore, dataset: MedicalDataset) -> str | None:
    """A given buffer must fit the dataset, the network and the DSA strategy; returns the
    warning to log when a strategy mismatch is allowed (allow_dsa_mismatch), else None."""
    store.check_compatible(dataset, plan.job.model)
    train = store.meta.get("train", {})
    made_with = train.get("dsa_strategy") if train.get("dsa", True) else "none"
    if plan.config.dsa and made_with not in (None, plan.dsa_strategy):
        message = (
            f"buffer {store.path} was trained with DSA strategy '{made_with}' but this "
            f"distillation uses '{plan.dsa_strategy}'"
        )
        if not plan.job.allow_dsa_mismatch:
            raise ConfigError(
                f"{message}; use a buffer made with the same strategy, set "
                f"match.dsa_strategy={made_with}, or allow_dsa_mismatch=true to use it anyway"
            )
        return f"warning: {message}; used anyway (allow_dsa_mismatch=true)"
    return None


def expert_store(
    plan: DistillPlan, dataset: MedicalDataset, runs_root: str | Path, progress: bool, log: Any
) -> TrajectoryStore | None:
    """The given buffer, or the one the plan's experts describe (made or reused)."""
    if plan.method.experts is None:
        return None
    if plan.job.buffer:
        return TrajectoryStore(plan.job.buffer)
    assert plan.experts is not None
    folder = buffer_folder(runs_root, plan.job.dataset, dataset, plan.experts)
    log(f"expert buffer: {folder}")
    return generate_buffer(dataset, plan.experts, folder, device=plan.device, progress=progress)


def check_before_work(plan: DistillPlan, dataset: MedicalDataset) -> str | None:
    """Refuse, before the run folder exists, what the run could not do (and, on a DP buffer,
    what would read private images: app/private.py); returns the warning of an allowed DSA
    mismatch (to log once the run folder exists)."""
    if not check_private_distill(plan):
        check_ipc(dataset, plan.ipc)  # a DP run draws no real image (nor class sizes)
    stored_values(plan.config, dataset.image_shape)  # a dct block or autoencoder that fits
    if plan.method.experts is None:
        return None
    if plan.experts is not None:
        buffer_dp_plan(dataset, plan.experts, "experts.dp")  # refused here, not mid-run
    given = TrajectoryStore(plan.job.buffer) if plan.job.buffer else None
    warning = check_buffer(plan, given, dataset) if given is not None else None
    epochs = given.epochs if given is not None else plan.job.experts.epochs
    if plan.method.windows_of is not None:
        check_schedule(plan.method.windows_of(plan.config), epochs)
    return warning


def periodic_evaluator(plan: DistillPlan, dataset: MedicalDataset) -> Any:
    """evaluate(syn, iteration) -> metrics on the VALIDATION split, with the (cheap) settings
    of the method's `eval`, or None when the method evaluates only at the end. A distillation
    never looks at the test split before its final evaluation; without a val split the
    periodic evaluation is skipped, with a warning."""
    cfg = plan.config
    if not getattr(cfg, "eval_every", 0):
        return None
    if dataset.val is None:
        log.warning(
            "match.eval_every=%s: dataset '%s' has no validation split, so the periodic "
            "evaluation is skipped (the test split is read only by the final evaluation); "
            "load image folders with val_fraction > 0 (the default, 0.1) to watch the distillation",
            cfg.eval_every,
            dataset.name,
        )
        return None
    eval_cfg = dataclasses.replace(cfg.eval, dsa_strategy=plan.dsa_strategy)

    def evaluate(syn: SyntheticSet, iteration: int) -> dict[str, Any]:
        row = evaluate_row(
            syn.images, syn.labels, dataset, eval_cfg, plan.job.model,
            seed=derive_seed(plan.job.seed, "eval", iteration),
            lr=eval_cfg.lr if eval_cfg.lr is not None else syn.syn_lr,
            label=plan.method.name, ipc=plan.ipc, progress=False, splits=("val",),
        )  # fmt: skip
        return summary(row)

    return evaluate


def used_config(plan: DistillPlan) -> dict[str, Any]:
    """The job as every stage ran it (config.yaml): defaults and the dataset's policies
    applied, the device resolved, the method's full config, ONE DSA strategy written into
    every stage, and the experts only when this run makes them (a given buffer's own
    buffer.json says how it was made)."""
    job = plan.job
    used = dataclasses.replace(job, device=str(plan.device))
    if plan.experts is not None:
        used = dataclasses.replace(
            used, experts=plan.experts, expert_optimizer=plan.experts.train.optimizer
        )
    config = to_dict(used)
    config["match"] = to_dict(plan.config)
    if plan.experts is None:
        config.pop("experts")
        config.pop("expert_optimizer")
    return _one_strategy(config, plan.dsa_strategy)


def _one_strategy(section: Any, strategy: str) -> Any:
    """Every `dsa_strategy` key of a nested config set to the run's one strategy."""
    if isinstance(section, dict):
        return {
            k: strategy if k == "dsa_strategy" else _one_strategy(v, strategy)
            for k, v in section.items()
        }
    return section


# Job fields that do not change the synthetic set: how it is evaluated, where it is written,
# whether its checkpoint is kept, which dataset its preset was tuned on.
_NOT_IDENTITY = ("eval", "final_eval", "out", "keep_checkpoint", "tuned_for")


def run_identity(plan: DistillPlan, dataset: MedicalDataset) -> str:
    """A hash of what makes the set: the used config (evaluation excepted) and the data."""
    config = used_config(plan)
    made_by = {k: v for k, v in config.items() if k not in _NOT_IDENTITY}
    made_by["dataset"] = dataset_section_identity(made_by["dataset"])
    made_by["match"] = match_identity(made_by["match"])
    if plan.experts is not None:  # how many processes train them is not what they are
        made_by["experts"] = _one_strategy(plan.experts.identity(), plan.dsa_strategy)
    periodic = getattr(plan.config, "eval", None)
    if periodic is not None:
        made_by["match"] = {**made_by["match"], "eval": periodic.protocol()}
    made_by["data"] = dataset_identity(plan.job.dataset, dataset)
    return stable_hash(made_by, 16)


def run_folder(
    plan: DistillPlan, dataset: MedicalDataset, runs_root: str | Path, command: str, run_id: str
) -> RunDir:
    """The run folder, named by dataset, method, IPC and the run identity `run_id` (so
    changing only `eval.*` finds the same folder and evaluates its set again); config.yaml
    holds the config every stage of this invocation uses."""
    job = plan.job
    name = f"{slug(dataset.name)}-{slug(plan.method.name)}-ipc{plan.ipc}"
    if job.out:
        out = Path(job.out)
    else:
        folder = Path(runs_root) / slug(command) / f"{name}-{run_id[:8]}"
        out = inside(runs_root, folder, "run folder")
    run = RunDir(out, used_config(plan))
    run.save_json("env.json", environment_info())
    return run


def finished_set(run: RunDir, run_id: str) -> SyntheticSet | None:
    """The set a finished run of this same configuration left in the folder, or None; a set
    made with another configuration is refused (re-evaluating it would mislabel it)."""
    folder = run.path / "synthetic"
    if not (folder / META).is_file():
        return None
    syn = SyntheticSet.load(folder)
    if syn.meta.get("run_id") != run_id:
        raise ConfigError(
            f"{folder} holds a synthetic set made with another configuration; use another "
            "--out folder, or delete it to start over"
        )
    return syn


def run_distill(
    job: DistillJob, runs_root: str | Path, progress: bool = True, command: str = "distill"
) -> dict[str, Any]:
    """Distil a dataset with one method; write the synthetic set, grids, metrics and results
    into runs_root/<command>/<dataset>-<method>-ipc<k>-<id> (or job.out). A finished run of
    the same configuration is not made again: its set is evaluated with today's settings."""
    plan = resolve_distill(job)
    dataset = job.dataset.load()
    plan = fit_plan_to_data(plan, dataset)
    warning = check_before_work(plan, dataset)  # a refused run leaves nothing behind
    dataset = dataset.to(plan.device)
    run_id = run_identity(plan, dataset)
    with run_folder(plan, dataset, runs_root, command, run_id) as run:
        for note in plan.notes:
            _tell(run, f"note: {note}")
        if warning is not None:
            run.log(warning)
        syn = finished_set(run, run_id)
        if syn is None:
            syn = _make_set(run, plan, dataset, runs_root, progress)
            syn.meta["run_id"] = run_id
        else:
            run.log(f"the set in {run.path / 'synthetic'} was made by this configuration; "
                    "evaluating it again")  # fmt: skip
        return _evaluate_and_record(run, plan, syn, dataset, progress)


def _make_set(
    run: RunDir, plan: DistillPlan, dataset: MedicalDataset, runs_root: str | Path, progress: bool
) -> SyntheticSet:
    """Experts (made or reused) and the method's distillation, each measured as a stage of
    costs.json (a stage is recorded when it ends: a killed session's unfinished one is not)."""
    job = plan.job
    with measure("buffer", plan.device) as buffer:
        store = expert_store(plan, dataset, runs_root, progress, run.log)
    if store is not None:  # a method without experts has no buffer stage
        record_cost(run.path, buffer)
        run.log(f"stage buffer: {store.path} ({store.num_experts} experts) in "
                f"{buffer.wall_s:.1f} s ({buffer.describe()})")  # fmt: skip
    autoencoder = _autoencoder(run, plan, dataset, runs_root, progress)
    with measure("distill", plan.device) as distill:
        distill_run = DistillRun(
            seed=job.seed, out_dir=run.path, dsa_strategy=plan.dsa_strategy,
            method=plan.method.name, on_metric=lambda record: run.metric(**record), log=run.log,
            progress=progress, evaluate=periodic_evaluator(plan, dataset),
            rewind=run.rewind_metrics, autoencoder=autoencoder,
        )  # fmt: skip
        syn = plan.method.distill(
            dataset, plan.config, experts=store, model=job.model, device=plan.device,
            run=distill_run,
        )  # fmt: skip
    record_cost(run.path, distill)
    run.log(f"stage distill: {plan.method.name} ipc {plan.ipc} in {distill.wall_s:.1f} s "
            f"({distill.describe()})")  # fmt: skip
    if store is not None:
        syn.meta["buffer"] = str(store.path)
    syn.meta["seed"] = job.seed
    private = store is not None and store.privacy is not None
    syn.meta["privacy"] = (
        set_privacy(store.privacy, store.buffer_id, job.final_eval) if private else None
    )
    warning = step_size_warning(getattr(plan.config, "syn_lr_init", None), syn.syn_lr)
    if warning is not None:
        _tell(run, f"warning: {warning}")
    return syn


def _autoencoder(
    run: RunDir, plan: DistillPlan, dataset: MedicalDataset, runs_root: str | Path, progress: bool
) -> Autoencoder | None:
    """The latent parameterisation's autoencoder (given, reused or trained now: its own stage
    of costs.json), or None for the other parameterisations."""
    if getattr(plan.config, "parameterization", "pixel") != "latent":
        return None
    with measure("autoencoder", plan.device) as stage:
        ae = autoencoder_for(dataset, plan.config.latent, runs_root, run.log, progress)
    record_cost(run.path, stage)
    return ae


def _tell(run: RunDir, line: str) -> None:
    """A line the user should see now (stderr, above any progress bar) and find later (log)."""
    run.log(line)
    tqdm.write(line, file=sys.stderr)


# Before costs.json, run folders kept their stage times in timings.json: {"sessions":
# [{"buffer_s": .., "distill_s": ..}]}; still read for results.json of such a folder.
_TIMINGS = "timings.json"


def _sessions(run: RunDir) -> list[dict[str, float]]:
    """The sessions of an older run folder's timings.json ([] when there is none)."""
    try:
        return list(json.loads((run.path / _TIMINGS).read_text())["sessions"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _total(run: RunDir, stage: str) -> float | None:
    """A stage's recorded wall seconds (costs.json, else an older timings.json), or None when
    no session recorded it; kept in the run folder, not in the set's meta.json, so an
    interrupted and an uninterrupted run give identical sets."""
    total = stage_total(run.path, stage)
    if total is not None:
        return round(total, 1)
    key = f"{stage}_s"
    times = [s[key] for s in _sessions(run) if isinstance(s.get(key), int | float)]
    return round(sum(times), 1) if times else None


def _evaluate_and_record(
    run: RunDir, plan: DistillPlan, syn: SyntheticSet, dataset: MedicalDataset, progress: bool
) -> dict[str, Any]:
    """The final evaluation (when asked) and every file of a finished run."""
    job = plan.job
    results = {
        "method": plan.method.name, "dataset": dataset.name, "ipc": plan.ipc,
        "syn_lr": syn.syn_lr, "buffer_s": _total(run, "buffer"),
        "distill_s": _total(run, "distill"),
    }  # fmt: skip
    if syn.meta.get("privacy") is not None:
        results["privacy"] = syn.meta["privacy"]
    eval_cfg = dataclasses.replace(job.eval, dsa_strategy=plan.dsa_strategy)
    return finish_set(
        run, syn, results, dataset, eval_cfg if job.final_eval else None, job.model,
        seed=derive_seed(job.seed, "final-eval"),
        lr=job.eval.lr if job.eval.lr is not None else syn.syn_lr,
        label=plan.method.name, ipc=plan.ipc, progress=progress,
        keep_checkpoint=job.keep_checkpoint,
    )  # fmt: skip


def coreset_job_as_distill(job: CoresetJob) -> DistillJob:
    """A coreset is a method of the registry like any other: the same job, its knobs."""
    get_method(job.selection)  # a clear error for an unknown selection
    return DistillJob(
        method=job.selection, dataset=job.dataset, model=job.model,
        match={"ipc": job.ipc, "feature_epochs": job.feature_epochs}, eval=job.eval,
        final_eval=job.final_eval, out=job.out, seed=job.seed, device=job.device,
        keep_checkpoint=job.keep_checkpoint, tuned_for=job.tuned_for,
    )  # fmt: skip


def run_coreset(job: CoresetJob, runs_root: str | Path, progress: bool = True) -> dict[str, Any]:
    """Select a coreset, save it as a synthetic set (same format), optionally evaluate it."""
    return run_distill(coreset_job_as_distill(job), runs_root, progress, command="coreset")
