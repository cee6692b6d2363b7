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
from meddistill.matching.loop import DistillRun
from meddistill.methods.trajectory import random_windows, trajectory_method


@dataclass
class TESLAConfig(TrajectoryConfig):
    """MTT's knobs plus the expert soft labels (fixed unless learn_labels)."""

    expert_epochs: int = 3
    max_start: int = 25
    gradient_mode: Literal["adjoint", "unroll"] = "adjoint"
    soft_labels: bool = True
    learn_labels: bool = False  # TESLA's labels stay the expert's


def parts(cfg: TESLAConfig, dataset: MedicalDataset, run: DistillRun) -> TrajectoryParts:
    """MTT's parts (the fixed soft labels: the shared label knobs, TESLA's defaults)."""
    return TrajectoryParts(windows=random_windows(cfg))


METHOD = trajectory_method("tesla", "Cui et al., ICML 2023", TESLAConfig, parts)
