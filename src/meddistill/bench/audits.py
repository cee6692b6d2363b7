"""Audits in a grid: after a synthetic set's networks, its privacy audit (grid.audit), made
by `app.audit.run_audit` into the set's run folder (RUN/audit-<id>/, where its report page
finds it) and recorded in the results database's `audits` table; an audit already recorded
is not made again, only noted as this grid's."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from meddistill.app.audit import run_audit
from meddistill.app.config import AuditJob
from meddistill.bench.db import Artifact, AuditRow
from meddistill.config import from_dict, to_dict
from meddistill.costs import measure
from meddistill.privacy.report import AuditReport
from meddistill.privacy.verdict import FPR

if TYPE_CHECKING:
    from meddistill.bench.plan import Cell
    from meddistill.bench.runners import RunContext


def audit_done(cell: Cell, ctx: RunContext) -> bool:
    """Whether the cell needs no audit: none asked for, or one recorded."""
    return cell.audit_id is None or ctx.db.audit(cell.artifact_id, cell.audit_id) is not None


def audit_cell(cell: Cell, ctx: RunContext, art: Artifact) -> None:
    """Audit the cell's set unless it is recorded already (then it is only noted as this
    grid's); record its headline numbers and its audit.json."""
    if cell.audit is None or cell.audit_id is None:
        return
    if ctx.db.audit(cell.artifact_id, cell.audit_id) is not None:
        ctx.db.add_grid_audit(ctx.grid, cell.artifact_id, cell.audit_id)
        return
    folder = Path(str(art.path)).parent / f"audit-{cell.audit_id[:8]}"
    job = from_dict(AuditJob, {**cell.audit, "dataset": cell.config["dataset"],
                               "synthetic": art.path, "out": str(folder),
                               "device": str(ctx.device)})  # fmt: skip
    ctx.log(f"  audit: {folder}")
    with measure("audit", ctx.device) as stage:
        result = run_audit(job, ctx.runs_root, progress=ctx.progress)
    report: AuditReport = result["report"]
    row = audit_row(report, cell.artifact_id, cell.audit_id, result["audit"], job)
    row.wall_s = stage.wall_s
    ctx.db.add_audit(row, grid=ctx.grid)
    ctx.log(f"  audit: {report.verdict.light}, near copies {row.near_copies_pixel} (pixel) / "
            f"{row.near_copies_features} (features), attack AUC {row.attack_auc:.3f}")  # fmt: skip


def audit_row(
    report: AuditReport, artifact_id: str, audit_id: str, path: str, job: AuditJob
) -> AuditRow:
    """The database row of an audit: the verdict, near copies and both attacks' headline
    numbers (AUC and TPR at 1 % FPR with their intervals)."""
    memo = report.memorisation
    copies = memo["pixel"].copies
    row = AuditRow(
        artifact_id=artifact_id, audit_id=audit_id, light=report.verdict.light,
        images=int(memo["pixel"].flagged.size), near_copies_pixel=memo["pixel"].count,
        near_copies_features=memo["features"].count,
        copies_8bit=None if copies is None else int(copies.sum()),
        shadows=int(job.audit.shadows), path=path, config=to_dict(job),
    )  # fmt: skip
    for prefix, name in (("attack", "synthetic"), ("lira", "lira")):
        att = report.attacks.get(name)
        if att is None:
            continue
        values = {"auc": att.auc, "auc_lo": att.auc_ci[0], "auc_hi": att.auc_ci[1],
                  "tpr": att.tpr[FPR], "tpr_lo": att.tpr_ci[FPR][0], "tpr_hi": att.tpr_ci[FPR][1]}  # fmt: skip
        for key, value in values.items():
            setattr(row, f"{prefix}_{key}", float(value))
    return row
