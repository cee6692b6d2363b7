"""Running a grid: make each cell's artifact once and train its missing evaluation networks.

Expert buffers and synthetic sets live in folders named by a hash of what produced them
(meddistill.app), and the results database (bench/db.py) records each finished artifact and
each trained evaluation network. Running a grid again, after a kill or with more seeds or
architectures, skips every network whose row exists and every artifact already made, and
resumes a half-made buffer or distillation from its own checkpoints. With grid.audit, each
synthetic set is then audited (bench/audits.py), once.

Several processes may run one grid at once (e.g. one per core or GPU): each claims a cell in
the database before it starts it (bench/claims.py), skips cells claimed by another process
and looks at them once more at the end of its grid, so every cell is done exactly once.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from meddistill.bench import claims
from meddistill.bench.audits import audit_cell, audit_done
from meddistill.bench.claims import ClaimBusy, describe
from meddistill.bench.db import Artifact, Claim, ResultsDB
from meddistill.bench.db import Result as ResultRecord
from meddistill.bench.plan import Cell, plan
from meddistill.bench.runners import RunContext, _registered
from meddistill.bench.spec import GridSpec
from meddistill.config import from_dict
from meddistill.costs import measure
from meddistill.data.dataset import MedicalDataset
from meddistill.data.synthetic import SyntheticSet
from meddistill.models.spec import ModelSpec
from meddistill.training.baselines import full_data, random_subset
from meddistill.training.config import TrainConfig
from meddistill.training.evaluate import EvalConfig, evaluate_one_network, resolve_lr, spec_for
from meddistill.utils import make_generator, resolve_device

DB_FILE = "results.sqlite"
WAIT_POLL_S = 5.0  # how often a cell waiting for a shared artifact asks again


@dataclass
class EvalSet:
    """The images one cell's networks train on, and how."""

    images: torch.Tensor
    labels: torch.Tensor
    train: TrainConfig
    spec: ModelSpec


def _eval_set(cell: Cell, ctx: RunContext, dataset: MedicalDataset, path: str | None) -> EvalSet:
    """What the cell's networks train on: the full set with its own training settings, the
    cell's random subset (the same draw as the `baseline` command), or its synthetic set."""
    spec = from_dict(ModelSpec, cell.eval["model"], "model")
    if cell.method == "full":
        full = from_dict(TrainConfig, cell.eval["full_train"], "full_train")
        images, labels = full_data(dataset)
        return EvalSet(images, labels, full, spec)
    cfg = from_dict(EvalConfig, {**cell.eval["eval"], "models": cell.archs}, "eval")
    if cell.method == "random":
        gen = make_generator(cell.eval_base_seed())
        images, labels = random_subset(dataset, cell.ipc, generator=gen)  # type: ignore[arg-type]
        lr = cfg.lr if cfg.lr is not None else float(cell.eval["lr"])
    else:
        syn = SyntheticSet.load(path)  # type: ignore[arg-type]
        syn.check_compatible(dataset, where=str(path))
        images, labels = syn.images.to(ctx.device), cfg.training_labels(syn.labels).to(ctx.device)
        fixed = cell.eval.get("lr", "learned")
        lr, _ = resolve_lr(cfg.lr, syn.syn_lr if fixed == "learned" else float(fixed))
    return EvalSet(images, labels, cfg.train_config(lr), spec)


def still_there(art: Artifact) -> bool:
    """Whether a recorded artifact can be used: it has no folder, or its folder exists."""
    return art.path is None or Path(art.path).exists()


def _produce(cell: Cell, ctx: RunContext) -> Artifact:
    """The cell's artifact: from the database when it is there (and its folder), else made."""
    known = ctx.db.artifact(cell.artifact_id)
    if known is not None and still_there(known):
        return known
    if known is not None:
        ctx.log(f"  {known.path} is gone; making it again")
    art = Artifact(
        id=cell.artifact_id,
        kind=cell.kind,
        dataset=cell.dataset,
        method=cell.method,
        ipc=cell.ipc,
        seed=cell.seed,
        setting=cell.setting,
        config={**cell.config, "seed": cell.seed},
        device=str(ctx.device),
    )
    if cell.kind == "synthetic":
        produced = _registered(cell.runner).run(cell, ctx)
        art.path, art.parent = produced.path, produced.parent
        art.config = {**art.config, "produced": produced.meta}
        if produced.stage is not None:
            art.wall_s = produced.stage.wall_s
            art.cpu_s = produced.stage.cpu_s
            art.peak_mem_mb = produced.stage.peak_mem_mb
            art.mem_kind = produced.stage.mem_kind
    ctx.db.add_artifact(art)
    return ctx.db.artifact(cell.artifact_id)  # type: ignore[return-value]


def _finite(value: float) -> float | None:
    """NULL in the database for a split that was not scored (NaN)."""
    return value if math.isfinite(value) else None


def run_cell(cell: Cell, ctx: RunContext, grid_name: str) -> int:
    """Make the cell's artifact if needed, train its missing networks and make its audit
    when the grid asks for one; return how many networks were trained."""
    ctx.db.add_eval(cell.eval_id, cell.eval)
    nets = cell.networks()
    missing = [n for n in nets if not ctx.db.has_result(cell.artifact_id, n[0], cell.eval_id, n[2])]
    known = ctx.db.artifact(cell.artifact_id)
    if not missing and known is not None and audit_done(cell, ctx):
        ctx.db.add_grid_cell(grid_name, cell.artifact_id, cell.eval_id)
        audit_cell(cell, ctx, known)  # recorded already: only noted as this grid's
        return 0
    art = _produce(cell, ctx)
    ctx.db.add_grid_cell(grid_name, cell.artifact_id, cell.eval_id)
    if missing:
        _train_missing(cell, ctx, art, missing)
    audit_cell(cell, ctx, art)
    return len(missing)


def _train_missing(
    cell: Cell, ctx: RunContext, art: Artifact, missing: list[tuple[str, int, int]]
) -> None:
    """Train and record the cell's networks that have no row yet."""
    dataset = ctx.dataset(cell.config["dataset"])
    evs = _eval_set(cell, ctx, dataset, art.path)
    train = evs.train
    for arch, k, seed in missing:
        with measure("eval", ctx.device) as stage:
            out = evaluate_one_network(
                spec_for(arch, evs.spec),
                dataset,
                evs.images,
                evs.labels,
                train,
                index=k,
                net_seed=seed,
                device=ctx.device,
                test=dataset.test,
                val=dataset.val,
                progress=f"{cell.label()} {arch} net {k + 1}/{cell.num_nets}"
                if ctx.progress
                else False,
            )
        ctx.db.add_result(
            ResultRecord(
                artifact_id=cell.artifact_id,
                arch=arch,
                eval_id=cell.eval_id,
                eval_seed=seed,
                net_index=k,
                acc=out.acc,
                auc=out.auc,
                loss=out.loss,
                val_acc=_finite(out.val_acc),
                val_auc=_finite(out.val_auc),
                epochs=train.epochs,
                lr=train.lr,
                wall_s=stage.wall_s,
                cpu_s=stage.cpu_s,
                peak_mem_mb=stage.peak_mem_mb,
                mem_kind=stage.mem_kind,
                device=stage.device,
            )
        )
        claims.heartbeat(ctx.db, cell.artifact_id, ctx.owner)
        ctx.log(f"  {arch} net {k + 1}/{cell.num_nets}: acc {100 * out.acc:.2f} %")


def _complete(cell: Cell, db: ResultsDB) -> bool:
    nets = cell.networks()
    made = db.artifact(cell.artifact_id) is not None
    audited = cell.audit_id is None or db.audit(cell.artifact_id, cell.audit_id) is not None
    done = all(db.has_result(cell.artifact_id, a, cell.eval_id, s) for a, _, s in nets)
    return made and done and audited


@dataclass
class Outcome:
    """How an attempt at a cell ended: 'done' (nothing was missing), 'ran' (`trained`
    networks), 'claimed' (another process works on it) or 'busy' (it needs an artifact
    another process is making); `other` is that process's claim."""

    status: str
    trained: int = 0
    other: Claim | None = None


def attempt_cell(cell: Cell, ctx: RunContext) -> Outcome:
    """Run the cell unless it is complete or another live process has claimed it."""
    if _complete(cell, ctx.db):
        run_cell(cell, ctx, ctx.grid)  # records the grid's use of it, trains nothing
        return Outcome("done")
    try:
        with claims.holding(
            ctx.db, cell.artifact_id, grid=ctx.grid, label=cell.label(), owner=ctx.owner
        ) as dead:
            if dead is not None:
                ctx.log(f"  taking over from {describe(dead)}, no longer running")
            count = run_cell(cell, ctx, ctx.grid)
    except ClaimBusy as busy:
        status = "claimed" if busy.holder.artifact_id == cell.artifact_id else "busy"
        return Outcome(status, other=busy.holder)
    return Outcome("ran" if count else "done", count)


@dataclass
class _Tally:
    """What a grid run did, for its summary."""

    trained: int = 0
    skipped: int = 0
    later: list[Cell] = field(default_factory=list)
    claimed_elsewhere: list[str] = field(default_factory=list)

    def add(self, out: Outcome, ctx: RunContext) -> None:
        self.trained += out.trained
        if out.status == "done":
            self.skipped += 1
            ctx.log("  done already")


def _who(out: Outcome) -> str:
    return "another process" if out.other is None else describe(out.other)


def _needs(out: Outcome) -> str:
    return "a shared artifact" if out.other is None else f"the {out.other.label}"


def _first_pass(cells: list[Cell], ctx: RunContext, tally: _Tally) -> None:
    """Every cell in order; claimed or blocked ones are put aside for `_second_pass`."""
    for cell in cells:
        ctx.log(f"[{cell.index + 1}/{len(cells)}] {cell.label()}")
        out = attempt_cell(cell, ctx)
        if out.status == "claimed":
            ctx.log(f"  claimed by {_who(out)}; skipped, looked at again at the end")
            tally.later.append(cell)
        elif out.status == "busy":
            ctx.log(f"  needs {_needs(out)}, which {_who(out)} is making; later")
            tally.later.append(cell)
        else:
            tally.add(out, ctx)


def _second_pass(total: int, ctx: RunContext, tally: _Tally) -> None:
    """The put-aside cells once more: done by now, free (their owner died), or left to the
    process that still holds them; a cell that needs an artifact being made waits for it."""
    for cell in tally.later:
        ctx.log(f"[{cell.index + 1}/{total}] {cell.label()} (again)")
        out = attempt_cell(cell, ctx)
        if out.status == "busy":
            ctx.log(f"  waiting for {_who(out)} to make {_needs(out)}")
        while out.status == "busy":
            time.sleep(WAIT_POLL_S)
            out = attempt_cell(cell, ctx)
        if out.status == "claimed":
            ctx.log(f"  still claimed by {_who(out)}; left to it")
            tally.claimed_elsewhere.append(cell.label())
        else:
            tally.add(out, ctx)


def planned_cells(
    grid: GridSpec,
    *,
    data_root: str | None = None,
    download: bool = False,
    device: str | None = None,
) -> tuple[GridSpec, list[Cell]]:
    """The grid (on `device` when given) and its cells, reading data from `data_root`: where
    this machine finds data and computes, never part of an artifact's identity."""
    if device is not None:
        grid = dataclasses.replace(grid, device=device)
    cells = plan(grid)
    if data_root is not None or download:
        for cell in cells:
            if data_root is not None:
                cell.config["dataset"]["root"] = data_root
            if download:
                cell.config["dataset"]["download"] = True
    return grid, cells


def run_grid(
    grid: GridSpec,
    runs_root: str | Path,
    db: ResultsDB | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    data_root: str | None = None,
    download: bool = False,
    device: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) every cell of the grid; results go to `db` (default runs_root/results.sqlite).

    `data_root`, `download` and `device` say where this machine finds data and computes; they
    are not part of any artifact's identity.
    """
    runs = Path(runs_root)
    grid, cells = planned_cells(grid, data_root=data_root, download=download, device=device)
    own_db = db is None
    database = db if db is not None else ResultsDB(runs / DB_FILE)
    ctx = RunContext(
        runs_root=runs,
        db=database,
        device=resolve_device(grid.device),
        progress=progress,
        log=log or (lambda _msg: None),
        grid=grid.name,
        owner=claims.current_owner(),
    )
    tally = _Tally()
    try:
        _first_pass(cells, ctx, tally)
        _second_pass(len(cells), ctx, tally)
    finally:
        if own_db:
            database.close()
    return {
        "grid": grid.name,
        "db": str(database.path),
        "cells": len(cells),
        "skipped": tally.skipped,
        "networks_trained": tally.trained,
        "claimed_elsewhere": tally.claimed_elsewhere,
    }
