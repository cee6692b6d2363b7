"""Seeded parameter initialisation: PyTorch's default distributions, drawn from a given generator.

PyTorch initialises layers from the global RNG when they are constructed; the references then
reseed that RNG from the clock, so no run reproduces. Here models are built on the meta device
(nothing drawn) and every parameter is filled from one explicit generator, in module order.
"""

from __future__ import annotations

import math

import torch
from torch import nn

_LINEAR_LIKE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@torch.no_grad()
def init_parameters_(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Fill every parameter and buffer of `model` in place; same generator state -> same values.

    Conv/linear weights: kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in));
    their biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in)); norm weights 1, biases 0, running stats
    reset. Raises TypeError for a module with parameters this function does not know.
    """
    done: set[int] = set()
    for module in model.modules():
        if isinstance(module, _LINEAR_LIKE):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
            done.add(id(module.weight))
            if module.bias is not None:
                fan_in = module.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)
                done.add(id(module.bias))
        elif isinstance(module, _NORMS):
            for name in ("weight", "bias"):
                p = getattr(module, name, None)
                if p is not None:
                    (nn.init.ones_ if name == "weight" else nn.init.zeros_)(p)
                    done.add(id(p))
            if isinstance(module, nn.modules.batchnorm._NormBase):
                module.reset_running_stats()
                done.update(id(b) for b in module.buffers(recurse=False))
    missed = [n for n, p in model.named_parameters() if id(p) not in done]
    missed += [n for n, b in model.named_buffers() if id(b) not in done]
    if missed:
        raise TypeError(f"no seeded initialisation known for {', '.join(missed)}")
    return model
