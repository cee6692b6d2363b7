"""What a buffer of expert trajectories is made of: how many experts, how long, which network."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from meddistill.config import to_dict
from meddistill.models import ModelSpec
from meddistill.training import parallel
from meddistill.training.compiled import COMPILE_AUTO_WORK, compile_on, valid_compile
from meddistill.training.config import TrainConfig
from meddistill.training.dp import DPConfig
from meddistill.utils import Options, is_integer


def expert_train_config(epochs: int = 50) -> TrainConfig:
    """MTT experts: plain SGD lr 0.01, no momentum, no weight decay, batch 256, DSA, constant lr."""
    return TrainConfig(
        epochs=epochs,
        lr=0.01,
        momentum=0.0,
        weight_decay=0.0,
        batch_size=256,
        lr_schedule="none",
        dsa=True,
    )


def flat_expert_train_config(epochs: int = 100) -> TrainConfig:
    """FTD / DATM / HoP-TM "flat" experts: the MTT settings under GSAM (rho 0.01, alpha 0.3)."""
    return dataclasses.replace(
        expert_train_config(epochs),
        optimizer="gsam",
        gsam_rho=0.01,
        gsam_alpha=0.3,
        gsam_adaptive=True,
    )


@dataclass
class BufferConfig:
    """Settings of `generate_buffer`; the defaults are the MTT buffer (100 experts x 50 epochs).

    `epochs` is the length of every trajectory (E + 1 snapshots, epoch 0 = initialisation) and
    decides `train.epochs`, which is overwritten with it so the two can never disagree (set
    `epochs`, not `train.epochs`).
    `dtype` float16 halves the disk size; snapshots are read back as float32.
    `workers` only schedules: on CPU the experts train in that many one-thread worker
    processes (auto: one per usable core), each bit-identical to the one-by-one run at one
    thread; it is not part of the buffer's identity.
    `compile` (true, false or auto: on CUDA, and on CPU for experts long enough to repay a cold
    compile) runs each training step through torch.compile; it schedules too (not identity):
    a compiled expert equals the eager one to float tolerance (training/compiled.py).
    """

    num_experts: int = 100
    epochs: int = 50
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainConfig = field(default_factory=expert_train_config)
    dtype: Literal["float32", "float16"] = "float32"
    seed: int = 0
    workers: int | str = "auto"
    compile: bool | str = "auto"
    dp: DPConfig | None = None  # DP-SGD experts (epsilon, delta, max_grad_norm, ...); null: off

    SCHEDULING: ClassVar[tuple[str, ...]] = ("workers", "compile")

    def __post_init__(self) -> None:
        check = Options("buffer", self)
        check.counts("num_experts", "epochs")
        check.choice("dtype", ("float32", "float16"))
        check.seeds("seed")
        if not (self.workers == "auto" or (is_integer(self.workers) and self.workers >= 1)):
            check.fail("workers", "an integer >= 1 (1: one expert after another) or auto")
        if not valid_compile(self.compile):
            check.fail("compile", "true, false or auto (on CUDA; on CPU for long experts)")
        if self.train.epochs != self.epochs:
            self.train = dataclasses.replace(self.train, epochs=int(self.epochs))
        conflict = dp_conflict(self.dp, self.model, self.train.optimizer)
        if conflict is not None:
            check.fail("dp", f"null {conflict}", to_dict(self.dp))

    def identity(self) -> dict[str, Any]:
        """The settings without how the experts are scheduled (workers): what names the
        buffer's folder, so scheduling never moves or splits a buffer. An unset dp is left
        out, so every buffer made before the option keeps its folder."""
        return buffer_section_identity(
            {k: v for k, v in to_dict(self).items() if k not in self.SCHEDULING}
        )

    def compile_on(self, train_images: int, device: torch.device) -> bool:
        """Whether each expert's training step is compiled, for `train_images` images."""
        return compile_on(self.compile, device, train_images * self.epochs, COMPILE_AUTO_WORK)

    def workers_for(self, jobs: int, device: torch.device) -> int:
        """Worker processes for `jobs` experts on `device` (1: in this process)."""
        return parallel.workers_for(self.workers, jobs, device)


def buffer_section_identity(section: dict[str, Any]) -> dict[str, Any]:
    """A buffer config section as identities hash it: `dp` dropped while unset (null)."""
    return {k: v for k, v in section.items() if not (k == "dp" and v is None)}


def dp_conflict(dp: DPConfig | None, model: ModelSpec, optimizer: str) -> str | None:
    """Why DP-SGD experts cannot be trained with this network or optimiser, or None."""
    if dp is None:
        return None
    if model.norm == "batchnorm":
        return (
            "with model.norm batchnorm (batch norm mixes the images of a batch: use instancenorm)"
        )
    if optimizer != "sgd":
        return (
            f"with the experts' optimizer {optimizer} (DP-SGD accounts one noisy gradient per "
            "step; GSAM takes two): train them with sgd"
        )
    return None
