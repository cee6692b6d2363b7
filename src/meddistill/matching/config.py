"""The knobs every trajectory-matching method shares; each method extends them with its own.

A method's config (meddistill.methods.<name>) subclasses TrajectoryConfig, adds only its
paper's knobs and sets its published defaults. Names follow the reference scripts (syn_steps,
expert_epochs, min_start/max_start, lr_img, lr_lr, batch_syn) so published tables map directly.
The seed is not a knob of the method: it is the run's (one `seed` key per job).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from meddistill.errors import ConfigError
from meddistill.training.evaluate import EvalConfig


@dataclass
class TrajectoryConfig:
    """Budget, window, student, optimiser and bookkeeping of one trajectory distillation."""

    # Budget and run length
    ipc: int = 10
    iterations: int = 500
    # Window on the expert trajectory (MTT: start ~ U[min_start, max_start), target +M epochs)
    syn_steps: int = 20
    expert_epochs: int = 2
    min_start: int = 0
    max_start: int = 4
    # Student
    batch_syn: int = 0  # 0: all synthetic images in every step
    gradient_mode: Literal["adjoint", "unroll"] = "adjoint"
    dsa: bool = True
    dsa_strategy: str | None = None  # None: the dataset's default strategy
    # Initialisation
    init: Literal["real", "real_correct", "noise"] = "real"
    # Optimisers (SGD with momentum, as the references)
    lr_img: float = 1000.0
    momentum_img: float = 0.5
    syn_lr_init: float = 0.01
    lr_lr: float = 1e-5
    momentum_lr: float = 0.5
    step_size_param: Literal["linear", "log"] = "linear"
    exclude_frozen: bool = True  # leave out parameters that cannot move (bias before a norm)
    # Bookkeeping
    eval_every: int = 0  # 0: evaluate only at the end
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(num_nets=2, epochs=300))
    checkpoint_every: int = 25
    log_every: int = 1
    snapshot_every: int = 0  # save the images every k iterations (report: MMD over the run)

    def __post_init__(self) -> None:
        for key in ("ipc", "iterations", "syn_steps", "expert_epochs", "checkpoint_every"):
            value = getattr(self, key)
            if value < 1:
                raise ConfigError(f"option {key} must be >= 1, got {value}")
        if self.min_start < 0:
            raise ConfigError(f"option min_start must be >= 0, got {self.min_start}")
        for key in ("syn_lr_init", "lr_img"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"option {key} must be a positive number, got {value}")
        if self.batch_syn < 0:
            raise ConfigError(
                f"option batch_syn must be >= 0 (0 = all images), got {self.batch_syn}"
            )
        for key in ("eval_every", "snapshot_every"):
            if getattr(self, key) < 0:
                raise ConfigError(f"option {key} must be >= 0, got {getattr(self, key)}")
        if self.log_every < 1:
            raise ConfigError(f"option log_every must be >= 1, got {self.log_every}")

    def check_start_range(self) -> None:
        """A random window needs a non-empty start range [min_start, max_start)."""
        if self.max_start <= self.min_start:
            raise ConfigError(
                f"start range [min_start={self.min_start}, max_start={self.max_start}) is "
                "empty; max_start must exceed min_start (the upper bound is exclusive)"
            )


def check_unit_interval(name: str, value: float, *, closed_low: bool = True) -> None:
    """Refuse a fraction outside [0, 1) (or (0, 1) when closed_low is False)."""
    low_ok = value >= 0.0 if closed_low else value > 0.0
    if not (low_ok and value < 1.0):
        bounds = "[0, 1)" if closed_low else "(0, 1)"
        raise ConfigError(f"option {name} must be in {bounds}, got {value}")
