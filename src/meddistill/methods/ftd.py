"""FTD: Du et al., "Minimizing the Accumulated Trajectory Error to Improve Dataset
Distillation", CVPR 2023: flat (GSAM) experts plus an exponential moving average of the
synthetic images (decay 0.9995); the average is what gets evaluated and shared."""

from __future__ import annotations

from dataclasses import dataclass

from meddistill.data.dataset import MedicalDataset
from meddistill.matching.config import TrajectoryConfig, check_unit_interval
from meddistill.matching.engine import TrajectoryParts
from meddistill.matching.hooks import ImageEMA
from meddistill.matching.loop import DistillRun
from meddistill.methods.trajectory import random_windows, trajectory_method


@dataclass
class FTDConfig(TrajectoryConfig):
    """MTT's knobs plus the decay of the image average."""

    expert_epochs: int = 3
    max_start: int = 25
    ema_decay: float = 0.9995

    def __post_init__(self) -> None:
        super().__post_init__()
        check_unit_interval("ema_decay", self.ema_decay)


def parts(cfg: FTDConfig, dataset: MedicalDataset, run: DistillRun) -> TrajectoryParts:
    """MTT's parts plus the image average."""
    hooks = [ImageEMA(cfg.ema_decay)] if cfg.ema_decay > 0 else []
    return TrajectoryParts(windows=random_windows(cfg), hooks=hooks)


METHOD = trajectory_method("ftd", "Du et al., CVPR 2023", FTDConfig, parts, experts="gsam")
