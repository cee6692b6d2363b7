"""Coreset baselines: hand-computed herding / k-center picks, objectives, API and errors."""

import pytest
import torch

from meddistill.data.dataset import MedicalDataset, Normalization, Split
from meddistill.errors import ConfigError
from meddistill.methods import coresets
from meddistill.models import ModelSpec, build_model
from meddistill.training.baselines import random_subset
from meddistill.utils import make_generator

# Five 2-D points of one class; mean (1.6, 1.4). Worked by hand:
#   herding  t=1: squared distances to the mean A 4.52, B 7.72, C 5.12, D 0.52, E 4.52 -> D
#            t=2: (D + x)/2 vs mean: A 2.02, B 1.62, C 1.57, E 0.52 -> E
#            t=3: (D + E + x)/3: A 0.076, B 1.142, C 0.942 -> A;  t=4: B 0.32, C 0.4825 -> B
#   k-center first: closest to the mean -> D; squared distances to D: A 2, B 10, C 5, E 8 -> B;
#            nearest-centre distances then A 2, C 5, E 8 -> E; then A 2, C 5 -> C; then A.
POINTS = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 3.0], [1.0, 1.0], [3.0, 3.0]])
HERDING = [3, 4, 0, 1, 2]  # A=0, B=1, C=2, D=3, E=4
KCENTER = [3, 1, 4, 2, 0]


def _toy(labels: torch.Tensor, size: int = 4, seed: int = 0) -> MedicalDataset:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(labels.shape[0], 1, size, size, generator=gen)
    test = Split(torch.randn(4, 1, size, size, generator=gen), torch.tensor([0, 1, 0, 1]))
    return MedicalDataset(
        "toy", {"train": Split(images, labels), "test": test}, ["a", "b"],
        Normalization((0.0,), (1.0,)), source_id="toy-src",
    )  # fmt: skip


def _interleaved():
    """Class 0 at dataset positions 0, 2, 4, 6, 8 (POINTS), class 1 at 1, 3, 5, 7, 9."""
    labels = torch.tensor([0, 1] * 5)
    feats = torch.zeros(10, 2)
    feats[0::2] = POINTS
    feats[1::2] = POINTS * -1.0 + 10.0  # class 1: a mirrored copy, same selection order
    return _toy(labels), feats


def test_herding_order_matches_hand_computation():
    assert coresets.herding_order(POINTS, 5).tolist() == HERDING


def test_kcenter_order_matches_hand_computation():
    assert coresets.kcenter_order(POINTS, 5).tolist() == KCENTER


def test_select_maps_per_class_picks_to_dataset_indices():
    ds, feats = _interleaved()
    images, labels, index = coresets.select_coreset(
        "herding", ds, 3, features=feats, generator=None
    )
    expected0 = [2 * i for i in HERDING[:3]]  # class 0 sits at even positions
    expected1 = [2 * i + 1 for i in HERDING[:3]]
    assert index.tolist() == expected0 + expected1
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(images, ds.train.images[index])
    _, _, kc = coresets.select_coreset("kcenter", ds, 2, features=feats, generator=None)
    assert kc.tolist() == [2 * KCENTER[0], 2 * KCENTER[1], 2 * KCENTER[0] + 1, 2 * KCENTER[1] + 1]


def test_herding_and_kcenter_beat_random_on_their_objectives():
    gen = make_generator(3)
    feats = torch.randn(300, 2, generator=gen)
    k = 12
    rand = torch.randperm(300, generator=make_generator(4))[:k]
    herd = coresets.herding_order(feats, k)
    kc = coresets.kcenter_order(feats, k)

    def mean_gap(sel):
        return float((feats[sel].mean(0) - feats.mean(0)).norm())

    def cover_radius(sel):
        return float(torch.cdist(feats, feats[sel]).min(dim=1).values.max())

    assert mean_gap(herd) < 0.25 * mean_gap(rand)
    assert cover_radius(kc) < 0.8 * cover_radius(rand)
    assert len(set(herd.tolist())) == k and len(set(kc.tolist())) == k


def test_random_coreset_equals_random_subset_for_one_seed():
    ds = _toy(torch.tensor([0, 1] * 6))
    images, labels, index = coresets.select_coreset("random", ds, 3, generator=make_generator(7))
    ref_images, ref_labels = random_subset(ds, 3, generator=make_generator(7))
    assert torch.equal(images, ref_images) and torch.equal(labels, ref_labels)
    again = coresets.select_coreset("random", ds, 3, generator=make_generator(7))[2]
    assert torch.equal(index, again)


def test_features_from_model_equal_one_big_batch_and_drive_selection():
    ds = _toy(torch.tensor([0, 1] * 6), size=8)
    model = build_model(
        ModelSpec(depth=1, width=4), in_channels=1, num_classes=2, image_size=8, seed=0
    )
    f = coresets.features(model, ds.train.images, batch=5)
    with torch.no_grad():
        full = model.embed(ds.train.images).flatten(1)
    assert f.shape == (12, 4 * 4 * 4)
    assert torch.allclose(f, full, atol=1e-6)
    by_model = coresets.select_coreset("kcenter", ds, 2, model=model, generator=None)[2]
    by_feats = coresets.select_coreset("kcenter", ds, 2, features=f, generator=None)[2]
    assert torch.equal(by_model, by_feats)


def test_feature_network_is_seeded():
    ds = _toy(torch.tensor([0, 1] * 6), size=8)
    spec = ModelSpec(depth=1, width=4)
    a = coresets.feature_network(ds, spec, epochs=1, seed=5, batch_size=4)
    b = coresets.feature_network(ds, spec, epochs=1, seed=5, batch_size=4)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_coreset_set_is_a_synthetic_set():
    ds, feats = _interleaved()
    syn = coresets.coreset_set("herding", ds, 2, features=feats, generator=None)
    assert syn.syn_lr == 0.01 and syn.ipc() == 2
    assert syn.meta["method"] == "coreset-herding"
    assert syn.meta["train_indices"] == [6, 8, 7, 9]
    assert syn.images.shape == (4, 1, 4, 4)


def test_errors_are_config_errors():
    ds, feats = _interleaved()
    with pytest.raises(ConfigError, match="larger than the smallest class"):
        coresets.select_coreset("herding", ds, 6, features=feats, generator=None)
    with pytest.raises(ConfigError, match="unknown coreset"):
        coresets.select_coreset("kmeans", ds, 1, features=feats, generator=None)
    with pytest.raises(ConfigError, match="features="):
        coresets.select_coreset("herding", ds, 1, generator=None)
    with pytest.raises(ConfigError, match="generator"):
        coresets.select_coreset("random", ds, 1, generator=None)
    with pytest.raises(ConfigError, match="shape"):
        coresets.select_coreset("kcenter", ds, 1, features=feats[:5], generator=None)
    with pytest.raises(ConfigError, match="positive integer"):
        coresets.select_coreset("random", ds, 0, generator=make_generator(0))
