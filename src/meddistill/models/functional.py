"""Flat parameter vectors for torch.func: the currency of trajectory matching.

Expert snapshots, student weights and matching losses all live in ONE 1-D vector holding every
parameter of a network, concatenated in `named_parameters()` order (the reference convention, so
"element i" means the same thing everywhere). These helpers convert between that vector and a
module, and run the module as a pure function of (vector, input) so gradients reach both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from meddistill.errors import ConfigError


@dataclass(frozen=True)
class ParamLayout:
    """Where each named parameter sits in the flat vector."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    numels: tuple[int, ...]
    offsets: tuple[int, ...]

    @classmethod
    def from_model(cls, model: nn.Module) -> ParamLayout:
        names, shapes, numels, offsets = [], [], [], []
        offset = 0
        for name, p in model.named_parameters():
            names.append(name)
            shapes.append(tuple(p.shape))
            numels.append(p.numel())
            offsets.append(offset)
            offset += p.numel()
        return cls(tuple(names), tuple(shapes), tuple(numels), tuple(offsets))

    @property
    def total(self) -> int:
        """Length of the flat vector."""
        return sum(self.numels)

    def slices(self) -> list[tuple[str, slice]]:
        """(name, slice into the flat vector) per parameter, in order."""
        return [
            (n, slice(o, o + k))
            for n, o, k in zip(self.names, self.offsets, self.numels, strict=True)
        ]

    def slice_of(self, name: str) -> slice:
        for n, s in self.slices():
            if n == name:
                return s
        raise KeyError(f"no parameter named '{name}'; known: {', '.join(self.names)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, stored with trajectory buffers so loads can check compatibility."""
        return {"names": list(self.names), "shapes": [list(s) for s in self.shapes]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParamLayout:
        names = tuple(str(n) for n in data["names"])
        shapes = tuple(tuple(int(d) for d in s) for s in data["shapes"])
        numels, offsets, offset = [], [], 0
        for s in shapes:
            k = 1
            for d in s:
                k *= d
            numels.append(k)
            offsets.append(offset)
            offset += k
        return cls(names, shapes, tuple(numels), tuple(offsets))


def param_names_and_slices(model: nn.Module) -> list[tuple[str, slice]]:
    """(parameter name, slice of the flat vector) for each parameter of `model`."""
    return ParamLayout.from_model(model).slices()


def count_params(model: nn.Module) -> int:
    """Number of scalar parameters (the length of the flat vector)."""
    return sum(p.numel() for p in model.parameters())


def flatten_params(model: nn.Module) -> torch.Tensor:
    """A detached 1-D copy of every parameter, in `named_parameters()` order."""
    params = [p.detach().reshape(-1) for p in model.parameters()]
    if not params:
        return torch.zeros(0)
    return torch.cat(params)


def flatten_grads(model: nn.Module) -> torch.Tensor:
    """The `.grad` of every parameter as one 1-D vector (zeros where a grad is None)."""
    parts = [
        (p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1)
        for p in model.parameters()
    ]
    if not parts:
        return torch.zeros(0)
    return torch.cat(parts)


def _check_flat(flat: torch.Tensor, layout: ParamLayout) -> None:
    if flat.dim() != 1 or flat.numel() != layout.total:
        raise ConfigError(
            f"flat parameter vector has shape {tuple(flat.shape)} but the network needs "
            f"({layout.total},); was it made for another architecture or dataset?"
        )


def unflatten(flat: torch.Tensor, layout: ParamLayout) -> dict[str, torch.Tensor]:
    """name -> view of `flat` with the parameter's shape; differentiable (no copies)."""
    _check_flat(flat, layout)
    return {
        n: flat.narrow(0, o, k).view(s)
        for n, s, k, o in zip(
            layout.names, layout.shapes, layout.numels, layout.offsets, strict=True
        )
    }


def functional_forward(
    model: nn.Module,
    flat: torch.Tensor,
    x: torch.Tensor,
    buffers: dict[str, torch.Tensor] | None = None,
    *,
    layout: ParamLayout | None = None,
) -> torch.Tensor:
    """model(x) with the parameters taken from `flat` instead of the module.

    Differentiable w.r.t. `flat` and `x`, to any order (create_graph=True works, so HVPs and
    unrolled inner loops are possible). `buffers` default to the module's own (batch-norm running
    stats, which batch norm in training mode updates in place). Pass a precomputed `layout` in
    hot loops.
    """
    layout = layout if layout is not None else ParamLayout.from_model(model)
    params = unflatten(flat, layout)
    if buffers is None:
        buffers = dict(model.named_buffers())
    return torch.func.functional_call(model, (params, buffers), (x,))


@torch.no_grad()
def load_flat_(model: nn.Module, flat: torch.Tensor) -> nn.Module:
    """Copy a flat vector into the module's parameters in place (e.g. to evaluate a snapshot)."""
    layout = ParamLayout.from_model(model)
    views = unflatten(flat.detach(), layout)
    for name, p in model.named_parameters():
        p.copy_(views[name])
    return model


def _centres_each_channel(module: nn.Module) -> bool:
    """True for norms that subtract a per-channel mean, which cancels a preceding per-channel bias."""
    if isinstance(module, nn.GroupNorm):
        return module.num_groups == module.num_channels
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def frozen_param_names(model: nn.Module) -> list[str]:
    """Biases that can never receive a gradient: a conv/linear bias fed straight into a norm
    that removes each channel's mean (instance norm = GroupNorm(C, C), or batch norm in training).

    Their trajectories are constant, so per-element matching (HoP-TM's easy-to-complex mask)
    would count them as always "easy"; the matching engine excludes them with `frozen_mask`.
    """
    names = {id(m): n for n, m in model.named_modules()}
    frozen = []
    for container in model.modules():
        if not isinstance(container, nn.Sequential):
            continue
        children = list(container.children())
        for a, b in zip(children, children[1:], strict=False):
            bias = getattr(a, "bias", None)
            if (
                isinstance(a, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))
                and isinstance(bias, nn.Parameter)
                and _centres_each_channel(b)
            ):
                prefix = names[id(a)]
                frozen.append(f"{prefix}.bias" if prefix else "bias")
    return frozen


def frozen_mask(model: nn.Module) -> torch.Tensor:
    """Bool vector over the flat parameters: True where the element cannot move in training."""
    layout = ParamLayout.from_model(model)
    mask = torch.zeros(layout.total, dtype=torch.bool)
    for name in frozen_param_names(model):
        mask[layout.slice_of(name)] = True
    return mask
