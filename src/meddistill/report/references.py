"""The numbers a run's headline accuracy needs beside it: the random real subset at the same IPC
and the full training set, same dataset and architecture.

"59.39 %" alone says nothing; 59.39 against 55.13 for random images and 76.92 for the full
data does. The report never makes these numbers up: it finds them where meddistill wrote them,
(1) a bench results database (results.sqlite) and (2) `meddistill baseline` folders
(<runs>/baseline/<dataset>-*/results.json), in the run folder's parent folders (nearest
first), and names the file each came from. When none is found it prints the command that
makes them.
"""

from __future__ import annotations

import shlex
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meddistill.bench.db import ResultsDB
from meddistill.bench.tables import collect
from meddistill.data.results import ResultRow, ResultsFile, read_results
from meddistill.errors import MeddistillError
from meddistill.report.bench_page import DB_FILE
from meddistill.report.run_folder import RunFolder
from meddistill.runs import slug

LEVELS = 3  # parent folders searched: runs/distill/<run> -> runs/distill, runs, runs/..
COMMAND_FOLDERS = ("distill", "coreset", "evaluate", "baseline")
KINDS = ("random", "full")
# Evaluation settings that change an accuracy (num_nets and models only change the noise).
EVAL_KEYS = ("epochs", "lr", "batch_size", "momentum", "weight_decay", "dsa")
DATASET_KEYS = ("size", "resize_to", "channels", "split_seed")


@dataclass(frozen=True)
class Reference:
    """One reference accuracy (fractions) and where it was read."""

    kind: str  # "random" or "full"
    ipc: int | None
    arch: str
    acc_mean: float
    acc_std: float
    nets: int | None
    epochs: int | None
    source: Path
    where: str = ""  # e.g. "bench grid setting 1a2b3c4d"


@dataclass
class Context:
    """What the run is compared with: the references found, the folders searched, and what
    went wrong reading a candidate (a damaged file is named, not fatal)."""

    dataset: str
    ipc: int | None
    arch: str
    epochs: int | None = None  # this run's evaluation epochs
    refs: list[Reference] = field(default_factory=list)
    searched: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def of(self, kind: str) -> list[Reference]:
        return [r for r in self.refs if r.kind == kind]

    def full(self) -> Reference | None:
        refs = self.of("full")
        return refs[0] if refs else None


def search_roots(folder: Path) -> list[Path]:
    """The run folder's parents, nearest first (LEVELS of them)."""
    return list(folder.resolve().parents)[:LEVELS]


def section_of(run: RunFolder, name: str) -> dict[str, Any]:
    """A job section (dataset, model, eval) from config.yaml: under `job:` or at the top."""
    for source in (run.job(), run.config):
        value = source.get(name)
        if isinstance(value, dict):
            return value
    return {}


def find_context(run: RunFolder) -> Context | None:
    """The references of a finished, evaluated run that is not itself a baseline; None else."""
    rows = run.rows()
    dataset = run.dataset()
    if not rows or dataset is None or rows[0].set in KINDS or not rows[0].archs:
        return None
    arch = next(iter(rows[0].archs))
    config = rows[0].extra.get("config")
    epochs = config.get("epochs") if isinstance(config, dict) else None
    ctx = Context(dataset, run.ipc(), arch, epochs if isinstance(epochs, int) else None)
    ctx.searched = search_roots(run.path)
    source_id = (run.meta or {}).get("source_id")
    for root in ctx.searched:
        db = root / DB_FILE
        if db.is_file():
            _guard(ctx, db, lambda p=db: db_references(p, dataset, ctx.ipc, arch))
        for path in baseline_files(root, dataset):
            _guard(ctx, path, lambda p=path: file_references(p, dataset, source_id, ctx, arch))
    # Nearest first, but a random subset trained as long as this run's networks comes first.
    ctx.refs.sort(key=lambda r: r.kind == "random" and r.epochs != ctx.epochs)
    return ctx


def _guard(ctx: Context, path: Path, read: Any) -> None:
    """Add what `read()` finds; a file that cannot be read becomes a problem line."""
    try:
        ctx.refs.extend(read())
    except (MeddistillError, OSError, ValueError, sqlite3.Error) as exc:
        ctx.problems.append(f"could not read {path}: {exc}")


def baseline_files(root: Path, dataset: str) -> list[Path]:
    """root/baseline/<dataset>-*/results.json, newest first."""
    folder = root / "baseline"
    if not folder.is_dir():
        return []
    files = [p / "results.json" for p in folder.glob(f"{slug(dataset)}-*") if p.is_dir()]
    return sorted((p for p in files if p.is_file()), key=lambda p: -p.stat().st_mtime)


def file_references(
    path: Path, dataset: str, source_id: str | None, ctx: Context, arch: str
) -> list[Reference]:
    """The full and random (at ctx.ipc) rows of `arch` in a baseline results.json of the same
    dataset; a file made from other data (another source_id) is skipped with a problem line."""
    doc = read_results(path)
    if doc.dataset_name != dataset:
        return []
    theirs = _source_id(doc)
    if source_id and theirs and theirs != source_id:
        ctx.problems.append(
            f"skipped {path}: made from other {dataset} data (source {theirs}, this run "
            f"{source_id})"
        )
        return []
    refs = []
    for row in doc.rows:
        stats = row.archs.get(arch)
        if stats is None or row.set not in KINDS or (row.set == "random" and row.ipc != ctx.ipc):
            continue
        nets = stats.num_nets if stats.num_nets is not None else len(row.nets(arch)) or None
        refs.append(
            Reference(row.set, row.ipc, arch, stats.acc_mean, stats.acc_std, nets,
                      _row_epochs(row), path)
        )  # fmt: skip
    return refs


def _source_id(doc: ResultsFile) -> str | None:
    if isinstance(doc.dataset, dict) and isinstance(doc.dataset.get("source_id"), str):
        return doc.dataset["source_id"]
    return None


def _row_epochs(row: ResultRow) -> int | None:
    """The training epochs of a baseline row: detail.full.train (full), detail.eval (random)."""
    detail = row.detail or {}
    part = detail.get("full", {}).get("train", {}) if row.set == "full" else detail.get("eval")
    epochs = part.get("epochs") if isinstance(part, dict) else None
    return epochs if isinstance(epochs, int) else None


def db_references(path: Path, dataset: str, ipc: int | None, arch: str) -> list[Reference]:
    """The full and random (at `ipc`) baseline cells of a bench database for this dataset and
    `arch`: mean ± population std per setting (bench.tables.collect), pooled over seeds."""
    db = ResultsDB(path, create=False)
    try:
        arts = [
            a
            for a in db.artifacts(kind="baseline")
            if dataset in (a.dataset, (a.config.get("dataset") or {}).get("name"))
            and (a.method == "full" or (a.method == "random" and a.ipc == ipc))
        ]
        groups: dict[tuple[str, str, str], list[Any]] = {}
        for art in arts:
            for row in db.results(artifact_id=art.id, archs=[arch]):
                groups.setdefault((art.method, row.setting, row.eval_id), []).append(row)
    finally:
        db.close()
    return [_db_reference(path, rows, arch, ipc) for rows in groups.values()]


def _db_reference(path: Path, rows: list[Any], arch: str, ipc: int | None) -> Reference:
    stat = next(iter(collect(rows).values()))
    kind = rows[0].method
    epochs = {r.epochs for r in rows}
    return Reference(
        kind, ipc if kind == "random" else None, arch, stat.mean, stat.std, stat.n,
        epochs.pop() if len(epochs) == 1 else None, path,
        where=f"setting {rows[0].setting[:8]}",
    )  # fmt: skip


# ------------------------------------------------------------------------------ the hint


def runs_root(folder: Path) -> Path:
    """Where `--runs-dir` pointed: runs/ for runs/distill/<run>, else the run's parent."""
    parent = folder.resolve().parent
    return parent.parent if parent.name in COMMAND_FOLDERS else parent


def baseline_command(run: RunFolder, ctx: Context) -> str:
    """The `meddistill baseline` command that writes the missing references where this page
    looks for them, with the run's data, model and evaluation settings."""
    from meddistill.app.config import BaselineJob
    from meddistill.config import to_dict

    defaults = to_dict(BaselineJob())
    dataset = section_of(run, "dataset")
    args = ["meddistill", "baseline", "--dataset", ctx.dataset]
    if isinstance(dataset.get("root"), str):
        args += ["--data-root", dataset["root"]]
    if ctx.ipc is not None:
        args += ["--ipc", str(ctx.ipc)]
    args += ["--runs-dir", str(runs_root(run.path))]
    args += _overrides("dataset", dataset, defaults["dataset"], DATASET_KEYS)
    model = section_of(run, "model")
    args += _overrides("model", model, defaults["model"], tuple(model))
    args += _overrides("eval", section_of(run, "eval"), defaults["eval"], EVAL_KEYS)
    return shlex.join(args)


def _overrides(
    name: str, values: Mapping[str, Any], defaults: Mapping[str, Any], keys: Iterable[str]
) -> list[str]:
    """`name.key=value` for each of `keys` the run set differently from the default."""
    out = []
    for key in keys:
        if key in values and key in defaults and values[key] != defaults[key]:
            out.append(f"{name}.{key}={_yaml_value(values[key])}")
    return out


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)
