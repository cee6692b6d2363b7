"""Runners: how a grid method makes the artifact of a cell (a synthetic-set folder).

The registry maps each name grid.methods accepts to a runner (and an optional resolver that
validates its config at planning time): the distillation methods through `jobs.run_distill`
(with their expert buffer, made once and reused), the coreset selections through
`jobs.run_coreset`, and whatever `register_runner` adds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from meddistill import jobs
from meddistill.bench.db import Artifact, ResultsDB, Stage, measure_stage
from meddistill.bench.spec import BASELINES, _dataset_config, _dataset_identity
from meddistill.config import from_dict, merge, to_dict
from meddistill.data.dataset import MedicalDataset
from meddistill.errors import ConfigError
from meddistill.methods import available_methods, coresets, method_kind
from meddistill.utils import stable_hash

if TYPE_CHECKING:  # a runner makes a planned cell; planning looks runners up
    from meddistill.bench.plan import Cell


@dataclass
class Produced:
    """What a runner made: a synthetic-set folder (readable by SyntheticSet.load)."""

    path: str
    stage: Stage | None = None
    parent: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    """What a runner may use: where runs go, the database, the device, logging."""

    runs_root: Path
    db: ResultsDB
    device: torch.device
    progress: bool = True
    log: Callable[[str], None] = print
    _datasets: dict[str, MedicalDataset] = field(default_factory=dict)

    def dataset(self, config: dict[str, Any]) -> MedicalDataset:
        """The dataset of a `dataset` config section, loaded once per grid run, on the device."""
        key = stable_hash(config)
        if key not in self._datasets:
            self._datasets.clear()  # cells come grouped by dataset: keep one in memory
            self._datasets[key] = _dataset_config(config).load().to(self.device)
        return self._datasets[key]


Runner = Callable[["Cell", RunContext], Produced]
Resolver = Callable[[str, dict[str, Any]], dict[str, Any]]


@dataclass
class _Registered:
    run: Runner
    resolve: Resolver | None
    uses_method_preset: bool = True


_RUNNERS: dict[str, _Registered] = {}


def register_runner(
    name: str, run: Runner, resolve: Resolver | None = None, *, uses_method_preset: bool = True
) -> None:
    """Make `name` usable in grid.methods.

    run(cell, ctx) makes the synthetic set of `cell` (its config is cell.config, its seed
    cell.seed, its IPC cell.ipc) and returns Produced(path=<synthetic-set folder>, stage=...).
    resolve(method, config) -> the validated, normalised config (raise ConfigError on bad
    input) at planning time, before anything runs; its result is hashed into the artifact id.
    uses_method_preset=False: the method reads only the dataset preset (grid.method_preset
    is not looked up for it).
    """
    key = name.lower()
    if key in BASELINES:
        raise ConfigError(f"'{name}' is a baseline name; choose another method name")
    _RUNNERS[key] = _Registered(run, resolve, uses_method_preset)


def known_methods() -> list[str]:
    """Every name grid.methods accepts."""
    return sorted(set(_RUNNERS) | set(available_methods()))


def _registered(method: str) -> _Registered:
    key = method.lower()
    if key in _RUNNERS:
        return _RUNNERS[key]
    if key in available_methods():
        return _Registered(run_distill_method, resolve_distill_config)
    raise ConfigError(
        f"unknown method '{method}' in grid.methods; known: {', '.join(known_methods())} "
        f"(baselines {', '.join(BASELINES)} go in grid.baselines)"
    )


def resolve_distill_config(method: str, data: dict[str, Any]) -> dict[str, Any]:
    """A DistillJob dict validated and completed with defaults (the method's section too).

    Trajectory methods: `experts` is what run_distill will train (its network, optimizer and
    DSA). Objective methods (DC, DM, ...) use no experts: those keys are dropped, so expert
    settings never change their identity.
    """
    job = from_dict(jobs.DistillJob, data)
    out = to_dict(job)
    if method_kind(method) != "trajectory":
        for key in ("experts", "expert_optimizer", "buffer"):
            out.pop(key, None)
    elif job.buffer is None:
        out["experts"] = to_dict(jobs.expert_buffer_config(job))
    out["match"] = to_dict(jobs.match_config(job))
    out["match"].pop("seed", None)  # the cell's seed is set when it runs
    return out


def run_distill_method(cell: Cell, ctx: RunContext) -> Produced:
    """`jobs.run_distill` without its final evaluation; for a trajectory method the expert
    buffer first (made, or reused from the database).

    The buffer is its own stage (wall time and peak memory of its own), passed to run_distill
    by absolute path so the distillation folder's hash, and thus its resume, never depends on
    how the runs folder was spelled.
    """
    job = from_dict(jobs.DistillJob, merge(cell.config, {"match": {"seed": cell.seed}}))
    parent = None
    if method_kind(job.method) == "trajectory" and job.buffer is None:
        experts = jobs.expert_buffer_config(job)
        buffer_job = jobs.BufferJob(dataset=job.dataset, buffer=experts, device=job.device)
        identity = {
            "kind": "buffer",
            "dataset": _dataset_identity(to_dict(job.dataset)),
            "buffer": to_dict(experts),
        }
        parent = stable_hash(identity)
        known = ctx.db.artifact(parent)
        if known is not None and known.path and Path(known.path).is_dir():
            path = known.path
            ctx.log(f"  buffer: reusing {path}")
        else:
            ctx.log("  buffer: training experts")
            with measure_stage(ctx.device) as stage:
                summary = jobs.run_buffer(buffer_job, ctx.runs_root, progress=ctx.progress)
            path = str(Path(summary["buffer"]).resolve())
            without_seed = {**identity, "buffer": {**identity["buffer"], "seed": None}}
            ctx.db.add_artifact(
                Artifact(
                    id=parent,
                    kind="buffer",
                    dataset=cell.dataset,
                    method="buffer",
                    ipc=None,
                    seed=experts.seed,
                    setting=stable_hash(without_seed),
                    config=to_dict(buffer_job),
                    path=path,
                    wall_s=stage.wall_s,
                    peak_mem_mb=stage.peak_mem_mb,
                    mem_kind=stage.mem_kind,
                    device=stage.device,
                )
            )
        job.buffer = str(Path(path).resolve())
    ctx.log(f"  distill: {cell.method} ipc {cell.ipc} seed {cell.seed}")
    with measure_stage(ctx.device) as stage:
        results = jobs.run_distill(job, ctx.runs_root, progress=ctx.progress)
    return Produced(
        path=results["synthetic"],
        stage=stage,
        parent=parent,
        meta={"run_dir": results["run_dir"], "syn_lr": results["syn_lr"]},
    )


# Coreset selections as grid methods; 'random' is the random-subset baseline row already.
CORESET_METHODS = tuple(m for m in coresets.CORESET_METHODS if m not in BASELINES)


def resolve_coreset_config(method: str, data: dict[str, Any]) -> dict[str, Any]:
    """A CoresetJob dict for a coreset cell: its dataset, feature network and IPC.

    The dataset preset's `model` is the network whose features rank the images; `coreset:`
    (e.g. {feature_epochs: 5}) may set the rest. Matching and expert settings are dropped:
    they do not change a coreset.
    """
    section = dict(data.get("coreset", {}))
    job = from_dict(
        jobs.CoresetJob,
        {
            **section,
            "dataset": data.get("dataset", {}),
            "model": data.get("model", {}),
            "selection": method,
            "ipc": data["match"]["ipc"],
            "final_eval": False,
            "device": data.get("device", "auto"),
        },
    )
    out = to_dict(job)
    out.pop("eval", None)
    out.pop("seed", None)  # the cell's seed is set when it runs
    out.pop("out", None)
    return out


def run_coreset_method(cell: Cell, ctx: RunContext) -> Produced:
    """`jobs.run_coreset` (no evaluation: the grid trains the networks)."""
    job = from_dict(jobs.CoresetJob, {**cell.config, "seed": cell.seed, "final_eval": False})
    ctx.log(f"  coreset: {cell.method} ipc {cell.ipc} seed {cell.seed}")
    with measure_stage(ctx.device) as stage:
        results = jobs.run_coreset(job, ctx.runs_root, progress=ctx.progress)
    return Produced(path=results["synthetic"], stage=stage, meta={"run_dir": results["run_dir"]})


for _name in CORESET_METHODS:
    register_runner(_name, run_coreset_method, resolve_coreset_config, uses_method_preset=False)
