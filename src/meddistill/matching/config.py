"""Every knob of the matching engine in one validated dataclass.

A method (meddistill.methods.*) is a set of defaults for these knobs; presets and the command
line override them. Names follow the reference scripts where they exist (syn_steps,
expert_epochs, min_start/max_start, lr_img, lr_lr, batch_syn) so published tables map directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from meddistill.errors import ConfigError
from meddistill.training.evaluate import EvalConfig


@dataclass
class MatchConfig:
    """Schedule, student, loss terms, updates and hooks of one distillation."""

    # Budget and run length
    ipc: int = 10
    iterations: int = 500
    seed: int = 0
    # Window schedule: random (MTT, HoP-TM, FTD, ATT), growing (DATM), progressive (PTM), fixed
    schedule: Literal["random", "growing", "progressive", "fixed"] = "random"
    syn_steps: int = 20
    expert_epochs: int = 2
    min_start: int = 0
    max_start: int = 4
    growing_start: int = 2  # DATM: upper bound at iteration 0 (grows to max_start)
    growing_end: int = 0  # DATM: iteration by which the bound reaches max_start (0: at once)
    progressive_end: int = 0  # PTM: last end epoch T (0: the buffer's last epoch)
    progressive_steps_per_epoch: float = (
        0.0  # PTM: student steps per expert epoch (0: syn_steps/expert_epochs)
    )
    progressive_max_steps: int = 0  # PTM: cap on student steps of a round (0: no cap)
    progressive_growth: Literal["linear", "sqrt"] = "linear"
    # Student
    batch_syn: int = 0  # 0: all synthetic images in every step
    gradient_mode: Literal["adjoint", "unroll"] = "adjoint"
    dsa: bool = True
    dsa_strategy: str | None = None  # None: the dataset's default
    # Initialisation
    init: Literal["real", "real_correct", "noise"] = "real"
    # Optimisers (SGD with momentum, as the references)
    lr_img: float = 1000.0
    momentum_img: float = 0.5
    syn_lr_init: float = 0.01
    lr_lr: float = 1e-5
    momentum_lr: float = 0.5
    step_size_param: Literal["linear", "log"] = "linear"
    # Match loss and HoP-TM terms
    match_weight: float = 1.0  # PTM beta_1
    easy_to_complex: bool = False
    e2c_cumulative: bool = True
    kappa_mode: Literal["absolute", "quantile"] = "absolute"
    kappa_base: float = 5e-9
    kappa_quantile: float = 0.03
    kappa_mu: float = 1.5
    kappa_period: int = 500
    exclude_frozen: bool = True
    shape_potential: bool = False
    shape_form: Literal["code", "paper"] = "code"
    shape_lambda: float = 0.5
    # ATT: match at the student step closest to the target
    argmin_step: bool = False
    # PTM overlap mitigation and retraining points
    overlap: bool = False
    overlap_weight: float = 1.0  # PTM beta_2
    overlap_sigma: float = 0.0  # 0: median same-class distance, every iteration
    retraining_points: int = 0  # PTM k
    # FTD / ATT: exponential moving average of the images (0: off)
    ema_decay: float = 0.0
    # DATM / TESLA: learnable soft labels (logits) initialised from an expert
    soft_labels: bool = False
    learn_labels: bool = True
    lr_y: float = 2.0
    momentum_y: float = 0.9
    label_expert_epoch: int = -1  # expert epoch whose logits initialise labels (-1: last)
    loss_skip_threshold: float = 0.0  # DATM: skip the update when loss > this (0: off)
    # SMDD: drop the hardest-to-match fraction of parameter elements from the match loss
    prune_ratio: float = 0.0  # 0: off
    prune_by: Literal["mismatch", "displacement"] = "mismatch"
    # SeqMatch: sequential subsets (methods.seqmatch.run_seqmatch; 1: one ordinary run)
    seq_subsets: int = 1
    # HaBa: hallucinators per base (0: plain images; ipc then counts bases per class)
    haba_hallucinators: int = 0
    lr_hallucinator: float = 100.0
    # Bookkeeping
    eval_every: int = 0  # 0: evaluate only at the end
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(num_nets=2, epochs=300))
    checkpoint_every: int = 25
    log_every: int = 1
    snapshot_every: int = 0  # save the images every k iterations (report: MMD over the run)

    def __post_init__(self) -> None:
        positive = {
            "ipc": self.ipc,
            "iterations": self.iterations,
            "syn_steps": self.syn_steps,
            "expert_epochs": self.expert_epochs,
            "kappa_period": self.kappa_period,
            "checkpoint_every": self.checkpoint_every,
        }
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"option {key} must be >= 1, got {value}")
        if self.min_start < 0 or self.max_start <= self.min_start and self.schedule == "random":
            raise ConfigError(
                f"start range [min_start={self.min_start}, max_start={self.max_start}) is empty; "
                "max_start must exceed min_start (the upper bound is exclusive)"
            )
        if not self.syn_lr_init > 0:
            raise ConfigError(f"option syn_lr_init must be > 0, got {self.syn_lr_init}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"option ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.batch_syn < 0:
            raise ConfigError(
                f"option batch_syn must be >= 0 (0 = all images), got {self.batch_syn}"
            )
        if not 0.0 < self.kappa_quantile < 1.0:
            raise ConfigError(f"option kappa_quantile must be in (0, 1), got {self.kappa_quantile}")
        if self.kappa_mu < 1.0:
            raise ConfigError(f"option kappa_mu must be >= 1 (kappa grows), got {self.kappa_mu}")
        if not 0.0 <= self.prune_ratio < 1.0:
            raise ConfigError(f"option prune_ratio must be in [0, 1), got {self.prune_ratio}")
        if self.seq_subsets < 1:
            raise ConfigError(f"option seq_subsets must be >= 1, got {self.seq_subsets}")
        if self.haba_hallucinators < 0:
            raise ConfigError(
                f"option haba_hallucinators must be >= 0 (0 = off), got {self.haba_hallucinators}"
            )
        if self.retraining_points < 0:
            raise ConfigError(
                f"option retraining_points must be >= 0, got {self.retraining_points}"
            )
        if self.retraining_points >= self.iterations:
            raise ConfigError(
                f"option retraining_points={self.retraining_points} needs more than "
                f"{self.iterations} iterations; raise iterations or lower retraining_points"
            )
