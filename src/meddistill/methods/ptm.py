"""PTM: Yu, Liu, Chen, "Progressive trajectory matching for medical dataset distillation"
(paper 001; no public code, everything from the paper).

As the parts below assemble it:
  progressive schedule (section 3.2): every round starts at theta_0, the end epoch grows
  from 1 to T, the student takes more steps as it grows           -> ProgressiveWindows
  beta_1 * L_match, normalised by ||theta_t - theta_0||^2 (Eq. 3)  -> ParameterMatch
  beta_2 * overlap between the foundation and complement halves
  of each class (Eq. 4)                                            -> OverlapMitigation
  retraining points (section 3.3): the complement subset is reset
  to an earlier snapshot k times                                   -> RetrainingPoints
Unstated in the paper and so set here: the kernel bandwidth (median same-class distance,
recomputed every iteration), 10 student steps per expert epoch, linear growth of T, k = 2,
beta_2 = 1e-2 (the overlap sum over all pairs is large next to a match loss of order 1).
`schedule: random` gives the "no progressive matching" row of the ablation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from meddistill.data.dataset import MedicalDataset
from meddistill.matching.config import SECTION, TrajectoryConfig
from meddistill.matching.engine import TrajectoryParts, class_layout, foundation_mask
from meddistill.matching.hooks import Hook, RetrainingPoints
from meddistill.matching.loop import DistillRun
from meddistill.matching.schedule import ProgressiveWindows, WindowSchedule
from meddistill.matching.terms import ImageTerm, OverlapMitigation, ParameterMatch
from meddistill.methods.trajectory import random_windows, trajectory_method
from meddistill.utils import Options


@dataclass
class PTMConfig(TrajectoryConfig):
    """The shared knobs plus PTM's schedule, loss weights and retraining points."""

    schedule: Literal["progressive", "random"] = "progressive"
    progressive_end: int = 0  # T (0: the buffer's last epoch)
    progressive_steps_per_epoch: float = 10.0  # 0: syn_steps / expert_epochs
    progressive_max_steps: int = 0  # cap on student steps of a round (0: none)
    progressive_growth: Literal["linear", "sqrt"] = "linear"
    lr_img: float = 100.0
    match_weight: float = 1.0  # beta_1
    overlap: bool = True
    overlap_weight: float = 1e-2  # beta_2
    overlap_sigma: float = 0.0  # 0: median same-class distance, every iteration
    retraining_points: int = 2  # k

    def __post_init__(self) -> None:
        super().__post_init__()
        check = Options(SECTION, self)
        check.counts("progressive_end", minimum=0, zero="0: the buffer's last epoch")
        check.at_least("progressive_steps_per_epoch", zero="0: syn_steps / expert_epochs")
        check.counts("progressive_max_steps", minimum=0, zero="0: no cap")
        check.positive("match_weight")
        check.at_least("overlap_weight")
        check.at_least("overlap_sigma", zero="0: median same-class distance")
        check.counts("retraining_points", minimum=0, zero="0: none")
        if self.iterations and self.retraining_points >= self.iterations:  # 0: unmatched
            check.fail(
                "retraining_points", f"below match.iterations={self.iterations}",
                advice="raise iterations or lower retraining_points",
            )  # fmt: skip


def windows(cfg: PTMConfig) -> WindowSchedule:
    if cfg.schedule == "random":
        return random_windows(cfg)
    per_epoch = cfg.progressive_steps_per_epoch or cfg.syn_steps / cfg.expert_epochs
    return ProgressiveWindows(
        cfg.iterations, per_epoch, cfg.progressive_end, cfg.progressive_max_steps,
        cfg.progressive_growth,
    )  # fmt: skip


def parts(cfg: PTMConfig, dataset: MedicalDataset, run: DistillRun) -> TrajectoryParts:
    """Progressive windows, beta_1 * match, beta_2 * overlap, retraining points (IPC >= 2:
    at IPC 1 a class has no complement subset, so both are off, said once)."""
    image_terms: list[ImageTerm] = []
    hooks: list[Hook] = []
    if cfg.overlap and cfg.ipc < 2:
        run.warn("overlap mitigation does nothing at IPC 1 (no complement subset); it is off")
    elif cfg.overlap:
        image_terms.append(OverlapMitigation(cfg.overlap_weight, cfg.overlap_sigma))
    if cfg.retraining_points and cfg.ipc < 2:
        run.warn("retraining points do nothing at IPC 1 (no complement subset); they are off")
    elif cfg.retraining_points:
        layout = class_layout(dataset.num_classes, cfg.ipc, dataset.train.images.device)
        complement = ~foundation_mask(layout, dataset.num_classes)
        hooks.append(RetrainingPoints(cfg.iterations, cfg.retraining_points, complement))
    return TrajectoryParts(
        windows=windows(cfg), terms=[ParameterMatch(cfg.match_weight)],
        image_terms=image_terms, hooks=hooks,
    )  # fmt: skip


METHOD = trajectory_method(
    "ptm", "Yu, Liu, Chen, PTM (paper 001)", PTMConfig, parts, experts="gsam", windows=windows
)
