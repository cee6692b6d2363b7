"""MTT: Cazenavette et al., "Dataset Distillation by Matching Training Trajectories", CVPR 2022.

Random start in [min_start, max_start), N student steps, the normalised parameter loss
(Eq. 2 of HoP-TM), a learnable step size. Defaults: the reference script's generic defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from meddistill.data.dataset import MedicalDataset
from meddistill.matching.config import TrajectoryConfig
from meddistill.matching.engine import TrajectoryParts
from meddistill.matching.loop import DistillRun
from meddistill.methods.trajectory import random_windows, trajectory_method


@dataclass
class MTTConfig(TrajectoryConfig):
    """MTT has no knobs beyond the shared ones; its defaults are the reference script's."""

    syn_steps: int = 20
    expert_epochs: int = 3
    max_start: int = 25


def parts(cfg: MTTConfig, dataset: MedicalDataset, run: DistillRun) -> TrajectoryParts:
    """A random window, the last student step, the normalised parameter loss."""
    return TrajectoryParts(windows=random_windows(cfg))


METHOD = trajectory_method("mtt", "Cazenavette et al., CVPR 2022", MTTConfig, parts)
