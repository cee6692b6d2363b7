"""Paper-style tables from the results database, as Markdown, CSV and LaTeX (booktabs).

Every number is the mean ± POPULATION std (np.std, ddof=0, as the reference scripts and
training.evaluate.mean_std) over all evaluation networks of a cell, pooled over the grid's
seeds; accuracy in %, AUC as a fraction. Full-data and random-subset rows come first, as in
the papers; the best method of each column is in bold (**x** in Markdown, \\textbf{x} in
LaTeX; CSV has no markup). Values are compared as printed, so ties are all bold.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meddistill.bench.db import Artifact, ResultRow, ResultsDB
from meddistill.errors import ConfigError
from meddistill.training.evaluate import mean_std

BASELINE_ROWS = ("full", "random")
# The order of the papers' tables: baselines, then older to newer methods.
METHOD_ORDER = (
    "full",
    "random",
    "herding",
    "kcenter",
    "dc",
    "dsa",
    "dm",
    "idm",
    "cafe",
    "mtt",
    "haba",
    "smdd",
    "ftd",
    "tesla",
    "seqmatch",
    "datm",
    "att",
    "ptm",
    "hoptm",
)
METHOD_NAMES = {
    "full": "Full dataset",
    "random": "Random",
    "herding": "Herding",
    "kcenter": "K-Center",
    "dc": "DC",
    "dsa": "DSA",
    "dm": "DM",
    "idm": "IDM",
    "cafe": "CAFE",
    "mtt": "MTT",
    "haba": "HaBa",
    "smdd": "SMDD",
    "seqmatch": "SeqMatch",
    "ftd": "FTD",
    "tesla": "TESLA",
    "datm": "DATM",
    "att": "ATT",
    "ptm": "PTM",
    "hoptm": "HoP-TM",
}
ARCH_NAMES = {
    "convnet": "ConvNet",
    "convnet3d": "ConvNet3D",
    "lenet": "LeNet",
    "alexnet": "AlexNet",
    "vgg11": "VGG11",
    "resnet18": "ResNet18",
}
CROSS_ARCHS = ("convnet", "lenet", "alexnet", "vgg11", "resnet18")
# scale, decimals; val_* score the validation split (to choose by), the others test (to report)
METRICS = {"acc": (100.0, 2), "auc": (1.0, 3), "val_acc": (100.0, 2), "val_auc": (1.0, 3)}
MISSING = "-"


def method_name(method: str) -> str:
    """The papers' name of a method; a grid variant 'base+what' reads 'Base +what'."""
    base, plus, what = method.partition("+")
    return METHOD_NAMES.get(base, base) + (f" +{what}" if plus else "")


def arch_name(arch: str) -> str:
    return ARCH_NAMES.get(arch, arch)


@dataclass
class Stat:
    """Mean and population std over `n` networks (as fractions, unscaled)."""

    mean: float
    std: float
    n: int


@dataclass
class TableCell:
    """One printed cell; `span` > 1 covers the next span-1 columns too (full-data rows)."""

    stat: Stat | None = None
    text: str = MISSING
    bold: bool = False
    span: int = 1


@dataclass
class Table:
    """Rows of cells under column labels, optionally grouped (dataset over its IPCs)."""

    title: str
    row_header: str
    columns: list[str]
    rows: list[tuple[str, list[TableCell]]] = field(default_factory=list)
    groups: list[tuple[str, int]] = field(default_factory=list)
    rule_after: list[int] = field(default_factory=list)  # midrule after these row indices

    def header(self) -> list[str]:
        """Flat column labels: 'group column' when grouped."""
        if not self.groups:
            return list(self.columns)
        labels = [g for g, width in self.groups for _ in range(width)]
        return [f"{g} {c}" for g, c in zip(labels, self.columns, strict=True)]

    def _flat_cells(self, cells: list[TableCell], mark: str) -> list[str]:
        out = []
        for cell in cells:
            text = f"{mark}{cell.text}{mark}" if cell.bold and mark else cell.text
            out.append(text)
            out.extend("" for _ in range(cell.span - 1))
        return out

    def markdown(self) -> str:
        lines = [
            "| " + " | ".join([self.row_header, *self.header()]) + " |",
            "|" + "|".join("---" for _ in range(len(self.columns) + 1)) + "|",
        ]
        for label, cells in self.rows:
            lines.append("| " + " | ".join([label, *self._flat_cells(cells, "**")]) + " |")
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([self.row_header, *self.header()])
        for label, cells in self.rows:
            writer.writerow([label, *self._flat_cells(cells, "")])
        return buf.getvalue()

    def latex(self) -> str:
        """A booktabs tabular (needs \\usepackage{booktabs})."""
        ncols = len(self.columns)
        lines = [f"\\begin{{tabular}}{{l{'c' * ncols}}}", "\\toprule"]
        if self.groups:
            parts, rules, col = [""], [], 2
            for label, width in self.groups:
                parts.append(f"\\multicolumn{{{width}}}{{c}}{{{_tex(label)}}}")
                rules.append(f"\\cmidrule(lr){{{col}-{col + width - 1}}}")
                col += width
            lines.append(" & ".join(parts) + " \\\\")
            lines.append(" ".join(rules))
        lines.append(" & ".join(_tex(c) for c in [self.row_header, *self.columns]) + " \\\\")
        lines.append("\\midrule")
        for i, (label, cells) in enumerate(self.rows):
            parts = [_tex(label)]
            for cell in cells:
                text = _tex_value(cell.text)
                if cell.bold:
                    text = f"\\textbf{{{text}}}"
                if cell.span > 1:
                    text = f"\\multicolumn{{{cell.span}}}{{c}}{{{text}}}"
                parts.append(text)
            lines.append(" & ".join(parts) + " \\\\")
            if i in self.rule_after and i < len(self.rows) - 1:
                lines.append("\\midrule")
        lines += ["\\bottomrule", "\\end{tabular}"]
        return "\n".join(lines) + "\n"

    def render(self, fmt: str) -> str:
        """'markdown' | 'md' | 'csv' | 'latex' | 'tex'."""
        key = fmt.lower()
        if key in ("markdown", "md"):
            return self.markdown()
        if key == "csv":
            return self.csv()
        if key in ("latex", "tex"):
            return self.latex()
        raise ConfigError(f"unknown table format '{fmt}'; use markdown, csv or latex")


_TEX_ESCAPES = {
    "\\": "\\textbackslash{}",
    "&": "\\&",
    "%": "\\%",
    "$": "\\$",
    "#": "\\#",
    "_": "\\_",
    "{": "\\{",
    "}": "\\}",
    "~": "\\textasciitilde{}",
    "^": "\\textasciicircum{}",
}


def _tex(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(c, c) for c in text)


def _tex_value(text: str) -> str:
    if text == MISSING:
        return "--"
    return _tex(text).replace(" ± ", " $\\pm$ ")


# ---------------------------------------------------------------------------------------------
# From result rows to statistics
# ---------------------------------------------------------------------------------------------

Key = tuple[str, str, int | None, str]  # dataset, method, ipc, arch


def collect(rows: Sequence[ResultRow], metric: str = "acc") -> dict[Key, Stat]:
    """Mean ± population std per (dataset, method, ipc, arch), pooled over seeds.

    A cell fed by two different settings (another config or evaluation, e.g. two grids with
    different iterations) is refused: their networks are not samples of one experiment.
    """
    if metric not in METRICS:
        raise ConfigError(f"unknown metric '{metric}'; use {', '.join(METRICS)}")
    values: dict[Key, list[float]] = {}
    settings: dict[Key, set[tuple[str, str]]] = {}
    for row in rows:
        key = (row.dataset, row.method, row.ipc, row.arch)
        value = getattr(row, metric)
        if value is None:
            continue
        values.setdefault(key, []).append(float(value))
        settings.setdefault(key, set()).add((row.setting, row.eval_id))
    for key, found in settings.items():
        if len(found) > 1:
            dataset, method, ipc, arch = key
            where = f"({dataset}, {method}" + ("" if ipc is None else f", IPC {ipc}") + f", {arch})"
            raise ConfigError(
                f"table cell {where} mixes results of {len(found)} different configurations or "
                "evaluation settings; choose one grid with --grid NAME (or grid=NAME)"
            )
    return {k: Stat(*mean_std(v), len(v)) for k, v in values.items()}


def _format(stat: Stat | None, metric: str) -> str:
    if stat is None:
        return MISSING
    scale, digits = METRICS[metric]
    return f"{scale * stat.mean:.{digits}f} ± {scale * stat.std:.{digits}f}"


def _cell(stat: Stat | None, metric: str, span: int = 1) -> TableCell:
    return TableCell(stat=stat, text=_format(stat, metric), span=span)


def _bold_best(rows: list[tuple[str, list[TableCell]]], candidates: list[int], metric: str) -> None:
    """Bold, per column, the highest mean as printed among the `candidates` rows."""
    scale, digits = METRICS[metric]
    ncols = max((len(cells) for _, cells in rows), default=0)
    for col in range(ncols):
        printed = {
            i: round(scale * rows[i][1][col].stat.mean, digits)  # type: ignore[union-attr]
            for i in candidates
            if col < len(rows[i][1]) and rows[i][1][col].stat is not None
        }
        if not printed:
            continue
        best = max(printed.values())
        for i, value in printed.items():
            if value == best:
                rows[i][1][col].bold = True


def _order_methods(methods: set[str]) -> list[str]:
    """The papers' order; a variant 'base+what' right after its base method."""
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}

    def key(method: str) -> tuple[int, str, str]:
        base, _, what = method.partition("+")
        return rank.get(base, len(rank)), base, what

    return sorted(methods, key=key)


def _metric_label(metric: str) -> str:
    label = "accuracy (%)" if metric.endswith("acc") else "AUC"
    return f"val {label}" if metric.startswith("val_") else label


# ---------------------------------------------------------------------------------------------
# The tables
# ---------------------------------------------------------------------------------------------


def main_table(
    db: ResultsDB,
    *,
    arch: str = "convnet",
    metric: str = "acc",
    grid: str | None = None,
    datasets: Sequence[str] | None = None,
    ipcs: Sequence[int] | None = None,
    methods: Sequence[str] | None = None,
) -> Table:
    """Methods x (dataset, IPC) on one evaluation architecture (HoP-TM Tables 1-2, PTM 2-3).

    Rows: full data (one value over all IPCs of its dataset), random subsets, then the methods
    (`methods` order, else the papers' order); columns grouped by dataset, IPC ascending.
    """
    rows = db.results(archs=[arch], grid=grid, datasets=datasets, ipcs=ipcs, methods=methods)
    stats = collect(rows, metric)
    if not stats:
        raise ConfigError(f"no results for {arch} with these filters; run `meddistill bench` first")
    ds_list = list(datasets) if datasets else sorted({k[0] for k in stats})
    ipcs_of = {
        ds: list(ipcs) if ipcs else sorted({k[2] for k in stats if k[0] == ds and k[2] is not None})
        for ds in ds_list
    }
    ds_list = [ds for ds in ds_list if ipcs_of[ds]]
    if not ds_list:
        raise ConfigError("no results at any IPC with these filters; run `meddistill bench` first")
    present = {k[1] for k in stats}
    order = list(methods) if methods else _order_methods(present)
    baselines = [m for m in BASELINE_ROWS if m in present and m in order]
    others = [m for m in order if m not in BASELINE_ROWS]
    table = Table(
        title=f"{arch_name(arch)}: {_metric_label(metric)}, mean ± std over networks",
        row_header="Method",
        columns=[f"IPC {i}" for ds in ds_list for i in ipcs_of[ds]],
        groups=[(ds, len(ipcs_of[ds])) for ds in ds_list],
    )
    for method in [*baselines, *others]:
        cells: list[TableCell] = []
        for ds in ds_list:
            if method == "full":
                cells.append(_cell(stats.get((ds, "full", None, arch)), metric, len(ipcs_of[ds])))
            else:
                cells += [_cell(stats.get((ds, method, i, arch)), metric) for i in ipcs_of[ds]]
        table.rows.append((method_name(method), _expand(cells)))
    if baselines and others:
        table.rule_after.append(len(baselines) - 1)
    _bold_best(table.rows, list(range(len(baselines), len(table.rows))), metric)
    for _, cells in table.rows:
        cells[:] = _collapse(cells)
    return table


def _expand(cells: list[TableCell]) -> list[TableCell]:
    """One entry per column (a spanning cell followed by placeholders) so columns line up."""
    out: list[TableCell] = []
    for cell in cells:
        out.append(cell)
        out.extend(TableCell(text="", span=0) for _ in range(cell.span - 1))
    return out


def _collapse(cells: list[TableCell]) -> list[TableCell]:
    return [c for c in cells if c.span > 0]


def cross_arch_table(
    db: ResultsDB,
    *,
    dataset: str | None = None,
    ipc: int | None = None,
    archs: Sequence[str] = CROSS_ARCHS,
    metric: str = "acc",
    grid: str | None = None,
    methods: Sequence[str] | None = None,
) -> Table:
    """Methods x evaluation architectures for one dataset and IPC (PTM Table 4).

    `dataset` / `ipc` may be left out when the database (after the filters) holds only one.
    """
    rows = db.results(
        grid=grid,
        datasets=[dataset] if dataset else None,
        ipcs=[ipc] if ipc is not None else None,
        archs=list(archs),
        methods=methods,
    )
    dataset = dataset or _only({r.dataset for r in rows}, "dataset", "--dataset")
    ipc = (
        ipc
        if ipc is not None
        else _only({r.ipc for r in rows if r.ipc is not None}, "IPC", "--ipc")
    )
    stats = collect([r for r in rows if r.dataset == dataset], metric)
    present = {k[1] for k in stats if k[2] in (ipc, None)}
    if not present - {"full"}:
        raise ConfigError(f"no results for {dataset} at IPC {ipc}; run `meddistill bench` first")
    order = list(methods) if methods else _order_methods(present)
    baselines = [m for m in BASELINE_ROWS if m in present and m in order]
    others = [m for m in order if m not in BASELINE_ROWS]
    table = Table(
        title=f"{dataset}, IPC {ipc}: {_metric_label(metric)} by evaluation architecture",
        row_header="Method",
        columns=[arch_name(a) for a in archs],
    )
    for method in [*baselines, *others]:
        key_ipc = None if method == "full" else ipc
        cells = [_cell(stats.get((dataset, method, key_ipc, a)), metric) for a in archs]
        table.rows.append((method_name(method), cells))
    if baselines and others:
        table.rule_after.append(len(baselines) - 1)
    _bold_best(table.rows, list(range(len(baselines), len(table.rows))), metric)
    return table


def ipc_vs_table(
    db: ResultsDB,
    ours: str,
    ipc: int,
    theirs: Sequence[str],
    their_ipcs: Sequence[int],
    *,
    dataset: str | None = None,
    arch: str = "convnet",
    metric: str = "acc",
    grid: str | None = None,
) -> Table:
    """'Our IPC k against their IPC j' (PTM Table 5): rows their IPCs, columns their methods,
    and a last row with our method at IPC k, one value spanning every column."""
    if not theirs or not their_ipcs:
        raise ConfigError("ipc_vs_table needs at least one other method and one of their IPCs")
    rows = db.results(
        grid=grid,
        datasets=[dataset] if dataset else None,
        ipcs=sorted({ipc, *their_ipcs}),
        archs=[arch],
        methods=[ours, *theirs],
    )
    dataset = dataset or _only({r.dataset for r in rows}, "dataset", "--dataset")
    stats = collect([r for r in rows if r.dataset == dataset], metric)
    if not stats:
        raise ConfigError(f"no results for {dataset} with these methods; run `meddistill bench`")
    table = Table(
        title=(
            f"{dataset}: {method_name(ours)} at IPC {ipc} against other methods at IPC "
            f"{', '.join(map(str, their_ipcs))} ({arch_name(arch)}, {_metric_label(metric)})"
        ),
        row_header="IPC",
        columns=[method_name(m) for m in theirs],
    )
    for j in their_ipcs:
        table.rows.append(
            (str(j), [_cell(stats.get((dataset, m, j, arch)), metric) for m in theirs])
        )
    table.rule_after.append(len(table.rows) - 1)
    ours_stat = stats.get((dataset, ours, ipc, arch))
    table.rows.append(
        (f"{method_name(ours)} (IPC {ipc})", [_cell(ours_stat, metric, span=len(theirs))])
    )
    return table


# Accuracy against cost ------------------------------------------------------------------------

RELATIVE_COLUMNS = ("% of full", "over random")
COST_COLUMNS = (
    "Dataset", "IPC", "set wall (s)", "set CPU (s)", "set peak mem (MB)", "buffer wall (s)",
    "eval wall (s/net)", "set bytes",
)  # fmt: skip
# The row a soft-label set is compared with (DD-Ranking): real images under the same labels,
# e.g. a grid variant {method: mtt, overrides: [match.iterations=0, match.soft_labels=true,
# match.learn_labels=false]}: a random real subset labelled by the expert, unmatched.
RANDOM_SOFT = "random+soft"
SYNTHETIC_FILE = "synthetic.safetensors"
COMPACT = ("dct", "latent")  # parameterisations whose shared form is their codes


def cost_table(
    db: ResultsDB,
    *,
    arch: str = "convnet",
    metric: str = "acc",
    grid: str | None = None,
    datasets: Sequence[str] | None = None,
    ipcs: Sequence[int] | None = None,
    methods: Sequence[str] | None = None,
) -> Table:
    """Accuracy against cost: one row per (dataset, method, IPC) with its accuracy on `arch`
    and what the set cost to make (the mean over seeds of its artifacts' wall and CPU time,
    the largest peak memory), its expert buffer apart (shared by many sets) and one
    evaluation network's mean wall time. '-' where nothing was measured (baselines)."""
    rows = db.results(archs=[arch], grid=grid, datasets=datasets, ipcs=ipcs, methods=methods)
    stats = collect(rows, metric)
    if not stats:
        raise ConfigError(f"no results for {arch} with these filters; run `meddistill bench` first")
    arts = {a.id: a for a in db.artifacts()}
    groups: dict[Key, list[ResultRow]] = {}
    for row in rows:
        groups.setdefault((row.dataset, row.method, row.ipc, row.arch), []).append(row)
    order = list(methods) if methods else _order_methods({k[1] for k in stats})
    table = Table(
        title=f"{arch_name(arch)}: {_metric_label(metric)} against cost (peak memory above the "
        "stage's start: GPU allocated on CUDA, resident set on CPU)",
        row_header="Method",
        columns=[*COST_COLUMNS[:2], _metric_label(metric), *RELATIVE_COLUMNS, *COST_COLUMNS[2:]],
    )
    rank = {m: i for i, m in enumerate(order)}
    for key in sorted(stats, key=lambda k: (k[0], rank.get(k[1], len(rank)), k[2] or 0)):
        dataset, method, ipc, _ = key
        ipc_text = MISSING if ipc is None else str(ipc)
        cells = [_text(dataset), _text(ipc_text), _cell(stats[key], metric)]
        soft = _soft_labelled(groups[key], arts)
        cells += [_text(v) for v in _relative_texts(stats, key, metric, soft)]
        cells += [_text(v) for v in _cost_texts(groups[key], arts)]
        table.rows.append((method_name(method), cells))
    return table


def _soft_labelled(rows: list[ResultRow], arts: dict[str, Artifact]) -> bool:
    """Whether the cell's sets carry soft labels (their config's match.soft_labels)."""
    made = [arts[r.artifact_id] for r in rows if r.artifact_id in arts]
    return any(bool(a.config.get("match", {}).get("soft_labels")) for a in made)


def _relative_texts(stats: dict[Key, Stat], key: Key, metric: str, soft: bool) -> list[str]:
    """% of the full-data value, and the gain over the random real subset of the same IPC
    under the same evaluation (DD-Ranking's view: what the images add over real ones); for a
    soft-label set, over the grid's RANDOM_SOFT row (real images, the same soft labels) when
    the grid has one, so a gain from labels is not read as a gain from images."""
    dataset, method, ipc, arch = key
    full = stats.get((dataset, "full", None, arch))
    random = stats.get((dataset, "random", ipc, arch)) if ipc is not None else None
    if soft and (dataset, RANDOM_SOFT, ipc, arch) in stats:
        random = stats[(dataset, RANDOM_SOFT, ipc, arch)]
    scale, digits = METRICS[metric]
    share = _number(100.0 * stats[key].mean / full.mean, 1) if full and full.mean else MISSING
    if random is None or method in ("random", RANDOM_SOFT):
        return [share, MISSING]
    return [share, f"{scale * (stats[key].mean - random.mean):+.{digits}f}"]


def _cost_texts(rows: list[ResultRow], arts: dict[str, Artifact]) -> list[str]:
    """Set wall, set CPU, set peak memory, buffer wall, eval wall per network and the bytes
    of the shared file (images and labels), as printed."""
    made = [arts[i] for i in sorted({r.artifact_id for r in rows}) if i in arts]
    parents = [arts[p] for p in sorted({a.parent for a in made if a.parent}) if p in arts]
    peaks = [a.peak_mem_mb for a in made if a.peak_mem_mb is not None]
    folders = [Path(a.path) for a in made if a.kind == "synthetic" and a.path]
    sizes = [size for size in map(_shared_bytes, folders) if size is not None]
    return [
        _number(_mean([a.wall_s for a in made]), 1),
        _number(_mean([a.cpu_s for a in made]), 1),
        _number(max(peaks) if peaks else None, 0),
        _number(_mean([a.wall_s for a in parents]), 1),
        _number(_mean([r.wall_s for r in rows]), 2),
        _number(_mean(sizes), 0),
    ]


def _shared_bytes(folder: Path) -> float | None:
    """Bytes a user shares: the set file's size, or for a compact set (dct, latent) what its
    meta.json records as stored (codes, labels and any decoder; the file also holds the
    decoded images, which a reader can rebuild)."""
    file = folder / SYNTHETIC_FILE
    if not file.is_file():
        return None
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        meta = {}
    if isinstance(meta, dict) and (meta.get("parameterization") or {}).get("name") in COMPACT:
        return float(meta["stored_bytes"])
    return float(file.stat().st_size)


def _mean(values: Sequence[float | None]) -> float | None:
    known = [float(v) for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _number(value: float | None, digits: int) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def _text(text: str) -> TableCell:
    return TableCell(text=text)


def _only(values: set[Any], what: str, flag: str) -> Any:
    if len(values) == 1:
        return next(iter(values))
    if not values:
        raise ConfigError("no results found for this table; run `meddistill bench` first")
    listed = ", ".join(sorted(map(str, values)))
    raise ConfigError(f"the results hold several of {what}s ({listed}); choose one with {flag}")


# Privacy audits -------------------------------------------------------------------------------

AUDIT_COLUMNS = ("Dataset", "IPC", "Seed", "Verdict", "Near copies (pixel / features)",
                 "Attack AUC [95 % CI]", "TPR@1%FPR (%) [95 % CI]")  # fmt: skip
LIRA_COLUMNS = ("LiRA AUC [95 % CI]", "LiRA TPR@1%FPR (%) [95 % CI]")


def _interval(value: float | None, lo: float | None, hi: float | None, scale: float = 1.0,
              digits: int = 3) -> str:  # fmt: skip
    """'0.512 [0.480, 0.545]', '-' when not measured."""
    if value is None:
        return MISSING
    if lo is None or hi is None:
        return f"{scale * value:.{digits}f}"
    return f"{scale * value:.{digits}f} [{scale * lo:.{digits}f}, {scale * hi:.{digits}f}]"


def audit_table(
    db: ResultsDB,
    *,
    grid: str | None = None,
    datasets: Sequence[str] | None = None,
    ipcs: Sequence[int] | None = None,
    methods: Sequence[str] | None = None,
) -> Table:
    """One row per audited set (method, dataset, IPC, seed): the verdict, the near copies,
    the loss attack's AUC and TPR at 1 % FPR with their intervals, and LiRA's when any audit
    ran shadows. A set audited under two settings (two grids' audit sections) is refused
    without --grid, as mixed settings are in the other tables; with --grid, a set the grid
    audited again (its audit settings or the verdict rules changed) shows its latest audit."""
    rows = [a for a in db.audits(grid=grid)
            if (datasets is None or a.dataset in datasets) and (ipcs is None or a.ipc in ipcs)
            and (methods is None or a.method in methods)]  # fmt: skip
    if not rows:
        raise ConfigError(
            "no audits with these filters; run `meddistill bench GRID` with `audit: {enabled: "
            "true}` in the grid first"
        )
    if grid is not None:  # the grid's latest audit of each set (older: other settings or rules)
        latest = {a.artifact_id: a for a in sorted(rows, key=lambda a: a.created)}
        rows = [a for a in rows if latest[a.artifact_id] is a]
    ids = [a.artifact_id for a in rows]
    if len(set(ids)) < len(ids):
        raise ConfigError("a set was audited under several settings; choose one grid with --grid")
    lira = any(a.shadows for a in rows)
    table = Table(
        title="Privacy audits: verdict, near copies of training images and the membership "
        "attacks on networks trained on each set (95 % bootstrap intervals)",
        row_header="Method",
        columns=[*AUDIT_COLUMNS, *(LIRA_COLUMNS if lira else ())],
    )
    rank = {m: i for i, m in enumerate(_order_methods({a.method for a in rows}))}
    for a in sorted(rows, key=lambda a: (a.dataset, rank[a.method], a.ipc or 0, a.seed or 0)):
        texts = [a.dataset, MISSING if a.ipc is None else str(a.ipc),
                 MISSING if a.seed is None else str(a.seed), a.light,
                 f"{a.near_copies_pixel} / {a.near_copies_features}",
                 _interval(a.attack_auc, a.attack_auc_lo, a.attack_auc_hi),
                 _interval(a.attack_tpr, a.attack_tpr_lo, a.attack_tpr_hi, 100.0, 2)]  # fmt: skip
        if lira:
            texts += [_interval(a.lira_auc, a.lira_auc_lo, a.lira_auc_hi),
                      _interval(a.lira_tpr, a.lira_tpr_lo, a.lira_tpr_hi, 100.0, 2)]  # fmt: skip
        table.rows.append((method_name(a.method), [_text(t) for t in texts]))
    return table


TABLE_KINDS = ("main", "cross-arch", "ipc-vs", "audit")


def make_table(
    db: ResultsDB,
    kind: str = "main",
    *,
    grid: str | None = None,
    metric: str = "acc",
    arch: str = "convnet",
    datasets: Sequence[str] | None = None,
    ipcs: Sequence[int] | None = None,
    methods: Sequence[str] | None = None,
    archs: Sequence[str] | None = None,
    ours: str | None = None,
    theirs: Sequence[str] | None = None,
    cost: bool = False,
) -> Table:
    """One entry point for `meddistill table`: kind 'main', 'cross-arch', 'ipc-vs' or 'audit'.

    cross-arch: one dataset (datasets[0]) and one IPC (ipcs[0]), or the only ones present.
    ipc-vs: `ours` at ipcs[0] against `theirs` at ipcs[1:].
    cost: the main table's cells as rows, each with what it cost (cost_table).
    audit: the privacy audits of the sets (audit_table).
    """
    if cost and kind != "main":
        raise ConfigError(f"--cost goes with the main table (--kind main), not {kind}")
    if kind == "main":
        make = cost_table if cost else main_table
        return make(
            db, arch=arch, metric=metric, grid=grid, datasets=datasets, ipcs=ipcs, methods=methods
        )
    if kind == "audit":
        return audit_table(db, grid=grid, datasets=datasets, ipcs=ipcs, methods=methods)
    if kind in ("cross-arch", "ipc-vs"):
        one = dict(grid=grid, metric=metric, arch=arch, ipcs=ipcs, methods=methods, archs=archs)
        return _one_dataset_table(db, kind, datasets, ours=ours, theirs=theirs, **one)
    raise ConfigError(f"unknown table kind '{kind}'; use {', '.join(TABLE_KINDS)}")


def _one_dataset_table(
    db: ResultsDB,
    kind: str,
    datasets: Sequence[str] | None,
    *,
    grid: str | None,
    metric: str,
    arch: str,
    ipcs: Sequence[int] | None,
    methods: Sequence[str] | None,
    archs: Sequence[str] | None,
    ours: str | None,
    theirs: Sequence[str] | None,
) -> Table:
    """The cross-arch and ipc-vs tables, each of one dataset."""
    if datasets is not None and len(datasets) > 1:
        raise ConfigError(f"the {kind} table shows one dataset; give one --dataset")
    dataset = datasets[0] if datasets else None
    if kind == "cross-arch":
        if ipcs is not None and len(ipcs) > 1:
            raise ConfigError("the cross-arch table shows one IPC; give one --ipc")
        return cross_arch_table(
            db, dataset=dataset, ipc=ipcs[0] if ipcs else None, archs=archs or CROSS_ARCHS,
            metric=metric, grid=grid, methods=methods,
        )  # fmt: skip
    if not ours or not theirs or not ipcs or len(ipcs) < 2:
        raise ConfigError(
            "the ipc-vs table needs --ours METHOD --theirs M1 M2 ... and --ipc K J1 J2 ... "
            "(our IPC first, then theirs)"
        )
    return ipc_vs_table(
        db, ours, ipcs[0], theirs, ipcs[1:], dataset=dataset, arch=arch, metric=metric, grid=grid
    )
