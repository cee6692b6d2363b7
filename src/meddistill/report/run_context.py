"""The "compared with real data" part of a run page: the run's headline accuracy beside the
random real subset at the same IPC and the full training set (report/references.py finds
them), each with its % of the full-data accuracy and the file it came from, or the command
that makes the missing ones.
"""

from __future__ import annotations

from typing import Any

from meddistill.bench.tables import arch_name, method_name
from meddistill.report.page import html_table, note, pct, section
from meddistill.report.references import Context, Reference, baseline_command, find_context
from meddistill.report.run_folder import RunFolder

HEADER = [
    "set",
    "IPC",
    "architecture",
    "accuracy (%)",
    "% of full data",
    "networks",
    "training epochs",
    "from",
]
CAPTION = (
    "Accuracy on the real test split, mean ± std over the trained networks. '% of full data' "
    "divides each accuracy by that of the first full-data row. The reference rows are read "
    "from the files named under 'from'; they compare fairly only when trained the same way."
)


def of_full(acc: float, ctx: Context | None) -> str:
    """'81.2 %' of the first full-data reference's accuracy; '-' without one."""
    full = ctx.full() if ctx is not None else None
    if full is None or not full.acc_mean > 0:
        return "-"
    return f"{100 * acc / full.acc_mean:.1f} %"


def context_section(run: RunFolder, ctx: Context | None) -> str | None:
    """The table of this run and its references, plus notes on what is missing or differs."""
    if ctx is None:
        return None
    row = run.rows()[0]
    stats = row.archs[ctx.arch]
    nets = len(row.nets(ctx.arch)) or stats.num_nets
    own = [
        f"{method_name(row.set)} (this run)",
        "-" if ctx.ipc is None else ctx.ipc,
        arch_name(ctx.arch),
        pct(stats.acc_mean, stats.acc_std),
        of_full(stats.acc_mean, ctx),
        "-" if nets is None else nets,
        "-" if ctx.epochs is None else ctx.epochs,
        f"{run.path.name}/results.json",
    ]
    refs = ctx.of("random") + ctx.of("full")
    rows = [own, *(_ref_row(r, ctx) for r in refs)]
    parts = [html_table(HEADER, rows, table_id="references", caption=CAPTION)]
    parts += _notes(run, ctx)
    return section("context", "Compared with real data", parts)


def _ref_row(ref: Reference, ctx: Context) -> list[Any]:
    label = "Random real subset" if ref.kind == "random" else "Full training set"
    source = str(ref.source) + (f" ({ref.where})" if ref.where else "")
    return [
        label,
        "-" if ref.ipc is None else ref.ipc,
        arch_name(ref.arch),
        pct(ref.acc_mean, ref.acc_std),
        of_full(ref.acc_mean, ctx),
        "-" if ref.nets is None else ref.nets,
        "-" if ref.epochs is None else ref.epochs,
        source,
    ]


def _notes(run: RunFolder, ctx: Context) -> list[str]:
    """What is missing (with the command that makes it), differing epochs, unreadable files."""
    out = [note(p) for p in ctx.problems]
    missing = [k for k in ("random", "full") if not ctx.of(k)]
    if missing:
        what = " or of ".join(
            f"the random real subset at IPC {ctx.ipc}" if k == "random" else "the full training set"
            for k in missing
        )
        where = ", ".join(str(p) for p in ctx.searched)
        command = baseline_command(run, ctx)
        if missing == ["random"]:
            command += " --no-full"
        out.append(
            note(
                f"No accuracy of {what} was found for {ctx.dataset} with {arch_name(ctx.arch)} "
                f"(looked for results.sqlite and baseline/{ctx.dataset}-*/results.json in: "
                f"{where}). This command makes it, and the next `meddistill report` on this "
                "folder shows it:",
                command,
            )
        )
    random = ctx.of("random")
    if random and ctx.epochs is not None and random[0].epochs not in (None, ctx.epochs):
        out.append(
            note(
                f"The random subset's networks trained {random[0].epochs} epochs, this run's "
                f"{ctx.epochs}: the comparison is not like for like."
            )
        )
    return out


def full_data_card(run: RunFolder) -> tuple[Context | None, list[tuple[str, Any]]]:
    """The references of the run and the '% of full data' key-number card, when there is one."""
    ctx = find_context(run)
    if ctx is None or ctx.full() is None:
        return ctx, []
    stats = run.rows()[0].archs[ctx.arch]
    return ctx, [
        (f"share of full-data accuracy, {arch_name(ctx.arch)}", of_full(stats.acc_mean, ctx))
    ]
