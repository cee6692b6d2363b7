"""DATM: Guo et al., "Towards Lossless Dataset Distillation via Difficulty-Aligned Trajectory
Matching", ICLR 2024: the start's upper bound grows from growing_start to max_start by
growing_end, images initialised from real samples the experts classify correctly, learnable
soft labels initialised from expert logits (soft cross-entropy on their softmax), and the update
skipped when the loss exceeds a threshold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from meddistill.data.dataset import MedicalDataset
from meddistill.matching.config import SECTION, TrajectoryConfig
from meddistill.matching.engine import TrajectoryParts
from meddistill.matching.loop import DistillRun
from meddistill.matching.schedule import GrowingWindows
from meddistill.methods.trajectory import trajectory_method
from meddistill.utils import Options


@dataclass
class DATMConfig(TrajectoryConfig):
    """MTT's knobs plus the growing start bound, soft labels and the loss-skip threshold."""

    max_start: int = 20
    growing_start: int = 10  # the start's upper bound at iteration 0
    growing_end: int = 200  # the iteration by which it reaches max_start (0: at once)
    lr_img: float = 100.0
    init: Literal["real", "real_correct", "noise"] = "real_correct"
    soft_labels: bool = True  # learned (learn_labels), from the last expert epoch's logits
    loss_skip_threshold: float = 1.0  # 0: never skip

    def __post_init__(self) -> None:
        super().__post_init__()
        check = Options(SECTION, self)
        check.counts("growing_start")
        check.counts("growing_end", minimum=0, zero="0: max_start at once")
        check.at_least("loss_skip_threshold", zero="0: never skip")


def windows(cfg: DATMConfig) -> GrowingWindows:
    cfg.check_start_range()
    return GrowingWindows(
        cfg.syn_steps, cfg.expert_epochs, cfg.min_start, cfg.max_start,
        cfg.growing_start, cfg.growing_end,
    )  # fmt: skip


def parts(cfg: DATMConfig, dataset: MedicalDataset, run: DistillRun) -> TrajectoryParts:
    """Growing windows and the loss-skip gate (the soft labels: the shared label knobs)."""
    return TrajectoryParts(windows=windows(cfg), skip_above=cfg.loss_skip_threshold)


METHOD = trajectory_method(
    "datm", "Guo et al., ICLR 2024", DATMConfig, parts, experts="gsam", windows=windows
)
