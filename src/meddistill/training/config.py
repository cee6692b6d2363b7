"""How one network is trained on tensors: the settings shared by experts and evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from meddistill.utils import Options


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
        check = Options("train", self)
        check.counts("epochs", "batch_size")
        check.positive("lr")  # a learned step size that went negative cannot train
        check.fraction("momentum")
        check.at_least("weight_decay")
        check.choice("lr_schedule", ("step_half", "none"))
        check.choice("optimizer", ("sgd", "gsam"))
        check.positive("gsam_rho")
        check.at_least("gsam_alpha")
        check.strategy("dsa_strategy")

    def lr_at(self, epoch: int) -> float:
        """The learning rate used during 0-based `epoch`."""
        if self.lr_schedule == "step_half" and epoch >= max(1, self.epochs // 2):
            return self.lr * 0.1
        return self.lr
