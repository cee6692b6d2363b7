"""A tiny 3-class dataset for the matching and method tests (tests/ is on pytest's pythonpath).

8x8 single-channel images, class c shifted by +c so a network can learn something in a few
steps; everything drawn from a generator seeded with `seed`."""

from __future__ import annotations

import torch

from meddistill.data.dataset import MedicalDataset, Normalization, Split


def shifted_toy(seed: int = 0, n_train: int = 60, n_test: int = 30) -> MedicalDataset:
    gen = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        y = torch.arange(n) % 3
        return Split(torch.randn(n, 1, 8, 8, generator=gen) + y.view(-1, 1, 1, 1).float(), y)

    return MedicalDataset(
        "toy",
        {"train": split(n_train), "test": split(n_test)},
        ["a", "b", "c"],
        Normalization((0.0,), (1.0,)),
        source_id="toy-source",
    )
