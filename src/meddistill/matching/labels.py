"""Label modes of a trajectory distillation: what the synthetic images are labelled with.

- HardLabels (the default of MTT, HoP-TM, PTM, ...): class indices, never learned.
- ExpertSoftLabels (the default of DATM and TESLA; `soft_labels: true` on any trajectory method): logits of an expert network at epoch `expert_epoch` (-1:
  the last) on the initial images; learned with SGD + momentum when `learn` (DATM), fixed
  otherwise (TESLA). The shared set holds their softmax.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Logits = Callable[[torch.Tensor, int], torch.Tensor]  # (images, expert epoch) -> logits


@dataclass(frozen=True)
class HardLabels:
    soft: bool = False
    expert_epoch: int = -1

    def initial(self, hard: torch.Tensor, images: torch.Tensor, logits: Logits) -> torch.Tensor:
        return hard.clone()

    def update(self, state: object, grad: torch.Tensor | None) -> None:
        return None

    def shareable(self, labels: torch.Tensor) -> torch.Tensor:
        return labels


@dataclass(frozen=True)
class ExpertSoftLabels:
    learn: bool = True
    lr: float = 2.0
    momentum: float = 0.9
    expert_epoch: int = -1
    soft: bool = True

    def initial(self, hard: torch.Tensor, images: torch.Tensor, logits: Logits) -> torch.Tensor:
        return logits(images, self.expert_epoch)

    def update(self, state: object, grad: torch.Tensor | None) -> None:
        """SGD with momentum on the logits (DATM); nothing when fixed (TESLA)."""
        if not self.learn or grad is None:
            return
        state.momentum_labels.mul_(self.momentum).add_(grad)  # type: ignore[attr-defined]
        state.labels.sub_(self.lr * state.momentum_labels)  # type: ignore[attr-defined]

    def shareable(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.softmax(labels, dim=1)


LabelMode = HardLabels | ExpertSoftLabels


def label_mode(cfg: object) -> LabelMode:
    """The label mode a trajectory config names (its soft_labels, learn_labels, lr_y,
    momentum_y and label_expert_epoch knobs)."""
    epoch = cfg.label_expert_epoch  # type: ignore[attr-defined]
    if cfg.soft_labels:  # type: ignore[attr-defined]
        return ExpertSoftLabels(cfg.learn_labels, cfg.lr_y, cfg.momentum_y, epoch)  # type: ignore[attr-defined]
    return HardLabels(expert_epoch=epoch)
