"""The Method protocol: what every distillation method (trajectory, objective, coreset) is.

A method is one object that declares its typed config (only its paper's knobs, defaults as
published), whether it needs expert trajectories and trained with which optimiser, and one
`distill` call. The CLI, bench and the Python API dispatch through the registry
(meddistill.methods.registry) and never branch on a method's name or kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from meddistill.config import from_dict
from meddistill.data.dataset import MedicalDataset
from meddistill.data.synthetic import SyntheticSet
from meddistill.experts.store import TrajectoryStore
from meddistill.matching.loop import DistillRun
from meddistill.models import ModelSpec

ExpertOptimizer = Literal["sgd", "gsam"]


class Method(Protocol):
    """One distillation method, as the registry holds it."""

    name: str
    paper: str
    config_type: type
    experts: ExpertOptimizer | None  # None: no expert trajectories

    def make_config(self, values: dict[str, Any] | None = None) -> Any:
        """The method's config: its published defaults overlaid with `values`, validated."""
        ...

    def distill(
        self,
        dataset: MedicalDataset,
        config: Any,
        *,
        experts: TrajectoryStore | None,
        model: ModelSpec,
        device: torch.device,
        run: DistillRun,
    ) -> SyntheticSet: ...


DistillFn = Callable[..., SyntheticSet]


@dataclass(frozen=True)
class MethodEntry:
    """A Method made of a config type and a distill function (what each method file exports)."""

    name: str
    paper: str
    config_type: type
    distill_fn: DistillFn
    experts: ExpertOptimizer | None = None
    kind: Literal["trajectory", "objective", "coreset"] = "trajectory"
    # Trajectory methods: the window schedule a config gives, checked against a buffer's
    # length before any work starts.
    windows_of: Callable[[Any], Any] | None = None
    # False: the method selects real images (coresets): no preset, no learned step size.
    synthesises: bool = True
    # What a trajectory method reads of the real training images besides its initialisation
    # (match.init), said as "<method> <does what>"; "" for none. A differentially private
    # distillation (a DP buffer) refuses a method that reads them (app/private.py).
    reads_real: str = ""

    def make_config(self, values: dict[str, Any] | None = None) -> Any:
        return from_dict(self.config_type, values or {}, "match")

    def distill(
        self,
        dataset: MedicalDataset,
        config: Any,
        *,
        experts: TrajectoryStore | None,
        model: ModelSpec,
        device: torch.device,
        run: DistillRun,
    ) -> SyntheticSet:
        if not isinstance(config, self.config_type):
            raise TypeError(f"{self.name} takes a {self.config_type.__name__}")
        return self.distill_fn(
            dataset, config, experts=experts, model=model, device=device, run=run
        )
