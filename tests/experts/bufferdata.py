"""A tiny MedicalDataset for the expert-buffer tests."""

from __future__ import annotations

import torch

from meddistill.data.dataset import MedicalDataset, Normalization, Split


def make_tiny_dataset(name: str = "tiny", source_id: str = "md5-tiny") -> MedicalDataset:
    """2 classes, 1 x 8 x 8 images: a fixed pattern per class plus seeded noise."""
    patterns = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(99))
    gen = torch.Generator().manual_seed(7)
    train_labels = torch.arange(2).repeat_interleave(12)
    test_labels = torch.arange(2).repeat_interleave(6)

    def make(labels: torch.Tensor) -> torch.Tensor:
        return patterns[labels] + 0.7 * torch.randn(labels.shape[0], 1, 8, 8, generator=gen)

    return MedicalDataset(
        name=name,
        splits={
            "train": Split(make(train_labels), train_labels),
            "test": Split(make(test_labels), test_labels),
        },
        class_names=["a", "b"],
        normalization=Normalization((0.5,), (0.25,)),
        source_id=source_id,
    )
