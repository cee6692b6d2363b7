"""ATT: Liu et al., "Dataset Distillation by Automatic Training Trajectories", ECCV 2024: the
L1 distance to the target is computed for every student step (no gradient) and the loss
matches at the closest step instead of the last; an average of the images is kept."""

from __future__ import annotations

from dataclasses import dataclass

from meddistill.data.dataset import MedicalDataset
from meddistill.matching.config import TrajectoryConfig, check_unit_interval
from meddistill.matching.engine import TrajectoryParts
from meddistill.matching.hooks import ImageEMA
from meddistill.matching.loop import DistillRun
from meddistill.matching.terms import closest_step, last_step
from meddistill.methods.trajectory import random_windows, trajectory_method


@dataclass
class ATTConfig(TrajectoryConfig):
    """MTT's knobs plus the closest-step match and the image average."""

    max_start: int = 20
    argmin_step: bool = True
    ema_decay: float = 0.999

    def __post_init__(self) -> None:
        super().__post_init__()
        check_unit_interval("ema_decay", self.ema_decay)


def parts(cfg: ATTConfig, dataset: MedicalDataset, run: DistillRun) -> TrajectoryParts:
    """MTT's parts matched at the closest student step, plus the image average."""
    return TrajectoryParts(
        windows=random_windows(cfg),
        step_choice=closest_step if cfg.argmin_step else last_step,
        hooks=[ImageEMA(cfg.ema_decay)] if cfg.ema_decay > 0 else [],
    )


METHOD = trajectory_method("att", "Liu et al., ECCV 2024", ATTConfig, parts)
