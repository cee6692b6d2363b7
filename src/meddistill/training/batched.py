"""Train K networks of one architecture together: one vmapped forward/backward for all K.

Each network keeps everything it has when trained alone by `train_network`: its own
initialisation, its own generator, hence its own batch order and DSA draws (made in the same
sequence, by the same helpers, per network), its own SGD momentum. Only the arithmetic is
shared: the K parameter sets are stacked and torch.func.vmap runs the K forward and backward
passes as one batched computation (a grouped convolution), which pays off on a GPU where one
small network leaves the device mostly idle.

Batched kernels sum in another order than K separate ones, so results agree with the one-by-one
run to float32 rounding, not bit for bit: after 2 epochs on tiny data the parameters agree to
1e-4 relative and the test accuracies to within one test example (tests/training/
test_eval_parallel.py). Networks with running statistics (batch norm), dropout or the GSAM
optimiser are not batched (`unbatchable` says why); the caller trains those one by one.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from meddistill.augment import DSA
from meddistill.errors import ConfigError
from meddistill.training.config import TrainConfig
from meddistill.training.loop import (
    TrainResult,
    batch_inputs,
    check_generator,
    check_inputs,
    epoch_order,
    loss_error,
    make_dsa,
)
from meddistill.training.metrics import classification_loss, evaluate_model, hard_labels


def unbatchable(model: nn.Module, cfg: TrainConfig) -> str | None:
    """None when copies of `model` can train batched with `cfg`, else the reason they cannot."""
    if cfg.optimizer != "sgd":
        return f"optimizer {cfg.optimizer} is trained one network at a time"
    if next(model.buffers(), None) is not None:
        return "it keeps running statistics (batch norm), which vmap cannot update per network"
    if any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules()):
        return "dropout would draw from the global RNG under vmap"
    return None


@dataclass
class _Stack:
    """K networks as one: a parameter-less copy of the module and (K, ...) parameter leaves."""

    base: nn.Module
    params: dict[str, torch.Tensor]

    @classmethod
    def of(cls, models: list[nn.Module]) -> _Stack:
        names = [n for n, _ in models[0].named_parameters()]
        per_model = [dict(m.named_parameters()) for m in models]
        params = {
            n: torch.stack([p[n].detach() for p in per_model]).requires_grad_() for n in names
        }
        return cls(copy.deepcopy(models[0]).to("meta"), params)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(K, B, ...) inputs -> (K, B, classes) logits, network k on slice k."""

        def one(params: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, params, (xb,))

        return vmap(one)(self.params, x)

    @torch.no_grad()
    def write_back(self, models: list[nn.Module]) -> None:
        """Copy network k's trained parameters into models[k]."""
        for k, model in enumerate(models):
            for name, p in model.named_parameters():
                p.copy_(self.params[name][k])


def _check(models: list[nn.Module], generators: list[torch.Generator], cfg: TrainConfig) -> None:
    if not models or len(models) != len(generators):
        raise ConfigError(
            f"batched training needs one generator per network, got {len(models)} network(s) "
            f"and {len(generators)} generator(s)"
        )
    for generator in generators:
        check_generator(generator)
    reason = unbatchable(models[0], cfg)
    if reason is not None:
        raise ConfigError(f"these networks cannot be trained batched: {reason}")


def _batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    idx: torch.Tensor,
    dsa: DSA | None,
    generators: list[torch.Generator],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, B, ...) inputs and labels: network k's batch and DSA draw from its own generator."""
    pairs = [batch_inputs(images, labels, i, dsa, g) for i, g in zip(idx, generators, strict=True)]
    return torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])


def _epoch(
    stack: _Stack,
    opt: torch.optim.Optimizer,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    batch_size: int,
    dsa: DSA | None,
    generators: list[torch.Generator],
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass of all K networks; (K,) summed losses and correct counts, on the device."""
    images, labels, targets = data
    n, device = images.shape[0], images.device
    orders = torch.stack([epoch_order(n, g, device) for g in generators])
    loss_sum = torch.zeros(len(generators), device=device)
    correct = torch.zeros(len(generators), device=device, dtype=torch.int64)
    for start in range(0, n, batch_size):
        idx = orders[:, start : start + batch_size]
        x, y = _batch(images, labels, idx, dsa, generators)
        opt.zero_grad(set_to_none=True)
        logits = stack.logits(x)
        losses = vmap(classification_loss)(logits, y)
        losses.sum().backward()  # networks share no parameters: each gets its own gradient
        opt.step()
        loss_sum += losses.detach() * idx.shape[1]
        correct += (logits.detach().argmax(dim=-1) == targets[idx]).sum(dim=1)
    return loss_sum, correct


def _check_losses(loss_sum: torch.Tensor, n: int, epoch: int, cfg: TrainConfig) -> list[float]:
    """Each network's mean epoch loss; the first non-finite one raises as train_network does."""
    losses = [float(v) / n for v in loss_sum.tolist()]
    for value in losses:
        if not math.isfinite(value):
            raise loss_error(value, epoch, cfg, cfg.lr_at(epoch))
    return losses


def train_networks_batched(
    models: list[nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainConfig,
    *,
    generators: list[torch.Generator],
    test_split: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: bool | str | None = None,
) -> list[TrainResult]:
    """Train `models` (same architecture) in place as `train_network` would, one generator each.

    Agrees with K `train_network` calls to float rounding (see the module docstring); the final
    train loss/accuracy and, with `test_split`, the test metrics of each network are returned.
    """
    check_inputs(images, labels)
    _check(models, generators, cfg)
    device = images.device
    models = [m.to(device).train() for m in models]
    stack = _Stack.of(models)
    opt = torch.optim.SGD(
        list(stack.params.values()), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )  # elementwise, so stacking changes nothing: each network gets its own momentum buffer
    labels = labels.to(device)
    data = (images, labels, hard_labels(labels))
    dsa, n = make_dsa(cfg, images.dim() - 2), images.shape[0]
    losses, accs = [math.nan] * len(models), [math.nan] * len(models)
    label = progress if isinstance(progress, str) else "train (batched)"
    for epoch in tqdm(range(cfg.epochs), desc=label, disable=not progress, leave=False):
        for group in opt.param_groups:
            group["lr"] = cfg.lr_at(epoch)
        loss_sum, correct = _epoch(stack, opt, data, cfg.batch_size, dsa, generators)
        losses = _check_losses(loss_sum, n, epoch, cfg)
        accs = [float(c) / n for c in correct.tolist()]
    stack.write_back(models)
    test = None if test_split is None else (test_split[0].to(device), test_split[1].to(device))
    return [_result(m, loss, acc, test) for m, loss, acc in zip(models, losses, accs, strict=True)]


def _result(
    model: nn.Module, loss: float, acc: float, test: tuple[torch.Tensor, torch.Tensor] | None
) -> TrainResult:
    """One network's final numbers (no per-epoch history), tested as train_network tests."""
    result = TrainResult(train_loss=loss, train_acc=acc)
    if test is not None:
        metrics = evaluate_model(model, *test)
        result.test_acc = metrics["acc"]
        result.test_auc = metrics["auc"]
        result.test_loss = metrics["loss"]
    return result
