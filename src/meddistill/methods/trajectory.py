"""What every trajectory method shares: turning its config and parts into an engine run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from meddistill.data.dataset import MedicalDataset
from meddistill.data.synthetic import SyntheticSet
from meddistill.errors import ConfigError
from meddistill.experts.store import TrajectoryStore
from meddistill.matching.config import TrajectoryConfig
from meddistill.matching.engine import Distiller, TrajectoryParts
from meddistill.matching.loop import DistillRun
from meddistill.matching.schedule import RandomWindows, WindowSchedule
from meddistill.methods.base import ExpertOptimizer, MethodEntry
from meddistill.models import ModelSpec

PartsBuilder = Callable[[Any, MedicalDataset, DistillRun], TrajectoryParts]


def random_windows(cfg: TrajectoryConfig) -> RandomWindows:
    """MTT's window schedule from the shared knobs (start range checked)."""
    cfg.check_start_range()
    return RandomWindows(cfg.syn_steps, cfg.expert_epochs, cfg.min_start, cfg.max_start)


def require_experts(experts: TrajectoryStore | None, method: str) -> TrajectoryStore:
    """The expert buffer a trajectory method matches; a clear error when none was given."""
    if experts is None:
        raise ConfigError(f"{method} matches expert trajectories; give it an expert buffer")
    return experts


def run_engine(
    cfg: TrajectoryConfig,
    parts: TrajectoryParts,
    dataset: MedicalDataset,
    experts: TrajectoryStore | None,
    model: ModelSpec,
    device: torch.device,
    run: DistillRun,
) -> SyntheticSet:
    """One engine run of `parts` on the experts' trajectories."""
    store = require_experts(experts, run.method)
    return Distiller(cfg, parts, dataset, store, model, device=device, run=run).run_all()


def trajectory_method(
    name: str,
    paper: str,
    config_type: type,
    parts: PartsBuilder,
    experts: ExpertOptimizer = "sgd",
    windows: Callable[[Any], WindowSchedule] = random_windows,
) -> MethodEntry:
    """A registry entry whose distill assembles `parts(cfg, dataset, run)` for the engine."""

    def distill(
        dataset: MedicalDataset,
        cfg: Any,
        *,
        experts: TrajectoryStore | None,
        model: ModelSpec,
        device: torch.device,
        run: DistillRun,
    ) -> SyntheticSet:
        return run_engine(cfg, parts(cfg, dataset, run), dataset, experts, model, device, run)

    return MethodEntry(
        name, paper, config_type, distill, experts=experts, kind="trajectory", windows_of=windows
    )
