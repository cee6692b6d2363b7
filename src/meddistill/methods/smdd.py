"""SMDD: Li, Togo, Ogawa, Haseyama, "Dataset Distillation for Medical Dataset Sharing"
(arXiv 2209.14603, 2022), MTT with the parameter pruning of their "Dataset Distillation Using
Parameter Pruning" (arXiv 2209.14609; IEICE Trans. Fundamentals E107-A, 2024).

What the papers state: MTT's matching, except that the parameters that are difficult to match
are pruned from the match loss during distillation, which makes the synthetic set more robust.
No public code exists, and the exact criterion could not be checked against the papers' text
here, so it is an explicit, documented choice:

- every iteration, the scalar parameter elements (all layers concatenated, as HoP-TM's l_i)
  are ranked by how hard they are to match, and the `ratio` fraction of the hardest is removed
  from both sums of the normalised loss (numerator and denominator, exactly as
  matching.losses.masked_param_loss treats HoP-TM's mask);
- "hard" is, by default (`prune_by="mismatch"`), the element's end-of-unroll mismatch
  l_i = (w_N,i - theta_{t+M},i)^2, the quantity the match loss sums; `prune_by="displacement"`
  ranks by the expert's own move (theta_{t+M},i - theta_t,i)^2 instead (the elements the expert
  moves most, known before the unroll);
- the mask is recomputed every iteration (not cumulative); elements that cannot move (the
  engine's `exclude`, e.g. a conv bias before instance norm) are never counted.
The default ratio (0.1) is ours: the papers do not give one that could be verified here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from meddistill.data.dataset import MedicalDataset
from meddistill.matching.config import check_unit_interval
from meddistill.matching.engine import TrajectoryParts
from meddistill.matching.loop import DistillRun
from meddistill.matching.terms import HardestPruned
from meddistill.methods.mtt import MTTConfig
from meddistill.methods.trajectory import random_windows, trajectory_method


@dataclass
class SMDDConfig(MTTConfig):
    """MTT's knobs plus the pruned fraction and its criterion."""

    prune_ratio: float = 0.1
    prune_by: Literal["mismatch", "displacement"] = "mismatch"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_unit_interval("prune_ratio", self.prune_ratio)


def parts(cfg: SMDDConfig, dataset: MedicalDataset, run: DistillRun) -> TrajectoryParts:
    """MTT's parts with the hardest elements pruned from the match loss."""
    masks = [HardestPruned(cfg.prune_ratio, cfg.prune_by)] if cfg.prune_ratio > 0 else []
    return TrajectoryParts(windows=random_windows(cfg), masks=masks)


METHOD = trajectory_method("smdd", "Li, Togo, Ogawa, Haseyama, 2022", SMDDConfig, parts)
