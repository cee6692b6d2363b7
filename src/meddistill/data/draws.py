"""Real images per class: the one draw behind every initialisation, random subset and coreset.

Why one: "k random real images of each class" decides which patients' images a synthetic set
starts from and which images a baseline row trains on. The same seed must give the same images
whichever command drew them, so the draw and its IPC check live here once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from meddistill.data.dataset import MedicalDataset
from meddistill.errors import ConfigError


def check_ipc(dataset: MedicalDataset, ipc: int) -> None:
    """Refuse, before any work, an IPC that is not a positive integer or that a class of the
    train split cannot supply."""
    if isinstance(ipc, bool) or int(ipc) != ipc or ipc < 1:
        raise ConfigError(f"ipc must be a positive integer, got {ipc!r}")
    counts = dataset.class_counts("train")
    smallest = min(counts)
    if smallest < ipc:
        name = dataset.class_names[counts.index(smallest)]
        raise ConfigError(
            f"ipc {ipc} is larger than the smallest class of {dataset.name} "
            f"({smallest} train images), class '{name}'; choose ipc <= {smallest}"
        )


def draw_per_class(
    candidates: Sequence[torch.Tensor], k: int, generator: torch.Generator
) -> torch.Tensor:
    """For each class in turn, k of its candidate indices (all when it has fewer), in a random
    order drawn from `generator`; concatenated class by class."""
    chosen = []
    for idx in candidates:
        perm = torch.randperm(idx.numel(), generator=generator, device=generator.device)
        chosen.append(idx[perm[:k].to(idx.device)])
    return torch.cat(chosen)


def real_per_class(
    dataset: MedicalDataset,
    k: int,
    generator: torch.Generator,
    candidates: Sequence[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """k real train images per class (images as float32 copies, int64 labels), ordered by class;
    `candidates` narrows each class's pool (DATM's correctly classified images)."""
    pool = candidates if candidates is not None else dataset.class_indices("train")
    index = draw_per_class(pool, k, generator).to(dataset.train.images.device)
    train = dataset.train
    return train.images.index_select(0, index).float().clone(), train.labels[index].clone()
