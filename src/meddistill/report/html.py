"""`meddistill report DIR`: one static HTML page for a run folder or a benchmark folder.

The page needs no server and no network: CSS is inline, images are files referenced by
relative paths (grids/, analysis/), so the folder can be zipped, moved and opened from the
file system. Everything read from files is HTML-escaped. Figures are drawn by
report/analyses.py into DIR/analysis/ (PNG + CSV/JSON); without matplotlib the page is still
made, with a note where the figures would be.

A run folder is anything a meddistill command wrote (config.yaml, metrics.jsonl,
results.json, synthetic/, grids/); a benchmark folder holds results.sqlite (bench/db.py).
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from meddistill import __version__
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
from meddistill.errors import ArtifactError, ConfigError
from meddistill.matching.snapshots import load_snapshots
from meddistill.report import analyses
from meddistill.utils import atomic_path

REPORT_FILE = "report.html"
ANALYSIS_DIR = "analysis"
DB_FILE = "results.sqlite"
RUN_FILES = ("config.yaml", "metrics.jsonl", "results.json", "synthetic/meta.json")
BANNER_COLOR = "#1d4e89"  # the tests look for this colour in a screenshot
LOG_TAIL = 60

CSS = f"""
* {{ box-sizing: border-box; }}
body {{ margin: 0; font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; color: #1b1f24;
  background: #f6f7f9; font-size: 15px; line-height: 1.45; }}
header.banner {{ background: {BANNER_COLOR}; color: #ffffff; padding: 22px 32px 18px; }}
header.banner h1 {{ margin: 0 0 4px; font-size: 28px; font-weight: 600; }}
header.banner p {{ margin: 0; opacity: 0.85; font-size: 14px; }}
main {{ padding: 8px 32px 40px; max-width: 1400px; }}
section {{ background: #ffffff; border: 1px solid #dde1e6; border-radius: 6px;
  padding: 14px 20px 18px; margin: 18px 0; }}
h2 {{ font-size: 20px; margin: 4px 0 12px; color: {BANNER_COLOR}; }}
h3 {{ font-size: 16px; margin: 16px 0 8px; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 12px; }}
.card {{ border: 1px solid #dde1e6; border-left: 4px solid {BANNER_COLOR}; border-radius: 4px;
  padding: 8px 14px; min-width: 170px; background: #fbfcfd; }}
.card .label {{ font-size: 12px; color: #5b6570; text-transform: uppercase;
  letter-spacing: 0.04em; }}
.card .value {{ font-size: 20px; font-weight: 600; }}
.grids {{ display: flex; flex-wrap: wrap; gap: 14px 22px; align-items: flex-start; }}
figure {{ margin: 0; }}
figure img {{ max-width: 100%; height: auto; display: block; border: 1px solid #e3e6ea; }}
figure.grid {{ max-width: 100%; }}
figure.grid img {{ image-rendering: pixelated; }}
figure.grid figcaption {{ max-width: 210px; }}
figcaption {{ font-size: 13px; color: #3b4450; margin-top: 4px; max-width: 460px; }}
.figures {{ display: flex; flex-wrap: wrap; gap: 18px; }}
.tables {{ display: flex; flex-wrap: wrap; gap: 4px 28px; align-items: flex-start; }}
table {{ border-collapse: collapse; margin: 6px 0 12px; font-size: 14px; }}
th, td {{ border: 1px solid #d3d8de; padding: 4px 9px; text-align: center; }}
thead th {{ background: #eef2f7; }}
tbody th {{ text-align: left; font-weight: 600; background: #fafbfc; }}
tr.rule td, tr.rule th {{ border-bottom: 2px solid #8a939d; }}
p.note {{ color: #6b4e00; background: #fff7dc; border: 1px solid #f0dc9a; padding: 6px 10px;
  border-radius: 4px; }}
details {{ margin: 6px 0; }}
summary {{ cursor: pointer; font-weight: 600; }}
pre {{ background: #f2f4f7; border: 1px solid #dde1e6; padding: 10px; overflow-x: auto;
  font-size: 12.5px; line-height: 1.35; }}
footer {{ color: #6a737d; font-size: 12px; padding: 0 32px 24px; }}
"""


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def report_kind(folder: str | Path) -> str:
    """'benchmark' (holds results.sqlite) or 'run'; ArtifactError for any other folder."""
    p = Path(folder)
    if not p.is_dir():
        raise ArtifactError(f"report folder {p} does not exist; give a run or benchmark folder")
    if (p / DB_FILE).is_file():
        return "benchmark"
    if any((p / name).is_file() for name in RUN_FILES):
        return "run"
    raise ArtifactError(
        f"{p} is neither a run folder (config.yaml, metrics.jsonl, results.json) nor a benchmark "
        f"folder ({DB_FILE}); give the folder written by `meddistill distill` or `bench`"
    )


def build_report(path: str | Path, *, figures: bool = True, grid: str | None = None) -> Path:
    """Write DIR/report.html (atomically) for a run or benchmark folder and return its path.

    figures=False leaves out the analysis figures (no matplotlib needed, faster).
    grid: for a benchmark, only the results of this grid (default: all, or one section per
    grid when grids with different settings share the database).
    """
    folder = Path(path)
    kind = report_kind(folder)
    if kind == "benchmark":
        page = _benchmark_page(folder, figures=figures, grid=grid)
    else:
        page = _run_page(folder, figures=figures)
    target = folder / REPORT_FILE
    with atomic_path(target) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return target


# ---------------------------------------------------------------------------------------------
# HTML pieces (every piece of text goes through esc)
# ---------------------------------------------------------------------------------------------


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _src(folder: Path, file: Path) -> str:
    """A relative, URL-quoted reference from the page in `folder` to `file`."""
    rel = Path(os.path.relpath(Path(file).resolve(), Path(folder).resolve())).as_posix()
    return esc(quote(rel))


@dataclass
class Cell:
    """A table cell: text (escaped when written), bold, spanning `span` columns."""

    text: Any
    bold: bool = False
    span: int = 1


def _cell(tag: str, value: Any) -> str:
    c = value if isinstance(value, Cell) else Cell(value)
    text = esc(c.text)
    if c.bold:
        text = f"<strong>{text}</strong>"
    span = f' colspan="{c.span}"' if c.span > 1 else ""
    return f"<{tag}{span}>{text}</{tag}>"


def html_table(
    header: Sequence[Any],
    rows: Iterable[Sequence[Any]],
    *,
    table_id: str,
    caption: str | None = None,
    row_headers: bool = True,
    group_header: Sequence[Cell] | None = None,
    rules_after: Sequence[int] = (),
) -> str:
    """A <table> with a header row (and optional group row above it); the first cell of each
    body row is a <th> when row_headers."""
    out = [f'<table id="{esc(table_id)}">']
    if caption:
        out.append(f"<caption>{esc(caption)}</caption>")
    out.append("<thead>")
    if group_header:
        out.append("<tr>" + "".join(_cell("th", c) for c in group_header) + "</tr>")
    out.append("<tr>" + "".join(_cell("th", h) for h in header) + "</tr></thead><tbody>")
    for i, row in enumerate(rows):
        cells = [_cell("th" if (j == 0 and row_headers) else "td", v) for j, v in enumerate(row)]
        cls = ' class="rule"' if i in rules_after else ""
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


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


def _cards(items: Sequence[tuple[str, Any]]) -> str:
    cards = "".join(
        f'<div class="card"><div class="label">{esc(k)}</div><div class="value">{esc(v)}</div>'
        "</div>"
        for k, v in items
    )
    return f'<div class="cards" id="key-numbers">{cards}</div>'


def _figure(folder: Path, result: analyses.Analysis, caption: str) -> str:
    return (
        f'<figure class="analysis"><img src="{_src(folder, result.png)}" alt="{esc(caption)}">'
        f'<figcaption>{esc(caption)} (numbers: <a href="{_src(folder, result.data)}">'
        f"{esc(result.data.name)}</a>)</figcaption></figure>"
    )


def _grid_figure(folder: Path, png: Path, caption: str) -> str:
    return (
        f'<figure class="grid"><img src="{_src(folder, png)}" alt="{esc(caption)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def _note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def _details(summary: str, text: str) -> str:
    return f"<details><summary>{esc(summary)}</summary><pre>{esc(text)}</pre></details>"


def _page(title: str, subtitle: str, body: Sequence[str]) -> str:
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{esc(title)}</title>",
            f"<style>{CSS}</style></head><body>",
            f'<header class="banner" id="banner"><h1>{esc(title)}</h1>'
            f"<p>{esc(subtitle)}</p></header>",
            "<main>",
            *body,
            "</main>",
            f"<footer>Made by meddistill {esc(__version__)}. A static page: it reads only files "
            "in this folder and needs no network.</footer>",
            "</body></html>",
            "",
        ]
    )


def _section(section_id: str, heading: str, parts: Sequence[str]) -> str:
    return (
        f'<section id="{esc(section_id)}"><h2>{esc(heading)}</h2>' + "\n".join(parts) + "</section>"
    )


def _pct(mean: Any, std: Any) -> str:
    if not isinstance(mean, int | float):
        return "-"
    return f"{100 * mean:.2f} ± {100 * (std or 0.0):.2f}"


def _frac(mean: Any, std: Any) -> str:
    if not isinstance(mean, int | float):
        return "-"
    return f"{mean:.3f} ± {(std or 0.0):.3f}"


def duration(seconds: float) -> str:
    """12 s, 4 min 6 s, 2 h 05 min."""
    s = int(round(float(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def _slug(text: str) -> str:
    out = "".join(ch if ch.isalnum() else "-" for ch in str(text).lower())
    return "-".join(p for p in out.split("-") if p) or "x"


# ---------------------------------------------------------------------------------------------
# Reading a run folder
# ---------------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc}); re-create it") from exc


def _read_yaml(path: Path) -> tuple[dict[str, Any], str]:
    if not path.is_file():
        return {}, ""
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ArtifactError(f"{path} is not valid YAML ({exc}); re-create it") from exc
    return (data if isinstance(data, dict) else {}), text


@dataclass
class RunFolder:
    """What a run folder holds, read once (missing parts are None / empty)."""

    path: Path
    config: dict[str, Any]
    config_text: str
    results: dict[str, Any] | None
    records: list[dict[str, Any]]
    meta: dict[str, Any] | None
    env: Any

    @classmethod
    def read(cls, folder: Path) -> RunFolder:
        config, text = _read_yaml(folder / "config.yaml")
        records = (
            analyses.read_metrics(folder / "metrics.jsonl")
            if (folder / "metrics.jsonl").is_file()
            else []
        )
        results = _read_json(folder / "results.json")
        return cls(
            path=folder,
            config=config,
            config_text=text,
            results=results if isinstance(results, dict) else None,
            records=records,
            meta=_read_json(folder / "synthetic" / "meta.json"),
            env=_read_json(folder / "env.json"),
        )

    def job(self) -> dict[str, Any]:
        job = self.config.get("job")
        return job if isinstance(job, dict) else {}

    def method(self) -> str | None:
        for source in (self.results, self.job(), self.meta):
            if source and isinstance(source.get("method"), str):
                return source["method"]
        job = self.job()
        if isinstance(job.get("selection"), str):
            return job["selection"]
        return None

    def dataset(self) -> str | None:
        if self.results and isinstance(self.results.get("dataset"), str):
            return self.results["dataset"]
        if self.results and isinstance(self.results.get("dataset"), dict):
            return self.results["dataset"].get("name")
        ds = self.job().get("dataset")
        if isinstance(ds, dict) and ds.get("name"):
            return str(ds["name"])
        return self.meta.get("dataset") if self.meta else None

    def ipc(self) -> int | None:
        for source in (self.results, self.config.get("match"), self.job()):
            if isinstance(source, dict) and isinstance(source.get("ipc"), int):
                return source["ipc"]
        return None

    def planned_iterations(self) -> int | None:
        match = self.config.get("match")
        if isinstance(match, dict) and isinstance(match.get("iterations"), int):
            return match["iterations"]
        return None

    def rows(self) -> list[dict[str, Any]]:
        rows = (self.results or {}).get("rows")
        return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def _row_nets(row: Mapping[str, Any], arch: str, stats: Mapping[str, Any]) -> list[float]:
    """Per-network accuracies of a results row: archs.<arch>.nets (distill, evaluate), else
    the baseline's detail (detail.full.nets; detail.random.<ipc>.subsets[*].report.archs)."""
    nets = stats.get("nets")
    detail = row.get("detail") if isinstance(row.get("detail"), dict) else {}
    if not isinstance(nets, list) and row.get("set") == "full":
        full = detail.get("full")
        nets = full.get("nets") if isinstance(full, dict) else None
    if not isinstance(nets, list) and row.get("set") == "random":
        part = (detail.get("random") or {}).get(str(row.get("ipc")))
        subsets = part.get("subsets") if isinstance(part, dict) else None
        nets = []
        for sub in subsets if isinstance(subsets, list) else []:
            report = sub.get("report") if isinstance(sub, dict) else None
            archs = report.get("archs") if isinstance(report, dict) else None
            found = archs.get(arch) if isinstance(archs, dict) else None
            if isinstance(found, dict) and isinstance(found.get("nets"), list):
                nets += found["nets"]
    if not isinstance(nets, list):
        return []
    return [
        float(n["acc"])
        for n in nets
        if isinstance(n, dict) and isinstance(n.get("acc"), int | float)
    ]


def _row_arch_items(row: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    archs = row.get("archs")
    if not isinstance(archs, dict):
        return []
    return [(str(a), s) for a, s in archs.items() if isinstance(s, dict)]


# ---------------------------------------------------------------------------------------------
# The run page
# ---------------------------------------------------------------------------------------------


def _run_title(run: RunFolder) -> tuple[str, str]:
    method, dataset, ipc = run.method(), run.dataset(), run.ipc()
    parts = []
    if method:
        parts.append(method_name(method))
    elif run.rows():
        parts.append(
            "Baseline" if any(r.get("set") == "full" for r in run.rows()) else "Evaluation"
        )
    if dataset:
        parts.append(str(dataset))
    if ipc is not None:
        parts.append(f"IPC {ipc}")
    title = " · ".join(parts) or run.path.name
    return title, f"run folder {run.path.name}"


def _run_cards(run: RunFolder) -> list[tuple[str, Any]]:
    cards: list[tuple[str, Any]] = []
    rows = run.rows()
    if rows:
        row = rows[0]
        for arch, stats in _row_arch_items(row)[:3]:
            name = arch_name(arch)
            cards.append(
                (f"accuracy, {name} (%)", _pct(stats.get("acc_mean"), stats.get("acc_std")))
            )
            cards.append((f"AUC, {name}", _frac(stats.get("auc_mean"), stats.get("auc_std"))))
    steps = analyses.distill_records(run.records)
    planned = run.planned_iterations()
    if steps:
        done = int(steps[-1]["iteration"]) + 1
        cards.append(("iterations", f"{done} / {planned}" if planned else str(done)))
    res = run.results or {}
    if isinstance(res.get("distill_s"), int | float):
        cards.append(("distillation time", duration(res["distill_s"])))
    elif steps:
        total = sum(float(r.get("seconds") or 0.0) for r in steps)
        cards.append(("distillation time", duration(total)))
    if isinstance(res.get("buffer_s"), int | float) and res["buffer_s"] > 0:
        cards.append(("expert buffer time", duration(res["buffer_s"])))
    syn_lr = res.get("syn_lr", (run.meta or {}).get("syn_lr"))
    if isinstance(syn_lr, int | float):
        cards.append(("learned step size", f"{syn_lr:.4g}"))
    if run.meta and isinstance(run.meta.get("num_images"), int):
        shape = "×".join(str(s) for s in run.meta.get("image_shape", []))
        cards.append(("synthetic images", f"{run.meta['num_images']} of {shape}"))
    if run.results is None:
        cards.append(("status", "no results.json yet: running or stopped"))
    return cards


def _class_grids(run: RunFolder, out_dir: Path) -> tuple[list[Path], list[str]]:
    """The per-class grid PNGs and their captions; made into analysis/grids from the
    synthetic set when the run folder has none."""
    grid_dir = run.path / "grids"
    files = sorted(grid_dir.glob("class_*.png")) if grid_dir.is_dir() else []
    names = list(run.meta.get("class_names", [])) if run.meta else []
    if not files and run.meta is not None:
        from meddistill.data.synthetic import SyntheticSet
        from meddistill.report.grids import save_class_grids

        syn = SyntheticSet.load(run.path / "synthetic")
        made = save_class_grids(
            syn.images, syn.labels, syn.class_names, syn.normalization, out_dir / "grids"
        )
        files = [p for p in made if p.name.startswith("class_")]
    captions = []
    for f in files:
        stem = f.stem.split("_", 2)
        index = int(stem[1]) if len(stem) > 1 and stem[1].isdigit() else None
        if index is not None and index < len(names):
            captions.append(f"class {index}: {names[index]}")
        else:
            captions.append(stem[2].replace("_", " ") if len(stem) > 2 else f.stem)
    return files, captions


def _final_eval_table(run: RunFolder) -> str | None:
    header = [
        "set",
        "IPC",
        "architecture",
        "networks",
        "accuracy (%)",
        "AUC",
        "lr",
        "per network accuracy (%)",
    ]
    rows = []
    for row in run.rows():
        for arch, stats in _row_arch_items(row):
            nets = _row_nets(row, arch, stats)
            n = len(nets) or stats.get("num_nets", "-")
            lr = row.get("lr")
            rows.append(
                [
                    method_name(str(row.get("set", "-"))),
                    "-" if row.get("ipc") is None else row.get("ipc"),
                    arch_name(arch),
                    n,
                    _pct(stats.get("acc_mean"), stats.get("acc_std")),
                    _frac(stats.get("auc_mean"), stats.get("auc_std")),
                    f"{lr:.4g}" if isinstance(lr, int | float) else "-",
                    ", ".join(f"{100 * a:.1f}" for a in nets) or "-",
                ]
            )
    if not rows:
        return None
    return html_table(header, rows, table_id="final-eval", row_headers=False)


def _periodic_table(points: list[dict[str, Any]]) -> str | None:
    during = [p for p in points if not p["final"]]
    if not during:
        return None
    rows = [
        [
            p["iteration"],
            duration(p["seconds"]),
            arch_name(p["arch"]),
            _pct(p["acc_mean"], p["acc_std"]),
            _frac(p["auc_mean"], p["auc_std"]),
        ]
        for p in during
    ]
    header = ["iteration", "distillation time", "architecture", "accuracy (%)", "AUC"]
    return html_table(header, rows, table_id="periodic-eval", row_headers=False)


def _final_set_mmd(run: RunFolder) -> str | None:
    if run.meta is None:
        return None
    from meddistill.data.synthetic import SyntheticSet

    syn = SyntheticSet.load(run.path / "synthetic")
    values = analyses.mmd_within_class(syn.images, syn.hard_labels)
    if not values:
        return None
    rows = [
        [
            syn.class_names[c] if c < len(syn.class_names) else c,
            v["n"],
            f"{v['mmd2']:.4f}",
            f"{v['similarity']:.4f}",
        ]
        for c, v in sorted(values.items())
    ]
    return html_table(
        ["class", "images", "MMD² foundation vs complement", "mean kernel similarity"],
        rows,
        table_id="class-mmd",
        caption="Within-class diversity of the final synthetic set (Gaussian kernel, median "
        "bandwidth): a small MMD² and a high similarity mean the images of a class look alike.",
    )


def _row_label(run: RunFolder, row: Mapping[str, Any], arch: str) -> str:
    """'ConvNet' for a run with one row, else 'Random, IPC 10' (+ the architecture if several)."""
    if len(run.rows()) == 1:
        return arch_name(arch)
    label = method_name(str(row.get("set", "?")))
    if row.get("ipc") is not None:
        label += f", IPC {row['ipc']}"
    many = any(len(_row_arch_items(r)) > 1 for r in run.rows())
    return f"{label} ({arch_name(arch)})" if many else label


def _run_figures(run: RunFolder, out_dir: Path) -> list[str]:
    folder = run.path
    parts: list[str] = []
    if analyses.distill_records(run.records):
        res = analyses.loss_curves(run.records, out_dir / "loss_curves")
        parts.append(_figure(folder, res, "Loss terms during matching, by iteration"))
    if any(not p["final"] for p in analyses.eval_points(run.records)):
        res = analyses.accuracy_vs_time(run.records, out_dir / "accuracy_vs_time")
        parts.append(_figure(folder, res, "Test accuracy against distillation time"))
    accs: dict[str, list[float]] = {}
    for row in run.rows():
        for arch, stats in _row_arch_items(row):
            nets = _row_nets(row, arch, stats)
            if nets:
                accs[_row_label(run, row, arch)] = nets
    if any(len(v) > 1 for v in accs.values()):
        res = analyses.stability(accs, out_dir / "stability")
        parts.append(_figure(folder, res, "Evaluation stability: one dot per trained network"))
    snaps = load_snapshots(folder)
    if len(snaps) >= 2:
        names = run.meta.get("class_names") if run.meta else None
        pairs = [(it, images) for it, images, _ in snaps]
        try:
            res = analyses.class_mmd_over_run(
                pairs, snaps[-1][2], out_dir / "class_mmd", None, names
            )
            parts.append(_figure(folder, res, "MMD² among the synthetic images of each class"))
        except ConfigError as exc:  # IPC 1: no class has two images
            parts.append(_note(f"no within-class MMD curve: {exc}"))
    return parts


def _run_page(folder: Path, figures: bool) -> str:
    run = RunFolder.read(folder)
    out_dir = folder / ANALYSIS_DIR
    title, subtitle = _run_title(run)
    body = [_section("summary", "Key numbers", [_cards(_run_cards(run))])]

    files, captions = _class_grids(run, out_dir)
    if files:
        grids = "".join(_grid_figure(folder, f, c) for f, c in zip(files, captions, strict=True))
        body.append(
            _section("images", "Synthetic images per class", [f'<div class="grids">{grids}</div>'])
        )
    elif run.meta is None and analyses.distill_records(run.records):
        body.append(
            _section(
                "images",
                "Synthetic images per class",
                [_note("no synthetic set yet: the run has not finished")],
            )
        )

    parts: list[str] = []
    if figures and analyses.have_matplotlib():
        figs = _run_figures(run, out_dir)
        if figs:
            parts.append(f'<div class="figures">{"".join(figs)}</div>')
    elif figures:
        parts.append(_note("figures need matplotlib: pip install meddistill[plots]"))
    mmd = _final_set_mmd(run)
    if mmd:
        parts.append(mmd)
    if parts:
        body.append(_section("analysis", "Analysis", parts))

    tables = [
        t for t in (_final_eval_table(run), _periodic_table(analyses.eval_points(run.records))) if t
    ]
    if tables:
        body.append(_section("evaluation", "Evaluation", tables))

    details = []
    if run.config_text:
        details.append(_details("Resolved configuration (config.yaml)", run.config_text))
    if run.env is not None:
        details.append(_details("Environment (env.json)", json.dumps(run.env, indent=2)))
    log = folder / "log.txt"
    if log.is_file():
        lines = log.read_text(errors="replace").splitlines()
        details.append(
            _details(
                f"Log (last {min(len(lines), LOG_TAIL)} lines of log.txt)",
                "\n".join(lines[-LOG_TAIL:]),
            )
        )
    if details:
        body.append(_section("config", "Configuration", details))
    return _page(title, subtitle, body)


# ---------------------------------------------------------------------------------------------
# The benchmark page
# ---------------------------------------------------------------------------------------------


def _order(methods: Iterable[str]) -> list[str]:
    present = set(methods)
    return [m for m in METHOD_ORDER if m in present] + sorted(present - set(METHOD_ORDER))


def _arch_order(archs: Iterable[str]) -> list[str]:
    present = set(archs)
    return [a for a in CROSS_ARCHS if a in present] + sorted(present - set(CROSS_ARCHS))


def _table_or_note(make: Any, table_id: str) -> str:
    try:
        return bench_table_html(make(), table_id)
    except ConfigError as exc:
        return _note(str(exc))


def _run_dir_of(path: str | None) -> Path | None:
    """The run folder of a synthetic artifact (its path is the run's synthetic/ folder)."""
    if not path:
        return None
    p = Path(path)
    return p.parent if p.name == "synthetic" else p


def _has_match_loss(records: list[dict[str, Any]]) -> bool:
    return any("match_loss" in r for r in analyses.distill_records(records))


def _benchmark_dataset_section(
    folder: Path,
    db: ResultsDB,
    dataset: str,
    rows: list[ResultRow],
    grid: str | None,
    figures: bool,
) -> str:
    out_dir = folder / ANALYSIS_DIR
    parts: list[str] = []
    archs = _arch_order({r.arch for r in rows})
    ipcs = sorted({r.ipc for r in rows if r.ipc is not None})
    slug = _slug(dataset)
    for ipc in ipcs:
        parts.append(f"<h3>IPC {esc(ipc)}</h3>")
        if len(archs) > 1:
            parts.append(
                _table_or_note(
                    lambda ipc=ipc: cross_arch_table(
                        db, dataset=dataset, ipc=ipc, archs=archs, grid=grid
                    ),
                    f"cross-arch-{slug}-ipc{ipc}",
                )
            )
        figs: list[str] = []
        if figures and analyses.have_matplotlib():
            arch = archs[0]
            accs: dict[str, list[float]] = {}
            for m in _order({r.method for r in rows}):
                vals = [
                    r.acc for r in rows if r.method == m and r.arch == arch and r.ipc in (ipc, None)
                ]
                if vals:
                    accs[method_name(m)] = vals
            if any(len(v) > 1 for v in accs.values()):
                res = analyses.stability(accs, out_dir / f"stability_{slug}_ipc{ipc}")
                figs.append(
                    _figure(
                        folder,
                        res,
                        f"{dataset}, IPC {ipc}: accuracy of every "
                        f"{arch_name(arch)} network, pooled over seeds",
                    )
                )
            runs: dict[str, list[dict[str, Any]]] = {}
            for art in db.artifacts(kind="synthetic", dataset=dataset):
                run_dir = _run_dir_of(art.path)
                if art.ipc != ipc or run_dir is None or not (run_dir / "metrics.jsonl").is_file():
                    continue
                label = method_name(art.method)
                if label not in runs:  # the first seed of each method
                    runs[label] = analyses.read_metrics(run_dir / "metrics.jsonl")
            runs = {k: v for k, v in runs.items() if analyses.distill_records(v)}
            if runs:
                key = "match_loss" if all(_has_match_loss(v) for v in runs.values()) else "loss"
                res = analyses.loss_curves(runs, out_dir / f"loss_{slug}_ipc{ipc}", keys=[key])
                figs.append(
                    _figure(
                        folder, res, f"{dataset}, IPC {ipc}: matching loss by method (first seed)"
                    )
                )
        if figs:
            parts.append(f'<div class="figures">{"".join(figs)}</div>')
        grids = []
        arts = [a for a in db.artifacts(kind="synthetic", dataset=dataset) if a.ipc == ipc]
        order = {m: i for i, m in enumerate(_order({a.method for a in arts}))}
        for art in sorted(arts, key=lambda a: (order[a.method], a.seed or 0)):
            run_dir = _run_dir_of(art.path)
            png = run_dir / "grids" / "all.png" if run_dir else None
            if png is not None and png.is_file():
                grids.append(
                    _grid_figure(folder, png, f"{method_name(art.method)}, seed {art.seed}")
                )
        if grids:
            parts.append(f'<div class="grids">{"".join(grids)}</div>')
    return _section(f"dataset-{slug}", f"Dataset: {dataset}", parts)


def _benchmark_page(folder: Path, figures: bool, grid: str | None) -> str:
    db = ResultsDB(folder / DB_FILE, create=False)
    try:
        rows = db.results(grid=grid)
        datasets = sorted({r.dataset for r in rows})
        methods = _order({r.method for r in rows})
        archs = _arch_order({r.arch for r in rows})
        grids = [grid] if grid else db.grids()
        title = f"Benchmark · {folder.name}"
        subtitle = (f"grid {', '.join(grids)}" if grids else "no grid recorded") + (
            f" · datasets {', '.join(datasets)}" if datasets else ""
        )
        synthetic = [a for a in db.artifacts(kind="synthetic") if a.dataset in datasets]
        wall = sum(a.wall_s or 0.0 for a in db.artifacts())
        cards = [
            ("datasets", len(datasets)),
            ("methods", ", ".join(method_name(m) for m in methods) or "-"),
            ("synthetic sets", len(synthetic)),
            ("networks evaluated", len(rows)),
            ("artifact time", duration(wall)),
        ]
        body = [_section("summary", "Key numbers", [_cards(cards)])]
        if not rows:
            body.append(_note("no results yet: run `meddistill bench GRID.yaml` first"))
            return _page(title, subtitle, body)
        scopes: list[str | None] = [grid]
        if grid is None and len(db.grids()) > 1:
            try:
                main_table(db, arch=archs[0])
            except ConfigError:
                scopes = list(db.grids())  # grids with different settings: one table each
        parts: list[str] = []
        for scope in scopes:
            if scope is not None and grid is None:
                parts.append(f"<h3>Grid {esc(scope)}</h3>")
            tables = [
                _table_or_note(
                    lambda a=arch, m=metric, s=scope: main_table(db, arch=a, metric=m, grid=s),
                    f"main-{_slug(scope or 'all')}-{_slug(arch)}-{metric}",
                )
                for arch in archs
                for metric in ("acc", "auc")
            ]
            parts.append(f'<div class="tables">{"".join(tables)}</div>')
        body.append(_section("tables", "Results", parts))
        for ds in datasets:
            ds_rows = [r for r in rows if r.dataset == ds]
            body.append(_benchmark_dataset_section(folder, db, ds, ds_rows, grid, figures))
        return _page(title, subtitle, body)
    finally:
        db.close()
