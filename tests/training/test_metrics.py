"""Accuracy, AUC (binary, multi-class, absent class) and evaluate_model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from tinynets import TinyNet, tiny_data

from meddistill.training.metrics import accuracy, auc, classification_loss, evaluate_model


def test_accuracy_hand_values() -> None:
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    assert accuracy(logits, torch.tensor([0, 1, 1, 1])) == 0.75
    soft = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.3, 0.7]])
    assert accuracy(logits, soft) == 0.75


def test_binary_auc_uses_positive_class_probability() -> None:
    # positives (label 1) at p1 = 0.8, 0.4; negatives at 0.3, 0.6 -> 3 of 4 pairs ordered: 0.75
    p1 = torch.tensor([0.8, 0.4, 0.3, 0.6])
    probs = torch.stack([1 - p1, p1], dim=1)
    y = torch.tensor([1, 1, 0, 0])
    assert auc(probs, y) == pytest.approx(0.75)


def test_multiclass_auc_is_macro_one_vs_rest_like_sklearn() -> None:
    gen = torch.Generator().manual_seed(3)
    probs = torch.softmax(torch.randn(60, 4, generator=gen), dim=1)
    y = torch.arange(4).repeat(15)
    ours = auc(probs, y)
    by_hand = np.mean([roc_auc_score((y == c).numpy(), probs[:, c].numpy()) for c in range(4)])
    assert ours == pytest.approx(by_hand, rel=1e-9)
    assert ours == pytest.approx(
        roc_auc_score(y.numpy(), probs.double().numpy(), multi_class="ovr")
    )


def test_auc_is_nan_when_a_class_is_absent() -> None:
    probs = torch.softmax(torch.randn(6, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    assert math.isnan(auc(probs, torch.tensor([0, 1, 0, 1, 0, 1])))
    two = torch.tensor([[0.3, 0.7], [0.6, 0.4]])
    assert math.isnan(auc(two, torch.tensor([1, 1])))


def test_soft_cross_entropy_hand_value_and_one_hot_equivalence() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax = (0.25, 0.75)
    soft = torch.tensor([[0.5, 0.5]])
    assert classification_loss(logits, soft).item() == pytest.approx(
        -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    )
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 3, generator=gen)
    hard = torch.tensor([0, 2, 1, 1, 0])
    one_hot = torch.nn.functional.one_hot(hard, 3).float()
    assert classification_loss(logits, one_hot).item() == pytest.approx(
        classification_loss(logits, hard).item(), rel=1e-6
    )


def test_evaluate_model_batches_agree_and_mode_restored() -> None:
    images, labels = tiny_data(n_per_class=10)
    model = TinyNet(seed=2)
    model.train()
    small = evaluate_model(model, images, labels, batch_size=3)
    whole = evaluate_model(model, images, labels, batch_size=512)
    assert model.training
    assert small["acc"] == whole["acc"]
    assert small["auc"] == pytest.approx(whole["auc"], rel=1e-6)
    assert small["loss"] == pytest.approx(whole["loss"], rel=1e-5)
    with torch.no_grad():
        logits = model(images)
    assert whole["acc"] == accuracy(logits, labels)
    assert whole["loss"] == pytest.approx(
        torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-5
    )
