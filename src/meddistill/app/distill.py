"""`meddistill distill` (and `coreset`): resolve once, make the set through the method
registry, save it, evaluate it, write the run folder."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from meddistill.app.buffer import buffer_folder, dataset_identity
from meddistill.app.config import CoresetJob, DistillJob, build_section, device_of
from meddistill.app.record import evaluate_row, finish_set, summary
from meddistill.config import to_dict
from meddistill.data.dataset import MedicalDataset
from meddistill.data.draws import check_ipc
from meddistill.data.synthetic import SyntheticSet
from meddistill.errors import ConfigError
from meddistill.experts.config import BufferConfig
from meddistill.experts.generate import generate_buffer
from meddistill.experts.store import TrajectoryStore
from meddistill.matching.loop import DistillRun
from meddistill.matching.schedule import check_schedule
from meddistill.methods.base import MethodEntry
from meddistill.methods.registry import get_method
from meddistill.runs import RunDir, environment_info, inside, slug
from meddistill.utils import derive_seed, stable_hash


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

    @property
    def ipc(self) -> int:
        return int(self.config.ipc)


def resolve_distill(job: DistillJob) -> DistillPlan:
    """Validate the method's options into its config and decide the DSA strategy (the
    method's `dsa_strategy` if set, else the dataset's) and the experts to make."""
    method = get_method(job.method)
    build_section(method.config_type, job.match, "match")  # a bad value named match.<path>
    config = method.make_config(job.match)
    strategy = getattr(config, "dsa_strategy", None) or job.dataset.strategy()
    experts = None
    if method.experts is not None and job.buffer is None:
        train = job.experts.train
        if train.dsa:
            train = dataclasses.replace(train, dsa_strategy=strategy)
        train = dataclasses.replace(train, optimizer=job.expert_optimizer or method.experts)
        experts = dataclasses.replace(job.experts, model=job.model, train=train)
    return DistillPlan(job, method, config, device_of(job), strategy, experts)


def check_buffer(
    plan: DistillPlan, store: TrajectoryStore, dataset: MedicalDataset
) -> str | None:
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
    """Refuse, before the run folder exists, what the run could not do; returns the
    warning of an allowed DSA mismatch (to log once the run folder exists)."""
    check_ipc(dataset, plan.ipc)
    if plan.method.experts is None:
        return None
    given = TrajectoryStore(plan.job.buffer) if plan.job.buffer else None
    warning = check_buffer(plan, given, dataset) if given is not None else None
    epochs = given.epochs if given is not None else plan.job.experts.epochs
    if plan.method.windows_of is not None:
        check_schedule(plan.method.windows_of(plan.config), epochs)
    return warning


def periodic_evaluator(plan: DistillPlan, dataset: MedicalDataset) -> Any:
    """evaluate(syn, iteration) -> metrics, with the (cheap) settings of the method's `eval`,
    or None when the method evaluates only at the end."""
    cfg = plan.config
    if not getattr(cfg, "eval_every", 0):
        return None
    eval_cfg = dataclasses.replace(cfg.eval, dsa_strategy=plan.dsa_strategy)

    def evaluate(syn: SyntheticSet, iteration: int) -> dict[str, Any]:
        row = evaluate_row(
            syn.images, syn.labels, dataset, eval_cfg, plan.job.model,
            seed=derive_seed(plan.job.seed, "eval", iteration),
            lr=eval_cfg.lr if eval_cfg.lr is not None else syn.syn_lr,
            label=plan.method.name, ipc=plan.ipc, progress=False,
        )  # fmt: skip
        return summary(row)

    return evaluate


def run_folder(
    plan: DistillPlan, dataset: MedicalDataset, runs_root: str | Path, command: str
) -> RunDir:
    """The run folder, named by dataset, method, IPC and a hash of what makes the set (the
    evaluation settings excepted: changing only `eval.*` re-evaluates the same set); its
    config.yaml holds what every stage of this invocation uses."""
    job = plan.job
    config = {
        "job": to_dict(job),
        "match": to_dict(plan.config),
        "dsa_strategy": plan.dsa_strategy,
        "experts": to_dict(plan.experts) if plan.experts is not None else None,
    }
    made_by = {**config, "job": {k: v for k, v in config["job"].items() if k not in _NOT_IDENTITY}}
    made_by["data"] = dataset_identity(job.dataset, dataset)
    name = f"{slug(dataset.name)}-{slug(plan.method.name)}-ipc{plan.ipc}"
    if job.out:
        out = Path(job.out)
    else:
        folder = Path(runs_root) / slug(command) / f"{name}-{stable_hash(made_by, 8)}"
        out = inside(runs_root, folder, "run folder")
    run = RunDir(out, config)
    run.save_json("env.json", environment_info())
    return run


# Job fields that do not change the synthetic set: how it is evaluated, where it is written.
_NOT_IDENTITY = ("eval", "final_eval", "out")


def run_distill(
    job: DistillJob, runs_root: str | Path, progress: bool = True, command: str = "distill"
) -> dict[str, Any]:
    """Distil a dataset with one method; write the synthetic set, grids, metrics and results
    into runs_root/<command>/<dataset>-<method>-ipc<k>-<hash> (or job.out)."""
    plan = resolve_distill(job)
    dataset = job.dataset.load()
    warning = check_before_work(plan, dataset)  # a refused run leaves nothing behind
    dataset = dataset.to(plan.device)
    with run_folder(plan, dataset, runs_root, command) as run:
        if warning is not None:
            run.log(warning)
        return _distill_in(run, plan, dataset, runs_root, progress)


def _distill_in(
    run: RunDir, plan: DistillPlan, dataset: MedicalDataset, runs_root: str | Path, progress: bool
) -> dict[str, Any]:
    """run_distill's work inside its (locked) run folder."""
    job = plan.job
    start = time.perf_counter()
    store = expert_store(plan, dataset, runs_root, progress, run.log)
    buffer_s = time.perf_counter() - start
    start = time.perf_counter()
    distill_run = DistillRun(
        seed=job.seed, out_dir=run.path, dsa_strategy=plan.dsa_strategy,
        method=plan.method.name, on_metric=lambda record: run.metric(**record), log=run.log,
        progress=progress, evaluate=periodic_evaluator(plan, dataset), rewind=run.rewind_metrics,
    )  # fmt: skip
    syn = plan.method.distill(
        dataset, plan.config, experts=store, model=job.model, device=plan.device, run=distill_run
    )
    if store is not None:
        syn.meta["buffer"] = str(store.path)
    syn.meta["seed"] = job.seed
    results = {
        "method": plan.method.name, "dataset": dataset.name, "ipc": plan.ipc,
        "syn_lr": syn.syn_lr, "buffer_s": round(buffer_s, 1),
        "distill_s": round(time.perf_counter() - start, 1),
    }  # fmt: skip
    eval_cfg = dataclasses.replace(job.eval, dsa_strategy=plan.dsa_strategy)
    return finish_set(
        run, syn, results, dataset, eval_cfg if job.final_eval else None, job.model,
        seed=derive_seed(job.seed, "final-eval"),
        lr=job.eval.lr if job.eval.lr is not None else syn.syn_lr,
        label=plan.method.name, ipc=plan.ipc, progress=progress,
    )  # fmt: skip


def coreset_job_as_distill(job: CoresetJob) -> DistillJob:
    """A coreset is a method of the registry like any other: the same job, its knobs."""
    get_method(job.selection)  # a clear error for an unknown selection
    return DistillJob(
        method=job.selection, dataset=job.dataset, model=job.model,
        match={"ipc": job.ipc, "feature_epochs": job.feature_epochs}, eval=job.eval,
        final_eval=job.final_eval, out=job.out, seed=job.seed, device=job.device,
    )  # fmt: skip


def run_coreset(job: CoresetJob, runs_root: str | Path, progress: bool = True) -> dict[str, Any]:
    """Select a coreset, save it as a synthetic set (same format), optionally evaluate it."""
    return run_distill(coreset_job_as_distill(job), runs_root, progress, command="coreset")
