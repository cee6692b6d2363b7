"""Runners: how a grid method makes the artifact of a cell (a synthetic-set folder).

The registry maps each name grid.methods accepts to a runner (and an optional resolver that
validates its config at planning time): every method of the method registry
(meddistill.methods.registry: distillations with their expert buffer, made once and reused,
and the coreset selections) through `app.distill.run_distill`, and whatever `register_runner`
adds (an extension point, used by tests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from meddistill.app.buffer import run_buffer
from meddistill.app.config import BufferJob, DistillJob
from meddistill.app.distill import resolve_distill, run_distill
from meddistill.bench.claims import describe, holding
from meddistill.bench.db import Artifact, Owner, ResultsDB
from meddistill.bench.spec import BASELINES, _dataset_config, _dataset_identity
from meddistill.config import from_dict, to_dict
from meddistill.costs import Cost, measure
from meddistill.data.dataset import MedicalDataset
from meddistill.errors import ConfigError
from meddistill.experts.config import buffer_section_identity
from meddistill.methods.registry import METHODS, available_methods, get_method
from meddistill.utils import stable_hash

if TYPE_CHECKING:  # a runner makes a planned cell; planning looks runners up
    from meddistill.bench.plan import Cell


@dataclass
class Produced:
    """What a runner made: a synthetic-set folder (readable by SyntheticSet.load)."""

    path: str
    stage: Cost | None = None
    parent: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    """What a runner may use: where runs go, the database, the device, logging; `grid` and
    `owner` (this process) to claim shared artifacts (owner None: nothing is claimed)."""

    runs_root: Path
    db: ResultsDB
    device: torch.device
    progress: bool = True
    log: Callable[[str], None] = print
    grid: str = ""
    owner: Owner | None = None
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
        preset = get_method(key).synthesises
        return _Registered(run_distill_method, resolve_distill_config, uses_method_preset=preset)
    raise ConfigError(
        f"unknown method '{method}' in grid.methods; known: {', '.join(known_methods())} "
        f"(baselines {', '.join(BASELINES)} go in grid.baselines)"
    )


def resolve_distill_config(method: str, data: dict[str, Any]) -> dict[str, Any]:
    """A DistillJob dict validated and completed with defaults (the method's config too).

    With experts: `experts` is what run_distill will train (its network, optimizer and DSA).
    Without (DC, DM, coresets): those keys are dropped, so expert settings never change their
    identity. A coreset takes its knobs from the preset's `coreset:` section.
    """
    entry = get_method(method)
    data = dict(data)
    if not entry.synthesises:
        data["match"] = {"ipc": data["match"]["ipc"], **data.pop("coreset", {})}
    data.pop("coreset", None)
    plan = resolve_distill(from_dict(DistillJob, data))
    out = to_dict(plan.job)
    if entry.experts is None:
        for key in ("experts", "expert_optimizer", "buffer", "allow_dsa_mismatch"):
            out.pop(key, None)
    elif plan.experts is not None:
        out["experts"] = to_dict(plan.experts)
    out["match"] = to_dict(plan.config)
    out.pop("seed", None)  # the cell's seed is set when it runs
    return out


@dataclass
class BufferPlan:
    """The expert buffer a trajectory cell needs: the job that trains it, what its id hashes
    (`identity`) and that id (`id`, the buffer's artifact id)."""

    job: BufferJob
    identity: dict[str, Any]
    id: str


def buffer_plan(cell: Cell) -> BufferPlan | None:
    """The expert buffer the cell's method matches (None: no experts), so a scheduler can
    make each distinct buffer once before the cells that share it."""
    if cell.kind != "synthetic" or _registered(cell.runner).run is not run_distill_method:
        return None
    job = from_dict(DistillJob, {**cell.config, "seed": cell.seed})
    experts = resolve_distill(job).experts
    if experts is None:
        return None
    identity = {
        "kind": "buffer",
        "dataset": _dataset_identity(to_dict(job.dataset)),
        "buffer": buffer_section_identity(to_dict(experts)),
    }
    buffer_job = BufferJob(dataset=job.dataset, buffer=experts, device=job.device)
    return BufferPlan(buffer_job, identity, stable_hash(identity))


def run_distill_method(cell: Cell, ctx: RunContext) -> Produced:
    """`jobs.run_distill` without its final evaluation; for a trajectory method the expert
    buffer first (made, or reused from the database).

    The buffer is its own stage (wall time and peak memory of its own), passed to run_distill
    by absolute path so the distillation folder's hash, and thus its resume, never depends on
    how the runs folder was spelled. Cells of several processes share it: the one that claims
    it makes it; the others get ClaimBusy and come back to their cell later.
    """
    job = from_dict(DistillJob, {**cell.config, "seed": cell.seed})
    parent = None
    buf = buffer_plan(cell)
    if buf is not None:
        parent = buf.id
        path = _reusable_buffer(ctx, parent)
        if path is None:
            label = f"{cell.dataset} expert buffer"
            with holding(ctx.db, parent, grid=ctx.grid, label=label, owner=ctx.owner) as dead:
                if dead is not None:
                    ctx.log(f"  buffer: taking over from {describe(dead)}, no longer running")
                path = _reusable_buffer(ctx, parent)  # made while this process waited for it
                if path is None:
                    path = _make_buffer(cell, ctx, buf.job, buf.identity, parent)
        job.buffer = str(Path(path).resolve())
    ctx.log(f"  distill: {cell.method} ipc {cell.ipc} seed {cell.seed}")
    with measure("distill", ctx.device) as stage:
        results = run_distill(job, ctx.runs_root, progress=ctx.progress)
    return Produced(
        path=results["synthetic"],
        stage=stage,
        parent=parent,
        meta={"run_dir": results["run_dir"], "syn_lr": results["syn_lr"]},
    )


def _reusable_buffer(ctx: RunContext, buffer_id: str) -> str | None:
    known = ctx.db.artifact(buffer_id)
    if known is not None and known.path and Path(known.path).is_dir():
        ctx.log(f"  buffer: reusing {known.path}")
        return known.path
    return None


def _make_buffer(
    cell: Cell, ctx: RunContext, buffer_job: BufferJob, identity: dict[str, Any], buffer_id: str
) -> str:
    """Train the expert buffer and record it; its path."""
    ctx.log("  buffer: training experts")
    with measure("buffer", ctx.device) as stage:
        summary = run_buffer(buffer_job, ctx.runs_root, progress=ctx.progress)
    path = str(Path(summary["buffer"]).resolve())
    without_seed = {**identity, "buffer": {**identity["buffer"], "seed": None}}
    ctx.db.add_artifact(
        Artifact(
            id=buffer_id,
            kind="buffer",
            dataset=cell.dataset,
            method="buffer",
            ipc=None,
            seed=buffer_job.buffer.seed,
            setting=stable_hash(without_seed),
            config=to_dict(buffer_job),
            path=path,
            wall_s=stage.wall_s,
            cpu_s=stage.cpu_s,
            peak_mem_mb=stage.peak_mem_mb,
            mem_kind=stage.mem_kind,
            device=stage.device,
        )
    )
    return path


# Coreset selections as grid methods ('random' is the random-subset baseline row already):
# the registry's methods that select real images.
CORESET_METHODS = tuple(
    name for name, m in METHODS.items() if not m.synthesises and name not in BASELINES
)
