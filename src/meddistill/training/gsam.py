"""GSAM (surrogate-gap guided sharpness-aware minimisation) around a base SGD optimiser.

FTD, DATM and HoP-TM train their "flat" experts with it: rho 0.01 (constant), alpha 0.3,
adaptive. One step, for the loss L of one (already augmented) batch:

1. g = grad L(w)
2. e = rho * g / ||g||, or adaptive: e = rho * w^2 * g / || |w| * g ||
3. g' = grad L(w + e)
4. g_perp = g - (<g, g'> / ||g'||^2) g'   (the part of g orthogonal to g')
5. final gradient g' - alpha * g_perp, evaluated back at w (the perturbation is undone)
6. base optimiser step (SGD with its lr, momentum and weight decay)

The norms in step 4 are plain (not weight-adaptive), and a tiny eps guards every division, as
in the authors' code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

PERTURB_EPS = 1e-12


@contextlib.contextmanager
def frozen_running_stats(model: nn.Module | None) -> Iterator[None]:
    """Batch-norm running statistics must not see the perturbed forward pass twice."""
    saved: list[tuple[nn.modules.batchnorm._BatchNorm, float | None]] = []
    if model is not None:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                saved.append((module, module.momentum))
                module.momentum = 0.0
    try:
        yield
    finally:
        for module, momentum in saved:
            module.momentum = momentum


def _norm(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


class GSAM:
    """Wrap `base` (an optimiser over `params`) so `step(closure)` takes a GSAM step.

    `closure()` must zero the gradients, run forward and backward on the SAME batch each time it
    is called, and return the loss; it is called twice per step. The loss at w is returned.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        base: torch.optim.Optimizer,
        *,
        rho: float,
        alpha: float,
        adaptive: bool = True,
        model: nn.Module | None = None,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.base = base
        self.rho = float(rho)
        self.alpha = float(alpha)
        self.adaptive = bool(adaptive)
        self.model = model

    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        loss = closure()
        params = [p for p in self.params if p.grad is not None]
        if not params:
            return loss
        old_g = [p.grad.detach().clone() for p in params]
        with torch.no_grad():
            if self.adaptive:
                norm = _norm(p.abs() * g for p, g in zip(params, old_g, strict=True))
            else:
                norm = _norm(old_g)
            scale = self.rho / (norm + PERTURB_EPS)
            perturb = []
            for p, g in zip(params, old_g, strict=True):
                e = g * scale
                if self.adaptive:
                    e = e * p.pow(2)
                p.add_(e)
                perturb.append(e)
        with frozen_running_stats(self.model):
            closure()
        with torch.no_grad():
            for p, e in zip(params, perturb, strict=True):
                p.sub_(e)
            new_g = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            inner = sum((a * b).sum() for a, b in zip(old_g, new_g, strict=True))
            new_norm = _norm(new_g)
            old_norm = _norm(old_g)
            cosine = inner / (new_norm * old_norm + PERTURB_EPS)
            for p, g, gn in zip(params, old_g, new_g, strict=True):
                vertical = g - cosine * old_norm * gn / (new_norm + PERTURB_EPS)
                if p.grad is None:
                    p.grad = gn.clone()
                p.grad.add_(vertical, alpha=-self.alpha)
        self.base.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)
