"""Tiny seeded networks and data for the training tests (no dependency on models/)."""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """conv3x3 -> GroupNorm -> ReLU -> avgpool2 -> linear (a ConvNet-1), initialised from a seed."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        width: int = 4,
        size: int = 8,
        seed: int = 0,
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
        self.norm = nn.GroupNorm(width, width, affine=True)
        self.fc = nn.Linear(width * (size // 2) ** 2, num_classes)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) / max(1, p[0].numel()) ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.avg_pool2d(torch.relu(self.norm(self.conv(x))), 2)
        return self.fc(h.flatten(1))


def tiny_data(
    n_per_class: int = 16, num_classes: int = 2, size: int = 8, channels: int = 1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Classes differ by a fixed class-specific spatial pattern; `seed` draws only the noise."""
    patterns = torch.randn(
        num_classes, channels, size, size, generator=torch.Generator().manual_seed(99)
    )
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    noise = torch.randn(labels.shape[0], channels, size, size, generator=gen) * 0.7
    return patterns[labels] + noise, labels


def tiny_dataset(
    n_train: tuple[int, ...] = (12, 12), n_test: int = 6, size: int = 8, name: str = "tiny"
):
    """A MedicalDataset of `len(n_train)` classes with the given train counts per class."""
    from meddistill.data.dataset import MedicalDataset, Normalization, Split

    num_classes = len(n_train)
    patterns = torch.randn(num_classes, 1, size, size, generator=torch.Generator().manual_seed(99))
    gen = torch.Generator().manual_seed(7)
    train_labels = torch.cat([torch.full((n,), c) for c, n in enumerate(n_train)])
    test_labels = torch.arange(num_classes).repeat_interleave(n_test)

    def make(labels: torch.Tensor) -> torch.Tensor:
        return patterns[labels] + 0.7 * torch.randn(labels.shape[0], 1, size, size, generator=gen)

    return MedicalDataset(
        name=name,
        splits={
            "train": Split(make(train_labels), train_labels),
            "test": Split(make(test_labels), test_labels),
        },
        class_names=[f"class{c}" for c in range(num_classes)],
        normalization=Normalization((0.5,), (0.25,)),
        source_id=f"md5-{name}",
    )
