"""How one network is trained on tensors: the settings shared by experts and evaluation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from meddistill.errors import ConfigError


@dataclass
class TrainConfig:
    """Settings of `train_network`.

    `lr_schedule="step_half"` multiplies the learning rate by 0.1 once, from 0-based epoch
    `max(1, epochs // 2)` on: the reference evaluation protocol (1000 epochs, x0.1 at 500; the
    reference scripts loop over epochs+1 epochs and decay after epoch epochs//2+1, a two-epoch
    difference we do not copy). `"none"` keeps it constant, as the MTT experts do. `optimizer="gsam"` wraps the same SGD (lr, momentum,
    weight decay) in GSAM, the "flat" experts of FTD / DATM / HoP-TM.
    """

    epochs: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    lr_schedule: Literal["step_half", "none"] = "step_half"
    dsa: bool = True
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    optimizer: Literal["sgd", "gsam"] = "sgd"
    gsam_rho: float = 0.01
    gsam_alpha: float = 0.3
    gsam_adaptive: bool = True

    def __post_init__(self) -> None:
        if int(self.epochs) != self.epochs or self.epochs < 1:
            raise ConfigError(f"train.epochs must be a positive integer, got {self.epochs!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(
                f"train.lr must be a positive number, got {self.lr!r}; "
                "a learned step size that went negative cannot be used to train, pass an explicit lr"
            )
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"train.momentum must be in [0, 1), got {self.momentum!r}")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay must be >= 0, got {self.weight_decay!r}")
        if int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise ConfigError(
                f"train.batch_size must be a positive integer, got {self.batch_size!r}"
            )
        if self.lr_schedule not in ("step_half", "none"):
            raise ConfigError(
                f"train.lr_schedule={self.lr_schedule!r} is not one of 'step_half', 'none'"
            )
        if self.optimizer not in ("sgd", "gsam"):
            raise ConfigError(f"train.optimizer={self.optimizer!r} is not one of 'sgd', 'gsam'")
        if self.optimizer == "gsam":
            if not self.gsam_rho > 0:
                raise ConfigError(f"train.gsam_rho must be > 0, got {self.gsam_rho!r}")
            if self.gsam_alpha < 0:
                raise ConfigError(f"train.gsam_alpha must be >= 0, got {self.gsam_alpha!r}")

    def lr_at(self, epoch: int) -> float:
        """The learning rate used during 0-based `epoch`."""
        if self.lr_schedule == "step_half" and epoch >= max(1, self.epochs // 2):
            return self.lr * 0.1
        return self.lr
