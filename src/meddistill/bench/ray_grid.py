"""Running a grid on Ray (`meddistill bench GRID.yaml --ray [ADDRESS]`): one task per cell.

Why this split: SQLite is one file that many hosts cannot safely share, so only the driver (this
process) opens the results database. A worker runs the very code of the single-process path
(bench/run.py `run_cell`) against a private, throwaway database in its temp folder, pre-filled
by the driver with the rows the cell needs (its buffer, its artifact, its networks done so far),
and returns the rows it made as plain dataclasses; the driver inserts those it does not have yet,
so a retried task never yields a second row.

Order: the distinct expert buffers the missing cells need are trained first, one task each;
a cell that matches a buffer is submitted once its buffer is recorded, the others at once. A
cell that is complete in the database gets no task. A worker killed mid-task (out of memory, a
lost node) is retried up to `max_retries` times; buffers and distillations live in hash-named
folders under the runs folder, so the retry resumes from their own checkpoints. With several
hosts, the runs folder and the data must be on a file system all of them see at the same path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from meddistill.bench.db import Artifact, AuditRow, Result, ResultsDB
from meddistill.bench.plan import Cell
from meddistill.bench.run import (
    DB_FILE,
    _complete,
    _produce,
    planned_cells,
    run_cell,
    still_there,
)
from meddistill.bench.runners import BufferPlan, RunContext, _make_buffer, buffer_plan
from meddistill.bench.spec import GridSpec
from meddistill.data.cache import CACHE_ENV
from meddistill.data.medmnist import DATA_ENV
from meddistill.errors import ConfigError
from meddistill.utils import resolve_device

RAY_MISSING = "Ray is not installed: pip install 'meddistill[cluster]'"
# The driver's environment that says where data and caches are; it travels with every task.
_TRAVELLING_ENV = (DATA_ENV, CACHE_ENV)

_NICENESS_ENV = "RAY_worker_niceness"  # read by the raylet a local ray.init starts

Hook = Callable[[str, Cell], None]


def import_ray() -> ModuleType:
    """Ray, imported only when a grid runs on it (an optional dependency: the `cluster` extra)."""
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


# ---------------------------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------------------------


@dataclass
class WorkerSpec:
    """What every task needs besides its cell: where runs go, the grid's name and device, the
    torch threads per task, the driver's data/cache environment and an optional hook called
    at each stage ('buffer', 'cell', 'produced'; used by tests to kill a worker mid-cell)."""

    runs_root: str
    grid: str
    device: str
    threads: int
    env: dict[str, str | None]
    hook: Hook | None = None


@dataclass
class Known:
    """The rows of the driver's database a cell's task starts from."""

    artifact: Artifact | None = None
    results: list[Result] = field(default_factory=list)
    audit: AuditRow | None = None
    buffer: Artifact | None = None


@dataclass
class TaskOutput:
    """What a task made (every artifact, result and audit row of its private database; the
    driver keeps the ones it lacks), its log lines, and where and how long it ran."""

    artifacts: list[Artifact]
    results: list[Result] = field(default_factory=list)
    audits: list[AuditRow] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    trained: int = 0
    wall_s: float = 0.0
    where: str = ""


@contextlib.contextmanager
def _worker(spec: WorkerSpec) -> Iterator[tuple[RunContext, list[str]]]:
    """A RunContext on a throwaway database in a temp folder (claims off: the driver alone
    schedules), with the driver's environment and the task's torch threads."""
    for key, value in spec.env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    torch.set_num_threads(max(1, spec.threads))
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="meddistill-task-") as tmp:
        db = ResultsDB(Path(tmp) / "task.sqlite")
        try:
            ctx = RunContext(
                runs_root=Path(spec.runs_root),
                db=db,
                device=resolve_device(spec.device),
                progress=False,  # bars of parallel tasks would garble the driver's output
                log=lines.append,
                grid=spec.grid,
                owner=None,
            )
            yield ctx, lines
        finally:
            db.close()


def _plain(cls: type, row: Any) -> Any:
    """The `cls` part of a joined row (a ResultRow as a Result), to send between processes."""
    return cls(**{f: getattr(row, f) for f in cls.__dataclass_fields__})


def _output(db: ResultsDB, lines: list[str], started: float, trained: int = 0) -> TaskOutput:
    return TaskOutput(
        artifacts=db.artifacts(),
        results=[_plain(Result, r) for r in db.results()],
        audits=[_plain(AuditRow, a) for a in db.audits()],
        log=lines,
        trained=trained,
        wall_s=time.perf_counter() - started,
        where=f"pid {os.getpid()} on {os.uname().nodename}",
    )


def buffer_task(cell: Cell, buf: BufferPlan, spec: WorkerSpec) -> TaskOutput:
    """Train (or resume) the expert buffer `buf` that `cell` and others match."""
    started = time.perf_counter()
    with _worker(spec) as (ctx, lines):
        if spec.hook is not None:
            spec.hook("buffer", cell)
        _make_buffer(cell, ctx, buf.job, buf.identity, buf.id)
        return _output(ctx.db, lines, started)


def cell_task(cell: Cell, known: Known, spec: WorkerSpec) -> TaskOutput:
    """Make the cell's artifact if needed and train its missing networks, exactly as the
    single-process path (run_cell), from the rows the driver knows."""
    started = time.perf_counter()
    with _worker(spec) as (ctx, lines):
        db = ctx.db
        db.add_eval(cell.eval_id, cell.eval)
        for art in (known.buffer, known.artifact):
            if art is not None:
                db.add_artifact(art)
        for res in known.results:
            db.add_result(res)
        if known.audit is not None:
            db.add_audit(known.audit)
        if spec.hook is not None:
            spec.hook("cell", cell)
        _produce(cell, ctx)  # what run_cell does first; the hook may then stop the task
        if spec.hook is not None:
            spec.hook("produced", cell)
        trained = run_cell(cell, ctx, spec.grid)
        return _output(db, lines, started, trained)


# ---------------------------------------------------------------------------------------------
# Driver side
# ---------------------------------------------------------------------------------------------


def _made(db: ResultsDB, artifact_id: str) -> Artifact | None:
    """The recorded artifact when its folder is still there (or it has none)."""
    art = db.artifact(artifact_id)
    return art if art is not None and still_there(art) else None


def _known(cell: Cell, db: ResultsDB, buffer: Artifact | None) -> Known:
    rows = db.results(artifact_id=cell.artifact_id, eval_id=cell.eval_id)
    results = [_plain(Result, r) for r in rows]
    audit = None if cell.audit_id is None else db.audit(cell.artifact_id, cell.audit_id)
    return Known(db.artifact(cell.artifact_id), results, audit, buffer)


def _same(a: Artifact, b: Artifact) -> bool:
    return dataclasses.replace(a, created="", updated="") == dataclasses.replace(
        b, created="", updated=""
    )


def record(out: TaskOutput, db: ResultsDB, grid: str, cell: Cell | None) -> int:
    """Insert the task's rows the database lacks (each network's row is written once, however
    often its task ran); note the cell as the grid's. Returns the number of new results."""
    for art in out.artifacts:
        known = db.artifact(art.id)
        if known is None or not _same(known, art):
            db.add_artifact(art)
    if cell is None:
        return 0
    db.add_eval(cell.eval_id, cell.eval)
    db.add_grid_cell(grid, cell.artifact_id, cell.eval_id)
    new = 0
    for res in out.results:
        if not db.has_result(res.artifact_id, res.arch, res.eval_id, res.eval_seed):
            db.add_result(res)
            new += 1
    for audit in out.audits:
        if db.audit(audit.artifact_id, audit.audit_id) is None:
            db.add_audit(audit)
    if cell.audit_id is not None and db.audit(cell.artifact_id, cell.audit_id) is not None:
        db.add_grid_audit(grid, cell.artifact_id, cell.audit_id)
    return new


@dataclass
class _Driver:
    """The driver's state: the database, the remote functions and the tasks in flight."""

    db: ResultsDB
    grid: str
    spec: WorkerSpec
    total: int
    log: Callable[[str], None]
    run_buffer: Any
    run_cell: Any
    pending: dict[Any, tuple[str, Cell, str | None]] = field(default_factory=dict)
    waiting: dict[str, list[Cell]] = field(default_factory=dict)
    trained: int = 0
    skipped: int = 0  # cells that trained nothing, as run_grid counts them
    finished: int = 0
    failures: list[tuple[str, BaseException]] = field(default_factory=list)

    def submit_cell(self, cell: Cell, buffer: Artifact | None) -> None:
        ref = self.run_cell.remote(cell, _known(cell, self.db, buffer), self.spec)
        self.pending[ref] = ("cell", cell, None)

    def submit_buffer(self, cell: Cell, buf: BufferPlan) -> None:
        ref = self.run_buffer.remote(cell, buf, self.spec)
        self.pending[ref] = ("buffer", cell, buf.id)
        self.log(f"buffer {buf.id[:12]} ({cell.dataset}): submitted")

    def finish(self, ref: Any, ray: ModuleType) -> None:
        """Record a finished task (or its failure) and submit what waited for it."""
        kind, cell, buffer_id = self.pending.pop(ref)
        try:
            out: TaskOutput = ray.get(ref)
        except Exception as exc:  # a task's error, or a worker lost more than max_retries times
            self.failed(cell, buffer_id, exc)
            return
        new = record(out, self.db, self.grid, None if kind == "buffer" else cell)
        if kind == "buffer":
            self.log(f"buffer {buffer_id[:12]} ({cell.dataset}): made in {out.wall_s:.0f} s "  # type: ignore[index]
                     f"({out.where})")  # fmt: skip
            self._log_lines(out)
            buffer = self.db.artifact(buffer_id)  # type: ignore[arg-type]
            for waiting in self.waiting.pop(buffer_id, []):  # type: ignore[arg-type]
                self.submit_cell(waiting, buffer)
            return
        self.finished += 1
        self.trained += new
        self.skipped += new == 0
        self.log(f"[{self.finished}/{self.total}] {cell.label()}: {new} networks in "
                 f"{out.wall_s:.0f} s ({out.where})")  # fmt: skip
        self._log_lines(out)

    def failed(self, cell: Cell, buffer_id: str | None, exc: BaseException) -> None:
        """Note a failed task; the cells that wait for a failed buffer fail with it."""
        cause = getattr(exc, "cause", None) or exc
        what = f"buffer {buffer_id[:12]}" if buffer_id else cell.label()
        self.log(f"{what}: failed: {type(cause).__name__}: {cause}")
        self.failures.append((what, cause))
        for waiting in self.waiting.pop(buffer_id or "", []):
            self.log(f"{waiting.label()}: not run, its buffer failed")
            self.failures.append((waiting.label(), cause))

    def _log_lines(self, out: TaskOutput) -> None:
        for line in out.log:
            self.log(line)


def _schedule(cells: list[Cell], drv: _Driver, note: RunContext) -> None:
    """Submit the buffers the missing cells need, then every cell that needs no buffer being
    made; complete cells are only noted as the grid's."""
    ready: list[tuple[Cell, Artifact | None]] = []
    buffers: dict[str, tuple[Cell, BufferPlan]] = {}
    for cell in cells:
        if _complete(cell, drv.db):
            run_cell(cell, note, drv.grid)  # records the grid's use of it, trains nothing
            drv.skipped += 1
            drv.log(f"[{cell.index + 1}/{len(cells)}] {cell.label()}: done already")
            continue
        buf = None if _made(drv.db, cell.artifact_id) else buffer_plan(cell)
        have = None if buf is None else _made(drv.db, buf.id)
        if buf is None or have is not None:
            ready.append((cell, have))
            continue
        buffers.setdefault(buf.id, (cell, buf))
        drv.waiting.setdefault(buf.id, []).append(cell)
    drv.total = len(cells) - drv.skipped
    for cell, buf in buffers.values():
        drv.submit_buffer(cell, buf)
    for cell, have in ready:
        drv.submit_cell(cell, have)


@contextlib.contextmanager
def _worker_niceness() -> Iterator[None]:
    """Workers of a local instance at the driver's priority, as one `bench` process computes:
    Ray starts them 15 nicer by default, which starves the grid on a shared machine
    ($RAY_worker_niceness, when set, still wins)."""
    if _NICENESS_ENV in os.environ:
        yield
        return
    os.environ[_NICENESS_ENV] = "0"
    try:
        yield
    finally:
        os.environ.pop(_NICENESS_ENV, None)


@contextlib.contextmanager
def ray_session(
    address: str | None, num_cpus: int | None, log: Callable[[str], None]
) -> Iterator[ModuleType]:
    """Ray, connected: to `address`, or a local instance of `num_cpus` (default: every core);
    one already initialised by the caller is used as it is. Shut down only if started here."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if address:
        ray.init(address=address)
    else:
        with _worker_niceness():
            ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False)
    resources = ray.cluster_resources()
    log(f"ray: {address or 'local'}, {resources.get('CPU', 0):g} CPUs, "
        f"{resources.get('GPU', 0):g} GPUs")  # fmt: skip
    try:
        yield ray
    finally:
        ray.shutdown()


def run_grid_ray(
    grid: GridSpec,
    runs_root: str | Path,
    db: ResultsDB | None = None,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_cell: float = 1.0,
    gpus_per_cell: float = 0.0,
    max_retries: int = 3,
    threads: int | None = None,
    log: Callable[[str], None] | None = print,
    data_root: str | None = None,
    download: bool = False,
    device: str | None = None,
    hook: Hook | None = None,
) -> dict[str, Any]:
    """`run_grid` with every missing buffer and cell as a Ray task; the same rows, the same
    summary. `threads`: torch threads per task (default cpus_per_cell); `hook`: see WorkerSpec.
    The first failure is raised once every other task has finished and been recorded."""
    say = log or (lambda _msg: None)
    runs = Path(runs_root).resolve()
    grid, cells = planned_cells(grid, data_root=data_root, download=download, device=device)
    env = {key: os.environ.get(key) for key in _TRAVELLING_ENV}
    spec = WorkerSpec(str(runs), grid.name, grid.device, threads or max(1, round(cpus_per_cell)),
                      env, hook)  # fmt: skip
    own_db = db is None
    database = db if db is not None else ResultsDB(runs / DB_FILE)
    note = RunContext(runs_root=runs, db=database, device=torch.device("cpu"), log=say,
                      grid=grid.name, owner=None)  # fmt: skip
    try:
        with ray_session(address, num_cpus, say) as ray:
            options = {"num_cpus": cpus_per_cell, "num_gpus": gpus_per_cell,
                       "max_retries": max_retries, "retry_exceptions": False}  # fmt: skip
            drv = _Driver(database, grid.name, spec, 0, say,
                          ray.remote(buffer_task).options(**options),
                          ray.remote(cell_task).options(**options))  # fmt: skip
            _schedule(cells, drv, note)
            while drv.pending:
                done, _ = ray.wait(list(drv.pending), num_returns=1)
                drv.finish(done[0], ray)
    finally:
        if own_db:
            database.close()
    if drv.failures:
        what, cause = drv.failures[0]
        say(f"ray: {len(drv.failures)} task(s) failed; first: {what}")
        raise cause
    return {
        "grid": grid.name,
        "db": str(database.path),
        "cells": len(cells),
        "skipped": drv.skipped,
        "networks_trained": drv.trained,
        "claimed_elsewhere": [],
    }
