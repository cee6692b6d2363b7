"""The report page of a benchmark folder (results.sqlite, bench/db.py): the paper-style main
tables, then per dataset and IPC the cross-architecture table, the stability and loss figures
and the image grids of every synthetic set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from meddistill.bench.db import ResultRow, ResultsDB
from meddistill.bench.tables import (
    CROSS_ARCHS,
    METHOD_ORDER,
    Table,
    arch_name,
    cross_arch_table,
    main_table,
    method_name,
)
from meddistill.errors import ConfigError
from meddistill.report import analyses
from meddistill.report.page import (
    ANALYSIS_DIR,
    Cell,
    block,
    cards,
    duration,
    esc,
    figure,
    grid_figure,
    html_table,
    note,
    page,
    section,
    slug,
)

DB_FILE = "results.sqlite"


def bench_table_html(table: Table, table_id: str) -> str:
    """A bench.tables.Table as HTML: group row, column labels, bold best, spanning cells."""
    group = None
    if table.groups:
        group = [Cell(""), *(Cell(label, span=width) for label, width in table.groups)]
    rows = [
        [label, *(Cell(c.text, bold=c.bold, span=c.span) for c in cells)]
        for label, cells in table.rows
    ]
    return html_table(
        [table.row_header, *table.columns],
        rows,
        table_id=table_id,
        caption=table.title,
        group_header=group,
        rules_after=table.rule_after,
    )


def benchmark_page(folder: Path, figures: bool, grid: str | None) -> str:
    """The whole page of a benchmark folder; `grid` limits it to one grid's results."""
    db = ResultsDB(folder / DB_FILE, create=False)
    try:
        rows = db.results(grid=grid)
        datasets = sorted({r.dataset for r in rows})
        grids = [grid] if grid else db.grids()
        title = f"Benchmark · {folder.name}"
        subtitle = (f"grid {', '.join(grids)}" if grids else "no grid recorded") + (
            f" · datasets {', '.join(datasets)}" if datasets else ""
        )
        body = [section("summary", "Key numbers", [cards(_key_numbers(db, rows, datasets))])]
        if not rows:
            body.append(note("no results yet: run `meddistill bench GRID.yaml` first"))
            return page(title, subtitle, body)
        body.append(_results_section(db, rows, grid))
        for ds in datasets:
            ds_rows = [r for r in rows if r.dataset == ds]
            body.append(_dataset_section(folder, db, ds, ds_rows, grid, figures))
        return page(title, subtitle, body)
    finally:
        db.close()


def _key_numbers(
    db: ResultsDB, rows: list[ResultRow], datasets: list[str]
) -> list[tuple[str, Any]]:
    methods = _order({r.method for r in rows})
    synthetic = [a for a in db.artifacts(kind="synthetic") if a.dataset in datasets]
    wall = sum(a.wall_s or 0.0 for a in db.artifacts())
    return [
        ("datasets", len(datasets)),
        ("methods", ", ".join(method_name(m) for m in methods) or "-"),
        ("synthetic sets", len(synthetic)),
        ("networks evaluated", len(rows)),
        ("artifact time", duration(wall)),
    ]


def _results_section(db: ResultsDB, rows: list[ResultRow], grid: str | None) -> str:
    """The main tables (accuracy and AUC per architecture); one block per grid when grids
    with different settings share the database and cannot make one table."""
    archs = _arch_order({r.arch for r in rows})
    scopes: list[str | None] = [grid]
    if grid is None and len(db.grids()) > 1:
        try:
            main_table(db, arch=archs[0])
        except ConfigError:
            scopes = list(db.grids())
    parts: list[str] = []
    for scope in scopes:
        if scope is not None and grid is None:
            parts.append(f"<h3>Grid {esc(scope)}</h3>")
        tables = [
            _table_or_note(
                lambda a=arch, m=metric, s=scope: main_table(db, arch=a, metric=m, grid=s),
                f"main-{slug(scope or 'all')}-{slug(arch)}-{metric}",
            )
            for arch in archs
            for metric in ("acc", "auc")
        ]
        parts.append(block("tables", tables))
    return section("tables", "Results", parts)


def _dataset_section(
    folder: Path,
    db: ResultsDB,
    dataset: str,
    rows: list[ResultRow],
    grid: str | None,
    figures: bool,
) -> str:
    """Per IPC: the cross-architecture table, the figures and the synthetic sets' grids."""
    parts: list[str] = []
    archs = _arch_order({r.arch for r in rows})
    for ipc in sorted({r.ipc for r in rows if r.ipc is not None}):
        parts.append(f"<h3>IPC {esc(ipc)}</h3>")
        if len(archs) > 1:
            parts.append(
                _table_or_note(
                    lambda ipc=ipc: cross_arch_table(
                        db, dataset=dataset, ipc=ipc, archs=archs, grid=grid
                    ),
                    f"cross-arch-{slug(dataset)}-ipc{ipc}",
                )
            )
        figs = _ipc_figures(folder, db, dataset, rows, ipc, archs[0]) if figures else []
        if figs:
            parts.append(block("figures", figs))
        grids = _ipc_grids(folder, db, dataset, ipc)
        if grids:
            parts.append(block("grids", grids))
    return section(f"dataset-{slug(dataset)}", f"Dataset: {dataset}", parts)


def _ipc_figures(
    folder: Path, db: ResultsDB, dataset: str, rows: list[ResultRow], ipc: int, arch: str
) -> list[str]:
    """Accuracy of every network of `arch` per method, and the matching loss per method."""
    if not analyses.have_matplotlib():
        return []
    out_dir, name = folder / ANALYSIS_DIR, f"{slug(dataset)}_ipc{ipc}"
    figs: list[str] = []
    accs: dict[str, list[float]] = {}
    for m in _order({r.method for r in rows}):
        vals = [r.acc for r in rows if r.method == m and r.arch == arch and r.ipc in (ipc, None)]
        if vals:
            accs[method_name(m)] = vals
    if any(len(v) > 1 for v in accs.values()):
        res = analyses.stability(accs, out_dir / f"stability_{name}")
        caption = (
            f"{dataset}, IPC {ipc}: accuracy of every {arch_name(arch)} network, pooled over seeds"
        )
        figs.append(figure(folder, res, caption))
    runs = _first_seed_metrics(db, dataset, ipc)
    if runs:
        key = "match_loss" if all(_has_match_loss(v) for v in runs.values()) else "loss"
        res = analyses.loss_curves(runs, out_dir / f"loss_{name}", keys=[key])
        caption = f"{dataset}, IPC {ipc}: matching loss by method (first seed)"
        figs.append(figure(folder, res, caption))
    return figs


def _first_seed_metrics(db: ResultsDB, dataset: str, ipc: int) -> dict[str, list[dict[str, Any]]]:
    """The metrics records of the first seed of each method that distilled (has loss steps)."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for art in db.artifacts(kind="synthetic", dataset=dataset):
        run_dir = _run_dir_of(art.path)
        if art.ipc != ipc or run_dir is None or not (run_dir / "metrics.jsonl").is_file():
            continue
        label = method_name(art.method)
        if label not in runs:
            runs[label] = analyses.read_metrics(run_dir / "metrics.jsonl")
    return {k: v for k, v in runs.items() if analyses.distill_records(v)}


def _ipc_grids(folder: Path, db: ResultsDB, dataset: str, ipc: int) -> list[str]:
    """The all-classes grid of every synthetic set at this IPC, by method then seed."""
    arts = [a for a in db.artifacts(kind="synthetic", dataset=dataset) if a.ipc == ipc]
    order = {m: i for i, m in enumerate(_order({a.method for a in arts}))}
    grids = []
    for art in sorted(arts, key=lambda a: (order[a.method], a.seed or 0)):
        run_dir = _run_dir_of(art.path)
        png = run_dir / "grids" / "all.png" if run_dir else None
        if png is not None and png.is_file():
            grids.append(grid_figure(folder, png, f"{method_name(art.method)}, seed {art.seed}"))
    return grids


def _order(methods: Iterable[str]) -> list[str]:
    """Methods in the papers' order, unknown ones after them by name."""
    present = set(methods)
    return [m for m in METHOD_ORDER if m in present] + sorted(present - set(METHOD_ORDER))


def _arch_order(archs: Iterable[str]) -> list[str]:
    """Architectures in the cross-architecture order, unknown ones after them by name."""
    present = set(archs)
    return [a for a in CROSS_ARCHS if a in present] + sorted(present - set(CROSS_ARCHS))


def _table_or_note(make: Callable[[], Table], table_id: str) -> str:
    """The table, or a note saying why it cannot be made (mixed settings, no rows)."""
    try:
        return bench_table_html(make(), table_id)
    except ConfigError as exc:
        return note(str(exc))


def _run_dir_of(path: str | None) -> Path | None:
    """The run folder of a synthetic artifact (its path is the run's synthetic/ folder)."""
    if not path:
        return None
    p = Path(path)
    return p.parent if p.name == "synthetic" else p


def _has_match_loss(records: list[dict[str, Any]]) -> bool:
    return any("match_loss" in r for r in analyses.distill_records(records))
