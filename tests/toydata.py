"""Tiny 3-class datasets for tests (tests/ is on pytest's pythonpath).

shifted_toy: 8x8 single-channel images, class c shifted by +c so a network can learn something
in a few steps. noise_dataset: 8x8 noise with labels unrelated to the images, so only
memorising fits them (the privacy attacks' known answers). Everything is drawn from a
generator seeded with `seed`."""

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


def noise_split(n: int, gen: torch.Generator) -> Split:
    """8x8 noise images with labels unrelated to them: only memorising fits them."""
    return Split(torch.randn(n, 1, 8, 8, generator=gen), torch.arange(n) % 3)


def noise_dataset(n_train: int, n_val: int, seed: int = 0) -> MedicalDataset:
    gen = torch.Generator().manual_seed(seed)
    splits = {k: noise_split(n, gen) for k, n in (("train", n_train), ("val", n_val),
                                                  ("test", 9))}  # fmt: skip
    return MedicalDataset("noise", splits, ["a", "b", "c"], Normalization((0.0,), (1.0,)),
                          source_id="noise-source")  # fmt: skip
