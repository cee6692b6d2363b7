"""Baselines and evaluation on the real BreastMNIST file (skipped when ../shared/data is absent)."""

from __future__ import annotations

import math

import pytest

from meddistill.data.registry import load_dataset
from meddistill.errors import ConfigError
from meddistill.models import ModelSpec
from meddistill.training.baselines import random_subset
from meddistill.training.evaluate import EvalConfig, evaluate_set
from meddistill.utils import make_generator

pytestmark = pytest.mark.realdata


def test_random_subset_and_evaluation_on_breastmnist(shared_data) -> None:
    ds = load_dataset("breastmnist", root=shared_data / "medmnist")
    smallest = min(ds.class_counts("train"))
    with pytest.raises(ConfigError, match=f"has {smallest} training images"):
        random_subset(ds, smallest + 1, generator=make_generator(0))
    images, labels = random_subset(ds, 5, generator=make_generator(0))
    assert images.shape == (10, *ds.image_shape)
    report = evaluate_set(
        images,
        labels,
        ds,
        EvalConfig(num_nets=1, epochs=5),
        base_spec=ModelSpec(name="convnet", depth=3, width=8),
        seed=0,
        progress=False,
    )
    net = report.archs["convnet"].nets[0]
    assert 0.0 <= net.acc <= 1.0
    assert not math.isnan(net.auc) and 0.0 <= net.auc <= 1.0  # both classes are in the test split
