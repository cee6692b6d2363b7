"""TESLA: Cui et al., "Scaling Up Dataset Distillation to ImageNet-1K with Constant Memory",
ICML 2023: MTT with soft labels from an expert's logits (fixed, not learned) and
constant-memory gradients. The reference drops cross-step terms; here the adjoint mode gives
the exact MTT gradient at constant memory instead."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from meddistill.data.dataset import MedicalDataset
from meddistill.matching.config import TrajectoryConfig
from meddistill.matching.engine import TrajectoryParts
from meddistill.matching.labels import ExpertSoftLabels, HardLabels
from meddistill.matching.loop import DistillRun
from meddistill.methods.datm import check_label_options
from meddistill.methods.trajectory import random_windows, trajectory_method


@dataclass
class TESLAConfig(TrajectoryConfig):
    """MTT's knobs plus the expert soft labels (fixed unless learn_labels)."""

    expert_epochs: int = 3
    max_start: int = 25
    gradient_mode: Literal["adjoint", "unroll"] = "adjoint"
    soft_labels: bool = True
    learn_labels: bool = False
    lr_y: float = 2.0
    momentum_y: float = 0.9
    label_expert_epoch: int = -1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_label_options(self)


def parts(cfg: TESLAConfig, dataset: MedicalDataset, run: DistillRun) -> TrajectoryParts:
    """MTT's parts with the expert's soft labels."""
    labels = (
        ExpertSoftLabels(cfg.learn_labels, cfg.lr_y, cfg.momentum_y, cfg.label_expert_epoch)
        if cfg.soft_labels
        else HardLabels()
    )
    return TrajectoryParts(windows=random_windows(cfg), labels=labels)


METHOD = trajectory_method("tesla", "Cui et al., ICML 2023", TESLAConfig, parts)
