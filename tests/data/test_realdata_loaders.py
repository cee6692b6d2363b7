"""Loaders on the real, read-only datasets in ../shared/data (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from meddistill.data import load_dataset

pytestmark = pytest.mark.realdata


def test_bloodmnist_official_file(shared_data: Path) -> None:
    ds = load_dataset("bloodmnist", root=shared_data)
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 11959, "val": 1712, "test": 3421}
    assert ds.num_classes == 8 and ds.image_shape == (3, 28, 28)
    assert ds.source_id == "7053d0359d879ad8a5505303e11de1dc"
    assert ds.info["md5_checked"] is True
    # train statistics normalise the train split to mean 0 and std 1 per channel
    x = ds.train.images.double()
    assert x.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (x.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-4
    again = load_dataset("bloodmnist", root=shared_data)
    assert again.info["md5_remembered"] is True


def test_busi_folder_and_cache(shared_data: Path) -> None:
    first = load_dataset("busi", root=shared_data)
    assert first.class_names == ["benign", "malignant", "normal"]
    assert len(first.train) + len(first.val) + len(first.test) == 780
    by_split = [first.class_counts(s) for s in ("train", "val", "test")]
    assert [sum(c) for c in zip(*by_split, strict=True)] == [437, 210, 133]
    assert first.class_counts("val") == [44, 21, 13]  # 10 % of each class, carved from train
    assert first.image_shape == (3, 112, 112) and first.info["cache"] == "miss"
    second = load_dataset("busi", root=shared_data)
    assert second.info["cache"] == "hit"
    assert torch.equal(first.train.images, second.train.images)
    assert second.source_id == first.source_id
