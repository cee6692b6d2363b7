"""`meddistill report DIR`: one static HTML page for a run folder or a benchmark folder.

The page needs no server and no network: CSS is inline, images are files referenced by
relative paths (grids/, analysis/), so the folder can be zipped, moved and opened from the
file system. Everything read from files is HTML-escaped.

A run folder is anything a meddistill command wrote (config.yaml, metrics.jsonl,
results.json, synthetic/, grids/), drawn by report/run_page.py; an audit folder (audit.json)
by report/audit_page.py; a benchmark folder holds results.sqlite (bench/db.py), drawn by
report/bench_page.py. report/page.py has the HTML pieces they are made of.
"""

from __future__ import annotations

from pathlib import Path

from meddistill.errors import ArtifactError
from meddistill.report.audit_page import AUDIT_FILE, audit_page
from meddistill.report.bench_page import DB_FILE, benchmark_page
from meddistill.report.run_page import run_page
from meddistill.report.tune_page import TRIALS_FILE, tune_page
from meddistill.utils import atomic_path

REPORT_FILE = "report.html"
RUN_FILES = ("config.yaml", "metrics.jsonl", "results.json", "synthetic/meta.json")


def report_kind(folder: str | Path) -> str:
    """'benchmark' (holds results.sqlite), 'tune' (trials.json), 'audit' (audit.json) or
    'run'; ArtifactError for any other folder."""
    p = Path(folder)
    if not p.is_dir():
        raise ArtifactError(f"report folder {p} does not exist; give a run or benchmark folder")
    if (p / DB_FILE).is_file():
        return "benchmark"
    if (p / TRIALS_FILE).is_file():
        return "tune"
    if (p / AUDIT_FILE).is_file():
        return "audit"
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
        text = benchmark_page(folder, figures=figures, grid=grid)
    elif kind == "tune":
        text = tune_page(folder, figures=figures)
    elif kind == "audit":
        text = audit_page(folder, figures=figures)
    else:
        text = run_page(folder, figures=figures)
    target = folder / REPORT_FILE
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target
