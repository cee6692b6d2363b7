"""Features for t-SNE: one network per set, all from the same initial weights and test images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meddistill.data.dataset import MedicalDataset, Normalization, Split
from meddistill.errors import ConfigError
from meddistill.models import ModelSpec, build_model
from meddistill.report.analyses import embed_features
from meddistill.report.features import TrainingSet, features_of_sets, stratified_test_sample
from meddistill.training.evaluate import EvalConfig

SPEC = ModelSpec(name="convnet", depth=1, width=4)
EVAL = EvalConfig(num_nets=1, epochs=2, batch_size=8, dsa=False)


def toy_dataset() -> MedicalDataset:
    gen = torch.Generator().manual_seed(0)
    train_labels = torch.arange(2).repeat_interleave(8)
    test_labels = torch.tensor([0] * 5 + [1] * 3)
    return MedicalDataset(
        name="toy",
        splits={
            "train": Split(torch.randn(16, 1, 8, 8, generator=gen), train_labels),
            "test": Split(torch.randn(8, 1, 8, 8, generator=gen), test_labels),
        },
        class_names=["a", "b"],
        normalization=Normalization((0.5,), (0.25,)),
        source_id="toy",
    )


def test_embed_features_equals_embed_and_restores_the_mode() -> None:
    model = build_model(SPEC, in_channels=1, num_classes=2, image_size=8, seed=3)
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    out = embed_features(model, x, batch_size=2)
    assert out.dtype == np.float64 and out.shape == (5, 4 * 4 * 4)
    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(out, model.embed(x).double().numpy(), rtol=1e-6)
    model.train()
    embed_features(model, x)
    assert model.training


def test_stratified_sample_takes_the_same_count_per_class_where_possible() -> None:
    ds = toy_dataset()
    images, labels = stratified_test_sample(ds, 6, torch.Generator().manual_seed(0))
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    _, few = stratified_test_sample(ds, 10, torch.Generator().manual_seed(0))
    assert few.tolist() == [0] * 5 + [1] * 3  # class b has only 3 test images
    assert images.shape == (6, 1, 8, 8)


def test_features_differ_only_by_the_training_set() -> None:
    ds = toy_dataset()
    a = TrainingSet(ds.train.images[[0, 8]], torch.tensor([0, 1]), lr=0.05)
    b = TrainingSet(ds.train.images[[1, 9]], torch.tensor([0, 1]), lr=0.05)
    feats, labels = features_of_sets(
        {"A": a, "A again": a, "B": b}, ds, SPEC, EVAL, seed=0, num_points=6
    )
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert feats["A"].shape == (6, 64)
    np.testing.assert_array_equal(feats["A"], feats["A again"])  # same weights, same images
    assert not np.allclose(feats["A"], feats["B"])
    again, _ = features_of_sets({"A": a}, ds, SPEC, EVAL, seed=0, num_points=6)
    np.testing.assert_array_equal(again["A"], feats["A"])
    with pytest.raises(ConfigError, match="no sets"):
        features_of_sets({}, ds, SPEC, EVAL, seed=0)
