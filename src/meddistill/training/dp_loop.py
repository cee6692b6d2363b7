"""Train one network with DP-SGD through Opacus: the loop behind DP experts and the DP-SGD
full-data baseline (one path, so both spend their budget the same way).

As `train_network`, on tensors already on the device, but each step is Opacus's: its
DPDataLoader draws a Poisson sample (each image in with probability q, so batch sizes vary and
may be 0), its GradSampleModule computes per-sample gradients, its DPOptimizer clips each to
max_grad_norm, adds Gaussian noise (noise_multiplier x max_grad_norm) and averages over the
expected batch size; its accountant counts the steps. The sampling and the noise draw from the
network's secret seed (PrivateTraining.secret), not from the public `generator`, which only
draws DSA: augmentation is applied per sample before the per-sample gradients (data processing
of each sampled image, so it leaves the sensitivity and the guarantee unchanged). An empty
sample still takes a step of pure noise, as the analysed mechanism does.

PrivacyEngine builds its DPDataLoader from the global RNG; here the same DPDataLoader is built
from the seeded sampling generator and handed to make_private already Poisson
(poisson_sampling=False only skips Opacus's rebuilding of it). The noise multiplier is the
plan's (calibrated for every network trained on the same data, training/dp.py).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from meddistill.augment import DSA
from meddistill.errors import ConfigError
from meddistill.training.config import TrainConfig
from meddistill.training.dp import PrivateTraining, require_opacus
from meddistill.training.loop import (
    TrainResult,
    as_pair,
    batch_inputs,
    check_generator,
    check_inputs,
    final_result,
    loss_error,
    make_dsa,
)
from meddistill.training.metrics import classification_loss, evaluate_model
from meddistill.utils import derive_seed, make_generator

# Opacus's notices that say nothing to a user of this loop: the non-secure RNG (said in the
# README and recorded), and the backward hook firing on inputs that need no gradient (images).
_QUIET = ("Secure RNG turned off", "Full backward hook is firing")


def check_dp_model(model: nn.Module, name: str) -> None:
    """Refuse a network Opacus cannot train privately (batch norm mixes the examples of a
    batch), with Opacus's own validator; one line naming what to change."""
    require_opacus()
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        first = str(errors[0]).split(". ")[0]
        raise ConfigError(
            f"network {name} cannot train with DP-SGD ({first}); use model.norm instancenorm, "
            "groupnorm or layernorm (a network without batch norm)"
        )


@dataclass
class _PrivateState:
    """The pieces of one DP-SGD run, shared by every epoch."""

    model: nn.Module
    module: nn.Module  # Opacus's GradSampleModule around `model` (same parameters)
    optimizer: Any  # opacus DPOptimizer around SGD
    engine: Any  # opacus PrivacyEngine (its accountant counts the steps)
    loader: Any  # opacus DPDataLoader over the image indices
    images: torch.Tensor
    labels: torch.Tensor
    dsa: DSA | None
    generator: torch.Generator  # DSA only
    test_pair: tuple[torch.Tensor, torch.Tensor] | None


@contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        for text in _QUIET:
            warnings.filterwarnings("ignore", message=f"{text}.*")
        yield


def _prepare(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainConfig,
    private: PrivateTraining,
    generator: torch.Generator,
    test_split: Any,
) -> _PrivateState:
    """Wrap model, SGD and a Poisson loader over the indices with Opacus's privacy engine."""
    from opacus import PrivacyEngine
    from opacus.data_loader import DPDataLoader

    device = images.device
    model.to(device).train()
    plan = private.plan
    index = torch.utils.data.TensorDataset(torch.arange(images.shape[0]))
    plain = torch.utils.data.DataLoader(index, batch_size=cfg.batch_size)
    sampling = make_generator(derive_seed(private.secret, "poisson"))
    loader = DPDataLoader.from_data_loader(plain, generator=sampling)
    if not math.isclose(loader.sample_rate, plan.sample_rate):
        raise ConfigError(
            f"DP-SGD would sample at rate {loader.sample_rate:.4g} but its noise was calibrated "
            f"for {plan.sample_rate:.4g}; calibrate it for {images.shape[0]} images and batch "
            f"size {cfg.batch_size}"
        )
    sgd = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    engine = PrivacyEngine(accountant=plan.accountant)
    noise = make_generator(derive_seed(private.secret, "noise"), device)
    module, optimizer, loader = engine.make_private(
        module=model, optimizer=sgd, data_loader=loader, noise_multiplier=plan.noise_multiplier,
        max_grad_norm=plan.max_grad_norm, poisson_sampling=False, noise_generator=noise,
    )  # fmt: skip
    test_pair = None
    if test_split is not None:
        test_images, test_labels = as_pair(test_split)
        test_pair = (test_images.to(device), test_labels.to(device))
    dsa = make_dsa(cfg, images.dim() - 2)
    return _PrivateState(
        model, module, optimizer, engine, loader, images, labels.to(device), dsa, generator,
        test_pair,
    )  # fmt: skip


def _step(state: _PrivateState, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One DP-SGD step on the Poisson sample `idx`; (summed loss, correct count) of it."""
    state.optimizer.zero_grad(set_to_none=True)
    if idx.numel() == 0:  # an empty sample: zero gradients, still clipped, noised, counted
        logits = state.module(state.images[:0])
        (logits.sum() * 0.0).backward()
        state.optimizer.step()
        zero = torch.zeros((), device=state.images.device)
        return zero, zero.long()
    x, y = batch_inputs(state.images, state.labels, idx, state.dsa, state.generator)
    logits = state.module(x)
    loss = classification_loss(logits, y)
    loss.backward()
    state.optimizer.step()
    correct = (logits.detach().argmax(dim=1) == y).sum()
    return loss.detach() * idx.numel(), correct


def _epoch(state: _PrivateState, cfg: TrainConfig, epoch: int, eval_every: int) -> dict[str, float]:
    """One epoch (1 / q Poisson steps) at its scheduled lr; its history record. The loss and
    accuracy are over the images the steps drew (a measurement, outside the guarantee)."""
    lr = cfg.lr_at(epoch)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    device = state.images.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    for (idx,) in state.loader:
        loss, right = _step(state, idx.to(device))
        loss_sum, correct, seen = loss_sum + loss, correct + right, seen + idx.numel()
    loss_value = float(loss_sum.item()) / max(seen, 1)
    if not math.isfinite(loss_value):
        raise loss_error(loss_value, epoch, cfg, lr)
    record = {"epoch": epoch + 1, "lr": lr, "loss": loss_value, "acc": int(correct) / max(seen, 1)}
    if state.test_pair is not None and eval_every > 0 and (epoch + 1) % eval_every == 0:
        metrics = evaluate_model(state.model, *state.test_pair)
        record.update({f"test_{k}": v for k, v in metrics.items()})
    return record


def _close(state: _PrivateState, private: PrivateTraining) -> None:
    """Check that the accountant saw exactly the planned steps; unhook Opacus from the model."""
    state.module._close()
    history = state.engine.accountant.history
    plan = private.plan
    steps = sum(h[2] for h in history)
    if any(h[0] != plan.noise_multiplier or h[1] != plan.sample_rate for h in history) or (
        steps != plan.steps
    ):
        raise RuntimeError(f"DP-SGD took {history} steps, planned {plan.steps} at {plan}")


def train_private(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainConfig,
    private: PrivateTraining,
    *,
    generator: torch.Generator,
    test_split: Any = None,
    eval_every: int = 0,
    on_epoch: Callable[[int, nn.Module], None] | None = None,
    progress: bool | str | None = None,
) -> TrainResult:
    """Train `model` in place with DP-SGD for cfg.epochs epochs (SGD with cfg's lr, schedule,
    momentum and weight decay on the noisy averaged gradients; hard labels); `generator`
    draws DSA only. Arguments and result as meddistill.training.loop.train_network; the
    model comes back without Opacus's hooks."""
    check_inputs(images, labels)
    check_generator(generator)
    if labels.dim() != 1:
        raise ConfigError("DP-SGD trains on class indices (real labels), not soft labels")
    if cfg.optimizer != "sgd":
        raise ConfigError("DP-SGD trains with train.optimizer sgd (GSAM is not supported)")
    require_opacus()
    with _quiet():
        state = _prepare(model, images, labels, cfg, private, generator, test_split)
        history: list[dict[str, float]] = []
        label = progress if isinstance(progress, str) else "DP-SGD"
        for epoch in tqdm(range(cfg.epochs), desc=label, disable=not progress, leave=False):
            history.append(_epoch(state, cfg, epoch, eval_every))
            if on_epoch is not None:
                on_epoch(epoch + 1, model)
        _close(state, private)
    return final_result(model, state.test_pair, history)
