"""The report page of an audit run folder (`meddistill audit`): the verdict as a traffic light
with its paragraph, the numbers behind it, the closest pairs and the attacks' ROC curves on
log-log axes (as Carlini et al. draw them); and the audit section of a distill run's page,
for the audits kept in that run folder (RUN/audit*/, where `meddistill bench` puts them).

Everything comes from audit.json (privacy/report.py writes it) and the PNGs beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meddistill.bench.tables import method_name
from meddistill.errors import ArtifactError
from meddistill.report import analyses
from meddistill.report.page import (
    ANALYSIS_DIR,
    block,
    esc,
    figure,
    grid_figure,
    html_table,
    note,
    page,
    section,
    src_ref,
)
from meddistill.report.run_folder import RunFolder, read_json
from meddistill.report.run_page import config_section, costs_section

AUDIT_FILE = "audit.json"
LIGHTS = {"green": "#2e7d32", "amber": "#e69a00", "red": "#c62828"}
ATTACKS = {
    "synthetic": "the set (loss attack)",
    "lira": "the set (LiRA)",
    "full": "full data (loss attack)",
    "random": "random real subset (loss attack)",
    "random_own": "random subset, its own images as members",
    "decoder": "the set's decoder (best code per patient)",
}
PAIRS = (("pairs.png", "pixel space"), ("pairs_features.png", "feature space"))


def read_audit(folder: Path) -> dict[str, Any]:
    """audit.json of an audit folder, checked to be one (a verdict and attacks)."""
    data = read_json(folder / AUDIT_FILE)
    if not (isinstance(data, dict) and isinstance(data.get("verdict"), dict)
            and isinstance(data.get("attack"), dict)):  # fmt: skip
        raise ArtifactError(
            f"{folder / AUDIT_FILE} is not an audit written by `meddistill audit`; run the "
            "audit again"
        )
    return data


def audit_page(folder: Path, figures: bool) -> str:
    """The whole page of an audit folder."""
    audit = read_audit(folder)
    about = audit.get("set") or {}
    parts = [method_name(str(about["method"])) if about.get("method") else None,
             about.get("dataset"), f"IPC {about['ipc']}" if about.get("ipc") else None]  # fmt: skip
    title = " · ".join(["Privacy audit", *(str(p) for p in parts if p)])
    body = [
        section("verdict", "Verdict", [light(audit["verdict"])]),
        section("numbers", "Numbers", [memorisation_table(audit), attacks_table(audit)]),
    ]
    for part in (
        _pairs_section(folder),
        _roc_section(folder, audit, figures),
        _lira_section(audit),
        costs_section(RunFolder.read(folder)),
        config_section(RunFolder.read(folder)),
    ):
        if part:
            body.append(part)
    return page(title, f"audit folder {folder.name}", body)


def light(verdict: dict[str, Any]) -> str:
    """The traffic light: a coloured disc, the light's name, the rules that fired, the
    paragraph."""
    name = str(verdict.get("light", "?"))
    color = LIGHTS.get(name, "#6a737d")
    disc = (f'<span style="display:inline-block;width:26px;height:26px;border-radius:50%;'
            f'background:{color};vertical-align:middle;margin-right:10px"></span>')  # fmt: skip
    fired = ", ".join(map(str, verdict.get("rules_fired") or [])) or "none"
    return (
        f'<p class="light" id="light-{esc(name)}">{disc}<strong style="font-size:20px;'
        f'color:{color}">{esc(name.upper())}</strong> &nbsp;rules fired: {esc(fired)}</p>'
        f'<p id="verdict-paragraph">{esc(verdict.get("paragraph", ""))}</p>'
    )


def _ordered(audit: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The attacks in ATTACKS' order (audit.json keeps its keys sorted), others after."""
    attacks = {k: v for k, v in (audit.get("attack") or {}).items() if isinstance(v, dict)}
    rank = {k: i for i, k in enumerate(ATTACKS)}
    return sorted(attacks.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0]))


def _ci(value: Any, ci: Any, scale: float = 1.0, digits: int = 3) -> str:
    """'0.512 [0.480, 0.545]' ('-' when there is no value)."""
    if not isinstance(value, int | float):
        return "-"
    text = f"{scale * value:.{digits}f}"
    if isinstance(ci, list) and len(ci) == 2 and all(isinstance(v, int | float) for v in ci):
        text += f" [{scale * ci[0]:.{digits}f}, {scale * ci[1]:.{digits}f}]"
    return text


def memorisation_table(audit: dict[str, Any]) -> str:
    """Near copies per space, against what chance flags."""
    rows = []
    spaces = audit.get("memorisation") or {}
    for space in sorted(spaces, key=lambda s: (s != "pixel", s)):  # pixel first, as written
        rep = spaces[space]
        images = len(rep.get("images") or [])
        copies = rep.get("copies_8bit")
        rows.append([space, f"{rep.get('near_copies')} of {images}",
                     f"{images * rep.get('quantile', 0):.2g}", f"{rep.get('excess_p', 1):.3g}",
                     "-" if copies is None else copies, f"{rep.get('threshold', 0):.4g}",
                     f"{rep.get('median_ratio', 0):.3f}"])  # fmt: skip
    header = ["space", "near copies", "expected by chance", "binomial p", "8-bit copies",
              "threshold (L2)", "median d_train / d_held-out"]  # fmt: skip
    caption = ("Memorisation: a near copy is closer to a training image than all but "
               "audit.quantile of unseen (held-out) images are.")  # fmt: skip
    return html_table(header, rows, table_id="memorisation", caption=caption)


def attacks_table(audit: dict[str, Any]) -> str:
    """Each attack's AUC and TPR at 1 % and 0.1 % FPR with their 95 % intervals."""
    rows = []
    for name, att in _ordered(audit):
        tpr, ci = att.get("tpr_at_fpr") or {}, att.get("tpr_at_fpr_ci") or {}
        nets = (att.get("networks") or {}).get("count", "-")
        rows.append([ATTACKS.get(name, name), nets, _ci(att.get("auc"), att.get("auc_ci")),
                     _ci(tpr.get("0.01"), ci.get("0.01"), 100, 2),
                     _ci(tpr.get("0.001"), ci.get("0.001"), 100, 2),
                     att.get("members", "-"), att.get("nonmembers", "-")])  # fmt: skip
    header = ["attacked model", "networks", "AUC [95 % CI]", "TPR @ 1 % FPR (%) [CI]",
              "TPR @ 0.1 % FPR (%) [CI]", "members", "non-members"]  # fmt: skip
    caption = "Membership attacks: 0.5 AUC and a TPR equal to the FPR are guessing."
    return html_table(header, rows, table_id="attacks", caption=caption)


def _pairs_section(folder: Path) -> str | None:
    found = [(folder / name, f"closest (synthetic, train) pairs, {space}")
             for name, space in PAIRS if (folder / name).is_file()]  # fmt: skip
    if not found:
        return None
    grids = [grid_figure(folder, png, caption) for png, caption in found]
    return section("pairs", "Closest pairs", [block("grids", grids)])


def _roc_section(folder: Path, audit: dict[str, Any], figures: bool) -> str | None:
    curves = {ATTACKS.get(k, k): a["roc"] for k, a in _ordered(audit)
              if isinstance(a.get("roc"), dict)}  # fmt: skip
    if not curves or not figures:
        return None
    if not analyses.have_matplotlib():
        return section("roc", "Attack ROC curves", [note("no figure: matplotlib cannot be "
                                                         "imported here")])  # fmt: skip
    res = analyses.attack_roc(curves, folder / ANALYSIS_DIR / "attack_roc")
    caption = "Membership attacks: true- against false-positive rate, log-log axes"
    return section("roc", "Attack ROC curves", [block("figures", [figure(folder, res, caption)])])


def _lira_section(audit: dict[str, Any]) -> str | None:
    lira = audit.get("lira")
    if not isinstance(lira, dict):
        return None
    rows = [[s.get("shadow"), s.get("images"), f"{s.get('wall_s', 0):.1f}",
             s.get("targets_in"), "yes" if s.get("reused") else "no"]
            for s in lira.get("per_shadow") or []]  # fmt: skip
    variance = "one global variance" if lira.get("global_variance") else "a variance per image"
    caption = (f"LiRA: {lira.get('shadows')} shadow pipelines, {variance}, "
               f"{lira.get('online_targets')} targets scored online (IN and OUT shadows), "
               f"{lira.get('offline_targets')} offline; shadow overrides: "
               f"{', '.join(lira.get('overrides') or []) or 'none'}.")  # fmt: skip
    table = html_table(["shadow", "images", "wall time (s)", "targets IN", "reused"], rows,
                       table_id="shadows", caption=caption)  # fmt: skip
    return section("lira", "LiRA shadows", [table])


def audits_section(run: Path) -> str | None:
    """A distill run's audits (RUN/audit*/audit.json): light, paragraph, numbers, pairs."""
    folders = sorted(p.parent for p in run.glob(f"audit*/{AUDIT_FILE}"))
    parts = []
    for folder in folders:
        audit = read_audit(folder)
        link = f'<p>From <a href="{src_ref(run, folder / AUDIT_FILE)}">{esc(folder.name)}/' \
               f"{AUDIT_FILE}</a>.</p>"  # fmt: skip
        parts += [light(audit["verdict"]), attacks_table(audit), link]
        pairs = folder / PAIRS[0][0]
        if pairs.is_file():
            parts.append(grid_figure(run, pairs, "closest (synthetic, train) pairs"))
    return section("audit", "Privacy audit", parts) if parts else None
