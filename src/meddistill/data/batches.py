"""Minibatches straight from in-memory tensors (no DataLoader, no worker processes).

The whole dataset already sits on the device, so a batch is one index_select: no host
round trip, no collation, and the order comes from an explicit generator.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from meddistill.data.dataset import Split
from meddistill.errors import ConfigError


def batch_order(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """A permutation of range(n) drawn from `generator` (identity when None), on `device`."""
    if generator is None:
        return torch.arange(n, device=device)
    perm = torch.randperm(n, generator=generator, device=generator.device)
    return perm.to(device)


def iter_batches(
    data: Split | tuple[torch.Tensor, torch.Tensor],
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images, labels) minibatches of one pass over `data`.

    With a generator the order is a fresh permutation drawn from it (shuffled epoch); without
    one the order is the stored order. `drop_last` skips a final short batch.
    """
    images, labels = (data.images, data.labels) if isinstance(data, Split) else data
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    n = int(labels.shape[0])
    order = batch_order(n, generator, labels.device)
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        idx = order[i : i + batch_size]
        yield images.index_select(0, idx), labels.index_select(0, idx)
