"""Train one network on tensors: the loop behind expert trajectories and every evaluation.

No DataLoader: the images already sit on the device, each epoch visits them in the order of a
permutation drawn from the explicit generator, in chunks of `batch_size` (the last one may be
smaller, as a DataLoader with drop_last=False). DSA, when on, draws fresh per-sample parameters
for every batch from the same generator (not siamese), as the reference training loops do.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from meddistill.augment import DSA
from meddistill.errors import ConfigError, NumericalError
from meddistill.training.compiled import TrainStep
from meddistill.training.config import TrainConfig
from meddistill.training.gsam import GSAM
from meddistill.training.metrics import evaluate_model, hard_labels


class _SplitLike(Protocol):
    images: torch.Tensor
    labels: torch.Tensor


@dataclass
class TrainResult:
    """What a training run ends with; accuracies are fractions in [0, 1]."""

    train_loss: float
    train_acc: float
    test_acc: float | None = None
    test_auc: float | None = None
    test_loss: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_inputs(images: torch.Tensor, labels: torch.Tensor) -> None:
    if images.shape[0] != labels.shape[0]:
        raise ConfigError(
            f"train_network got {images.shape[0]} images but {labels.shape[0]} labels"
        )
    if images.shape[0] == 0:
        raise ConfigError("train_network got an empty set of images; nothing to train on")
    if labels.dim() == 1:
        if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ConfigError(
                f"labels of shape [N] must be integer class indices, got dtype {labels.dtype}"
            )
    elif labels.dim() != 2 or not labels.is_floating_point():
        raise ConfigError(
            f"labels must be int class indices [N] or float soft labels [N, C], got "
            f"shape {tuple(labels.shape)} dtype {labels.dtype}"
        )
    if not torch.isfinite(images).all():
        raise NumericalError(
            "the training images contain NaN or inf values; check how they were made"
        )


def make_dsa(cfg: TrainConfig, spatial_dims: int) -> DSA | None:
    return DSA(cfg.dsa_strategy, spatial_dims=spatial_dims) if cfg.dsa else None


def as_pair(
    split: _SplitLike | tuple[torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(split, tuple):
        return split
    return split.images, split.labels


def epoch_order(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """The epoch's visiting order: one permutation drawn on the CPU, then moved to `device`."""
    return torch.randperm(n, generator=generator).to(device)


def batch_inputs(
    images: torch.Tensor,
    labels: torch.Tensor,
    idx: torch.Tensor,
    dsa: DSA | None,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch, augmented with a fresh per-sample DSA draw; shared with the batched trainer
    so K networks trained together make exactly the draws each makes alone."""
    x = images[idx]
    if dsa is not None:
        x = dsa(x, generator, shared=False)
    return x, labels[idx]


def loss_error(loss_value: float, epoch: int, cfg: TrainConfig, lr: float) -> NumericalError:
    """The error of an epoch whose mean training loss is not finite."""
    return NumericalError(
        f"training loss became {loss_value} in epoch {epoch + 1} of {cfg.epochs} "
        f"(lr={lr:g}, optimizer={cfg.optimizer}); lower the learning rate or check the images"
    )


def _run_epoch(
    step: TrainStep,
    images: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor,
    order: torch.Tensor,
    batch_size: int,
    base: torch.optim.Optimizer,
    gsam: GSAM | None,
    dsa: DSA | None,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass over `order` in batches; returns (summed loss, correct count) on the device."""
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), device=images.device, dtype=torch.int64)
    for start in range(0, order.shape[0], batch_size):
        idx = order[start : start + batch_size]
        x, y = batch_inputs(images, labels, idx, dsa, generator)
        out: dict[str, torch.Tensor] = {}

        def closure(x: torch.Tensor = x, y: torch.Tensor = y, out: dict = out) -> torch.Tensor:
            base.zero_grad(set_to_none=True)
            loss, logits = step(x, y)
            out.setdefault("logits", logits)  # the first pass is at w, not w + e
            return loss

        if gsam is not None:
            loss = gsam.step(closure)
        else:
            loss = closure()
            base.step()
        loss_sum += loss * idx.shape[0]
        correct += (out["logits"].argmax(dim=1) == targets[idx]).sum()
    return loss_sum, correct


def check_generator(generator: torch.Generator) -> None:
    """Batch order and DSA are drawn on the CPU so that results do not depend on the device."""
    if generator.device.type != "cpu":
        raise ConfigError(
            "train_network needs a CPU torch.Generator (batch order and DSA are drawn on the CPU "
            "so results do not depend on the device); pass meddistill.utils.make_generator(seed)"
        )


def _make_optimizers(model: nn.Module, cfg: TrainConfig) -> tuple[torch.optim.SGD, GSAM | None]:
    """The base SGD optimiser, wrapped by GSAM when cfg.optimizer asks for it."""
    base = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    gsam = (
        GSAM(
            model.parameters(),
            base,
            rho=cfg.gsam_rho,
            alpha=cfg.gsam_alpha,
            adaptive=cfg.gsam_adaptive,
            model=model,
        )
        if cfg.optimizer == "gsam"
        else None
    )
    return base, gsam


@dataclass
class _LoopState:
    """The fixed pieces of one train_network run, shared by every epoch."""

    model: nn.Module
    step: TrainStep
    images: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor
    base: torch.optim.Optimizer
    gsam: GSAM | None
    dsa: DSA | None
    generator: torch.Generator
    test_pair: tuple[torch.Tensor, torch.Tensor] | None


def _prepare(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainConfig,
    generator: torch.Generator,
    test_split: _SplitLike | tuple[torch.Tensor, torch.Tensor] | None,
    compile: bool,
) -> _LoopState:
    """Move model, labels and test split to the images' device; build the optimisers and the
    (compiled when asked) training step."""
    device = images.device
    model.to(device)
    labels = labels.to(device)
    model.train()
    base, gsam = _make_optimizers(model, cfg)
    dsa = make_dsa(cfg, images.dim() - 2)
    targets = hard_labels(labels)
    test_pair = None
    if test_split is not None:
        test_images, test_labels = as_pair(test_split)
        test_pair = (test_images.to(device), test_labels.to(device))
    step = TrainStep(model, compile=compile)
    return _LoopState(model, step, images, labels, targets, base, gsam, dsa, generator, test_pair)


def _train_epoch(
    state: _LoopState, cfg: TrainConfig, epoch: int, eval_every: int
) -> dict[str, float]:
    """One epoch at its scheduled lr; its history record (test metrics when due)."""
    lr = cfg.lr_at(epoch)
    for group in state.base.param_groups:
        group["lr"] = lr
    n = state.images.shape[0]
    order = epoch_order(n, state.generator, state.images.device)
    loss_sum, correct = _run_epoch(
        state.step,
        state.images,
        state.labels,
        state.targets,
        order,
        cfg.batch_size,
        state.base,
        state.gsam,
        state.dsa,
        state.generator,
    )
    loss_value = float(loss_sum.item()) / n
    acc_value = float(correct.item()) / n
    if not math.isfinite(loss_value):
        raise loss_error(loss_value, epoch, cfg, lr)
    record = {"epoch": epoch + 1, "lr": lr, "loss": loss_value, "acc": acc_value}
    if state.test_pair is not None and eval_every > 0 and (epoch + 1) % eval_every == 0:
        metrics = evaluate_model(state.model, *state.test_pair)
        record.update({f"test_{k}": v for k, v in metrics.items()})
    return record


def _result(state: _LoopState, history: list[dict[str, float]]) -> TrainResult:
    return final_result(state.model, state.test_pair, history)


def final_result(
    model: nn.Module,
    test_pair: tuple[torch.Tensor, torch.Tensor] | None,
    history: list[dict[str, float]],
) -> TrainResult:
    """A run's final numbers; the test split is evaluated unless the last epoch already was."""
    last = history[-1] if history else {}
    result = TrainResult(
        train_loss=last.get("loss", math.nan), train_acc=last.get("acc", math.nan), history=history
    )
    if test_pair is not None:
        if "test_acc" in last:
            metrics = {k[5:]: v for k, v in last.items() if k.startswith("test_")}
        else:
            metrics = evaluate_model(model, *test_pair)
        result.test_acc = metrics["acc"]
        result.test_auc = metrics["auc"]
        result.test_loss = metrics["loss"]
    return result


def train_network(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainConfig,
    *,
    generator: torch.Generator,
    test_split: _SplitLike | tuple[torch.Tensor, torch.Tensor] | None = None,
    eval_every: int = 0,
    on_epoch: Callable[[int, nn.Module], None] | None = None,
    progress: bool | str | None = None,
    compile: bool = False,
) -> TrainResult:
    """Train `model` in place on (images, labels) for `cfg.epochs` epochs.

    `generator` is a CPU generator (as DSA requires): batch order and augmentation then do not
    depend on the device, and the same seed gives bit-identical results on CPU.
    labels: int64 class indices [N] (cross-entropy) or float soft labels [N, C] (target
    probabilities, soft cross-entropy), so DATM/TESLA synthetic sets train the same way.
    `test_split` (a Split or an (images, labels) pair) is evaluated after the last epoch, and
    every `eval_every` epochs into the history when > 0. `on_epoch(epoch, model)` runs after
    each epoch, epoch counted from 1 (the caller records epoch 0, the initialisation).
    `progress`: False/None hides the bar, True shows one, a string shows one with that label.
    A NaN or infinite epoch loss raises NumericalError (checked once per epoch, so the loop
    never waits on the device inside an epoch).
    `compile`: run the training step through torch.compile (training/compiled.py): faster on
    larger batches, equal to the eager run to float tolerance, eager again if compiling fails.
    """
    check_inputs(images, labels)
    check_generator(generator)
    state = _prepare(model, images, labels, cfg, generator, test_split, compile)
    history: list[dict[str, float]] = []
    with tqdm(
        range(cfg.epochs),
        desc=progress if isinstance(progress, str) else "train",
        disable=not progress,
        leave=False,
        unit="ep",
    ) as bar:
        for epoch in bar:
            record = _train_epoch(state, cfg, epoch, eval_every)
            history.append(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['acc']:.3f}")
            if on_epoch is not None:
                on_epoch(epoch + 1, model)
    return _result(state, history)
