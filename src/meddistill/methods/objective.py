"""What every surrogate-objective method (DC, DSA, DM, IDM, CAFE) shares: its config and
objective turned into a run of the objective loop (meddistill.matching.objective)."""

from __future__ import annotations

from typing import Any

import torch

from meddistill.data.dataset import MedicalDataset
from meddistill.data.synthetic import SyntheticSet
from meddistill.experts.store import TrajectoryStore
from meddistill.matching.loop import DistillRun
from meddistill.matching.objective import ObjectiveBuilder, ObjectiveDistiller
from meddistill.methods.base import MethodEntry
from meddistill.models import ModelSpec


def objective_method(
    name: str, paper: str, config_type: type, build: ObjectiveBuilder
) -> MethodEntry:
    """A registry entry that runs `build(cfg, ctx)`'s objective in the objective loop."""

    def distill(
        dataset: MedicalDataset,
        cfg: Any,
        *,
        experts: TrajectoryStore | None,
        model: ModelSpec,
        device: torch.device,
        run: DistillRun,
    ) -> SyntheticSet:
        distiller = ObjectiveDistiller(cfg, dataset, model, build, device=device, run=run)
        return distiller.run_all()

    return MethodEntry(name, paper, config_type, distill, experts=None, kind="objective")
