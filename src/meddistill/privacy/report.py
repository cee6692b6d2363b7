"""The audit's result as one object: what `meddistill audit` prints and audit.json holds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from meddistill import __version__
from meddistill.privacy.attack import AttackStats
from meddistill.privacy.memorisation import SpaceReport
from meddistill.privacy.verdict import FPR, Verdict


@dataclass
class AuditReport:
    """Memorisation per space, the attack on the set and its references, and the verdict.

    `attacks`: "synthetic" (networks trained on the set), and where asked "full" and "random"
    (the same members and non-members against networks trained on the full train split and on
    a random real subset as large as the set), and "random_own" (the random subset's networks
    with the subset's own images as members: what sharing real images would leak), and
    "lira" when shadows ran (LiRA on the set's networks; `lira` holds its facts: shadows,
    variance, wall time per shadow).
    `networks`: how each attack's networks were trained.
    """

    set_info: dict[str, Any]
    heldout: str
    memorisation: dict[str, SpaceReport]
    attacks: dict[str, AttackStats]
    networks: dict[str, dict[str, Any]]
    verdict: Verdict
    config: dict[str, Any] = field(default_factory=dict)
    lira: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        lira = {"lira": self.lira} if self.lira else {}
        return {
            "verdict": self.verdict.to_dict(),
            "set": self.set_info,
            "heldout_split": self.heldout,
            "memorisation": {k: v.to_dict() for k, v in self.memorisation.items()},
            "attack": {
                k: {**v.to_dict(), "networks": self.networks.get(k, {})}
                for k, v in self.attacks.items()
            },
            **lira,
            "config": self.config,
            "meddistill_version": __version__,
        }

    def summary(self) -> str:
        """The light and paragraph, then one line per space and per attack."""
        lines = [f"verdict: {self.verdict.light.upper()}", self.verdict.paragraph, ""]
        for space, rep in self.memorisation.items():
            lines.append(
                f"near copies ({space}): {rep.count}/{rep.flagged.size} "
                f"(threshold {rep.threshold:.4g}, median d_tr/d_ho {_median(rep):.3f})"
            )
        for name, att in self.attacks.items():
            lo, hi = att.auc_ci
            t_lo, t_hi = att.tpr_ci[FPR]
            lines.append(
                f"attack ({name}): AUC {att.auc:.3f} [{lo:.3f}, {hi:.3f}], TPR@{100 * FPR:g}%FPR "
                f"{100 * att.tpr[FPR]:.2f} % [{100 * t_lo:.2f}, {100 * t_hi:.2f}] "
                f"({att.members} members, {att.nonmembers} non-members)"
            )
        if self.lira:
            walls = [s["wall_s"] for s in self.lira.get("per_shadow", [])]
            lines.append(
                f"LiRA: {self.lira['shadows']} shadow pipelines ({sum(walls):.1f} s), "
                f"{'one global' if self.lira['global_variance'] else 'per-image'} variance, "
                f"{self.lira['online_targets']} targets scored online"
            )
        return "\n".join(lines)


def _median(rep: SpaceReport) -> float:
    return float(np.median(rep.ratio))
