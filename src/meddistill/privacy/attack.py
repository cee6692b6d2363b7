"""The threshold membership attack's maths: scores in; ROC AUC and TPR at low FPR out, each
with a bootstrap 95 % interval.

A score is "higher = more likely a member" (the loss attack passes minus the loss). TPR at
FPR f is the largest true-positive rate of any threshold whose false-positive rate is at most
f (Carlini et al. 2022, "Membership inference attacks from first principles"): what matters is
whether the attack is right about the few people it names, which the AUC averages away.
The intervals resample members and non-members separately (each with replacement, its own
size) from an explicit generator, and take the 2.5 and 97.5 percentiles. The ROC curve itself
(its corners: thinning drops only points on straight segments) is kept too, so a report can
draw it as Carlini et al. do, TPR against FPR on log-log axes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import auc, roc_curve

from meddistill.errors import ConfigError

FPRS = (0.01, 0.001)  # the false-positive rates whose TPR is reported


@dataclass
class AttackStats:
    """One attack's numbers: AUC and TPR at each FPR, with their 95 % intervals."""

    auc: float
    auc_ci: tuple[float, float]
    tpr: dict[float, float]
    tpr_ci: dict[float, tuple[float, float]]
    members: int
    nonmembers: int
    bootstrap: int
    curve: dict[str, list[float]] | None = None  # {"fpr": [...], "tpr": [...]}

    def to_dict(self) -> dict[str, Any]:
        roc = {} if self.curve is None else {"roc": self.curve}
        return {
            "auc": self.auc,
            "auc_ci": list(self.auc_ci),
            "tpr_at_fpr": {f"{f:g}": self.tpr[f] for f in self.tpr},
            "tpr_at_fpr_ci": {f"{f:g}": list(self.tpr_ci[f]) for f in self.tpr_ci},
            "members": self.members,
            "nonmembers": self.nonmembers,
            "bootstrap": self.bootstrap,
            "ci": "95 % percentile bootstrap, members and non-members resampled separately",
            **roc,
        }


def _scores(values: Any, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ConfigError(f"the attack needs at least one {what} score, got none")
    if not np.isfinite(arr).all():
        raise ConfigError(f"the attack's {what} scores hold NaN or inf values")
    return arr


def roc_numbers(
    members: np.ndarray, nonmembers: np.ndarray, fprs: Sequence[float] = FPRS
) -> tuple[float, list[float]]:
    """(AUC, [TPR at each FPR]) of scores where members should score higher. Every point of
    the ROC curve is kept (drop_intermediate=False), so no threshold is lost to thinning."""
    truth = np.concatenate([np.ones(members.size), np.zeros(nonmembers.size)])
    fpr, tpr, _ = roc_curve(truth, np.concatenate([members, nonmembers]), drop_intermediate=False)
    return float(auc(fpr, tpr)), [float(tpr[fpr <= f].max()) for f in fprs]


def roc_points(members: np.ndarray, nonmembers: np.ndarray) -> dict[str, list[float]]:
    """The ROC curve's corners (FPR, TPR), rounded to 6 decimals, for drawing."""
    truth = np.concatenate([np.ones(members.size), np.zeros(nonmembers.size)])
    fpr, tpr, _ = roc_curve(truth, np.concatenate([members, nonmembers]))
    return {"fpr": np.round(fpr, 6).tolist(), "tpr": np.round(tpr, 6).tolist()}


def attack_stats(
    members: Any,
    nonmembers: Any,
    *,
    generator: torch.Generator,
    bootstrap: int = 1000,
    fprs: Sequence[float] = FPRS,
) -> AttackStats:
    """AUC and TPR at `fprs` of member vs non-member scores, with percentile bootstrap 95 %
    intervals from `bootstrap` resamples drawn with `generator`."""
    m, n = _scores(members, "member"), _scores(nonmembers, "non-member")
    if bootstrap < 1:
        raise ConfigError(f"bootstrap must be >= 1 resample, got {bootstrap}")
    point_auc, point_tpr = roc_numbers(m, n, fprs)
    draws = np.empty((bootstrap, 1 + len(fprs)))
    for b in range(bootstrap):
        i = torch.randint(m.size, (m.size,), generator=generator).numpy()
        j = torch.randint(n.size, (n.size,), generator=generator).numpy()
        b_auc, b_tpr = roc_numbers(m[i], n[j], fprs)
        draws[b] = [b_auc, *b_tpr]
    low, high = np.percentile(draws, [2.5, 97.5], axis=0)
    return AttackStats(
        auc=point_auc,
        auc_ci=(float(low[0]), float(high[0])),
        tpr=dict(zip(fprs, point_tpr, strict=True)),
        tpr_ci={f: (float(low[k + 1]), float(high[k + 1])) for k, f in enumerate(fprs)},
        members=int(m.size),
        nonmembers=int(n.size),
        bootstrap=int(bootstrap),
        curve=roc_points(m, n),
    )
