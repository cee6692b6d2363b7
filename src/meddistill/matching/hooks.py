"""What runs after an image update: FTD/ATT's moving average of the images and PTM's
retraining points (section 3.3). Each hook sees the state after iteration `it` was applied."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from meddistill.matching.parameterizations import PER_IMAGE
from meddistill.matching.schedule import retraining_schedule
from meddistill.matching.state import DistillState


class Hook(Protocol):
    def start(self, state: DistillState) -> None: ...

    def after_update(self, state: DistillState, it: int, log: Callable[[str], None]) -> None: ...


def learned_per_image(state: DistillState) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-image tensor the optimiser moves and its momentum: the images, or their codes
    (dct, latent) when the engine encodes them (the images are then rendered from these)."""
    if PER_IMAGE in state.params:
        return state.params[PER_IMAGE], state.momentum_params[PER_IMAGE]
    return state.images, state.momentum_images


@dataclass(frozen=True)
class ImageEMA:
    """FTD / ATT: an exponential moving average of the images, which is what gets shared (of
    their codes under a dct or latent parameterisation; the shared images are its render)."""

    decay: float

    def start(self, state: DistillState) -> None:
        state.ema = learned_per_image(state)[0].clone()

    def after_update(self, state: DistillState, it: int, log: Callable[[str], None]) -> None:
        with torch.no_grad():
            state.ema.mul_(self.decay).add_(learned_per_image(state)[0], alpha=1.0 - self.decay)


class RetrainingPoints:
    """PTM section 3.3: at k points the complement subset S^c is reset to the snapshot taken
    half-way to the previous point (its momentum cleared); under a dct or latent
    parameterisation the snapshot and the reset are of the images' codes."""

    def __init__(self, iterations: int, k: int, complement: torch.Tensor) -> None:
        self.pairs = retraining_schedule(iterations, k)
        self.complement = complement

    def start(self, state: DistillState) -> None:
        return None

    def after_update(self, state: DistillState, it: int, log: Callable[[str], None]) -> None:
        done = it + 1
        learned, momentum = learned_per_image(state)
        for snap_it, retrain_it in self.pairs:
            if done == snap_it:
                state.snapshots[retrain_it] = learned[self.complement].detach().clone()
            if done == retrain_it and retrain_it in state.snapshots:
                with torch.no_grad():
                    learned[self.complement] = state.snapshots.pop(retrain_it)
                    momentum[self.complement] = 0.0
                log(
                    f"retraining point at iteration {done}: complement subset reset to its "
                    f"snapshot of iteration {snap_it}"
                )
