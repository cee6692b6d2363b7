"""evaluate_set and the real-data baselines on a tiny dataset with a width-8 ConvNet."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tinynets import tiny_dataset

from meddistill.errors import ConfigError
from meddistill.models import ModelSpec
from meddistill.training.baselines import baseline, full_data, random_subset
from meddistill.training.config import TrainConfig
from meddistill.training.evaluate import EvalConfig, evaluate_set, resolve_lr
from meddistill.utils import make_generator

SPEC = ModelSpec(name="convnet", depth=2, width=8)


def eval_cfg(**kw) -> EvalConfig:
    base = dict(num_nets=3, epochs=4, batch_size=8, dsa=False)
    base.update(kw)
    return EvalConfig(**base)


def test_random_subset_counts_distinct_and_seeded() -> None:
    ds = tiny_dataset(n_train=(5, 7, 9))
    images, labels = random_subset(ds, 4, generator=make_generator(0))
    assert images.shape == (12, 1, 8, 8)
    assert labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    # every chosen image is a distinct training image of its class
    train = ds.train.images.flatten(1)
    for img, lab in zip(images, labels, strict=True):
        match = torch.nonzero((train == img.flatten()).all(dim=1)).flatten()
        assert match.numel() == 1 and ds.train.labels[match].item() == lab.item()
    assert len({tuple(i.flatten()[:4].tolist()) for i in images}) == 12
    again, _ = random_subset(ds, 4, generator=make_generator(0))
    other, _ = random_subset(ds, 4, generator=make_generator(1))
    assert torch.equal(images, again)
    assert not torch.equal(images, other)


def test_random_subset_too_large_names_class_and_count() -> None:
    ds = tiny_dataset(n_train=(5, 3, 9))
    with pytest.raises(ConfigError, match=r"class 'class1' \(index 1\).*has 3 training images"):
        random_subset(ds, 4, generator=make_generator(0))
    with pytest.raises(ConfigError, match="positive"):
        random_subset(ds, 0, generator=make_generator(0))


def test_full_data_is_the_train_split() -> None:
    ds = tiny_dataset()
    images, labels = full_data(ds)
    assert images is ds.train.images and labels is ds.train.labels


def test_evaluate_set_k_nets_mean_and_population_std() -> None:
    ds = tiny_dataset()
    images, labels = random_subset(ds, 3, generator=make_generator(0))
    report = evaluate_set(images, labels, ds, eval_cfg(), base_spec=SPEC, seed=1, progress=False)
    arch = report.archs["convnet"]
    assert len(arch.nets) == 3
    accs = [n.acc for n in arch.nets]
    assert all(0.0 <= a <= 1.0 for a in accs)
    assert arch.acc_mean == pytest.approx(sum(accs) / 3)
    mean = sum(accs) / 3
    assert arch.acc_std == pytest.approx((sum((a - mean) ** 2 for a in accs) / 3) ** 0.5)
    assert arch.acc_std == pytest.approx(np.std(accs))
    assert len({n.seed for n in arch.nets}) == 3
    assert report.lr == 0.01 and report.lr_source == "default"
    data = json.loads(json.dumps(report.to_dict()))
    assert data["archs"]["convnet"]["acc_mean"] == pytest.approx(arch.acc_mean)
    assert data["archs"]["convnet"]["spec"]["width"] == 8
    # same seed -> same numbers
    again = evaluate_set(images, labels, ds, eval_cfg(), base_spec=SPEC, seed=1, progress=False)
    assert [n.acc for n in again.archs["convnet"].nets] == accs
    assert [n.loss for n in again.archs["convnet"].nets] == [n.loss for n in arch.nets]


def test_evaluate_set_cross_architecture_and_soft_labels() -> None:
    ds = tiny_dataset()
    images, labels = random_subset(ds, 2, generator=make_generator(0))
    soft = torch.nn.functional.one_hot(labels, 2).float() * 0.8 + 0.1
    report = evaluate_set(
        images,
        soft,
        ds,
        eval_cfg(models=["convnet", "lenet"], num_nets=1, epochs=2),
        base_spec=SPEC,
        seed=0,
        lr=0.02,
        progress=False,
    )
    assert set(report.archs) == {"convnet", "lenet"}
    assert report.archs["lenet"].spec["name"] == "lenet"
    assert report.lr == 0.02 and report.lr_source == "learned"
    assert "convnet:" in report.summary()


def test_lr_resolution_and_bad_learned_lr() -> None:
    assert resolve_lr(None, None) == (0.01, "default")
    assert resolve_lr(None, 0.03) == (0.03, "learned")
    assert resolve_lr(0.05, 0.03) == (0.05, "config")
    ds = tiny_dataset()
    images, labels = random_subset(ds, 1, generator=make_generator(0))
    with pytest.raises(ConfigError, match="not positive"):
        evaluate_set(
            images, labels, ds, eval_cfg(), base_spec=SPEC, seed=0, lr=-1e-3, progress=False
        )


def test_evaluate_set_rejects_mismatched_images() -> None:
    ds = tiny_dataset()
    with pytest.raises(ConfigError, match="shape"):
        evaluate_set(
            torch.zeros(2, 1, 16, 16),
            torch.tensor([0, 1]),
            ds,
            eval_cfg(),
            base_spec=SPEC,
            seed=0,
            progress=False,
        )


def test_baseline_report() -> None:
    ds = tiny_dataset()
    full = TrainConfig(epochs=3, lr=0.01, batch_size=8, dsa=False)
    report = baseline(
        ds,
        base_spec=SPEC,
        ipcs=[1, 2],
        eval_cfg=eval_cfg(num_nets=2, epochs=2),
        full=full,
        seed=0,
        num_subsets=2,
        progress=False,
    )
    assert len(report["full"]["nets"]) == 1
    assert 0.0 <= report["full"]["acc_mean"] <= 1.0
    assert set(report["random"]) == {"1", "2"}
    assert report["random"]["2"]["archs"]["convnet"]["num_nets"] == 4
    assert len(report["random"]["1"]["subsets"]) == 2
    json.dumps(report)


def _with_val(ds):
    """tiny_dataset plus a val split (a copy of test with its labels rotated, so val and test
    accuracies differ and a mix-up would show)."""
    from meddistill.data.dataset import MedicalDataset, Split

    test = ds.test
    val = Split(test.images.flip(0).clone(), test.labels.flip(0).clone())
    return MedicalDataset(
        name=ds.name, splits={**ds.splits, "val": val}, class_names=ds.class_names,
        normalization=ds.normalization, source_id=ds.source_id,
    )  # fmt: skip


def test_every_network_is_scored_on_val_to_choose_and_on_test_to_report() -> None:
    from meddistill.training.evaluate import fresh_trained_network
    from meddistill.training.metrics import evaluate_model

    ds = _with_val(tiny_dataset(n_test=5))
    images, labels = random_subset(ds, 3, generator=make_generator(0))
    cfg = eval_cfg(num_nets=2)
    report = evaluate_set(images, labels, ds, cfg, base_spec=SPEC, seed=1, progress=False)
    arch = report.archs["convnet"]
    for net in arch.nets:  # the same network scored on both splits: recompute by hand
        model, _ = fresh_trained_network(
            SPEC, ds, images, labels, cfg.train_config(0.01), net_seed=net.seed, device="cpu"
        )
        assert net.val_acc == evaluate_model(model, ds.val.images, ds.val.labels)["acc"]
        assert net.acc == evaluate_model(model, ds.test.images, ds.test.labels)["acc"]
    assert arch.val_acc_mean == pytest.approx(np.mean([n.val_acc for n in arch.nets]))
    row = report.to_dict()["archs"]["convnet"]
    assert row["val_acc_mean"] == arch.val_acc_mean and row["acc_mean"] == arch.acc_mean
    assert "val acc" in report.summary() and "test acc" in report.summary()

    only_val = evaluate_set(
        images, labels, ds, cfg, base_spec=SPEC, seed=1, progress=False, splits=("val",)
    )
    nets = only_val.archs["convnet"].nets
    assert [n.val_acc for n in nets] == [n.val_acc for n in arch.nets]
    assert all(np.isnan(n.acc) and np.isnan(n.auc) for n in nets)  # test never read
    assert "test acc" not in only_val.summary()

    no_val = evaluate_set(images, labels, tiny_dataset(n_test=5), cfg, base_spec=SPEC, seed=1,
                          progress=False)  # fmt: skip
    assert all(np.isnan(n.val_acc) for n in no_val.archs["convnet"].nets)
    assert [n.acc for n in no_val.archs["convnet"].nets] == [n.acc for n in arch.nets]
    with pytest.raises(ConfigError, match="val and/or test"):
        evaluate_set(images, labels, ds, cfg, base_spec=SPEC, seed=1, splits=("train",))


def test_hard_label_evaluation_trains_on_the_argmax_and_is_recorded_only_when_set():
    soft = torch.tensor([[0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    hard = EvalConfig(hard_labels=True)
    assert hard.training_labels(soft).tolist() == [1, 0]
    assert torch.equal(EvalConfig().training_labels(soft), soft)
    assert hard.training_labels(torch.tensor([2, 0])).tolist() == [2, 0]  # indices unchanged
    # results recorded before the option existed keep their evaluation identity
    assert "hard_labels" not in EvalConfig().protocol()
    assert hard.protocol()["hard_labels"] is True
