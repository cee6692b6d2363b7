"""Accuracy, AUC and a whole-split evaluation: the numbers every table in this field reports."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn


def hard_labels(labels: torch.Tensor) -> torch.Tensor:
    """Class indices from int labels [N] or soft labels [N, C] (argmax)."""
    return labels.argmax(dim=1) if labels.dim() == 2 else labels


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy; soft labels [N, C] are target probabilities (soft cross-entropy)."""
    if labels.dim() == 2:
        return torch.sum(-labels * F.log_softmax(logits, dim=1), dim=1).mean()
    return F.cross_entropy(logits, labels)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction (0..1) of samples whose arg-max logit is the (arg-max) label."""
    if labels.shape[0] == 0:
        return math.nan
    correct = (logits.argmax(dim=1) == hard_labels(labels)).sum()
    return float(correct.item()) / labels.shape[0]


def auc(probs: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    """Area under the ROC curve, as MedMNIST reports it.

    Two classes: the ordinary AUC of the positive-class (index 1) probability. More classes: the
    macro average of the one-vs-rest AUCs over softmax probabilities [N, C].

    Returns nan when some class has no sample in `labels` (a tiny or unlucky test split): its
    one-vs-rest AUC is undefined (no positives to rank), and averaging over the remaining
    classes would silently change what the number means, so no number is given.
    """
    p = probs.detach().cpu().double().numpy() if isinstance(probs, torch.Tensor) else probs
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else labels
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y)
    if y.ndim == 2:
        y = y.argmax(axis=1)
    num_classes = p.shape[1]
    present = np.unique(y)
    if len(present) < num_classes or len(y) == 0:
        return math.nan
    if num_classes == 2:
        return float(roc_auc_score(y, p[:, 1]))
    p = p / p.sum(axis=1, keepdims=True)
    return float(
        roc_auc_score(y, p, multi_class="ovr", average="macro", labels=np.arange(num_classes))
    )


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits of `model` in eval mode over all images, in batches; the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        chunks = [model(images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(chunks) if chunks else images.new_zeros((0, 0))


@torch.no_grad()
def evaluate_model(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512
) -> dict[str, float]:
    """Accuracy (0..1), AUC and mean cross-entropy of `model` on a split, without gradients."""
    logits = predict_logits(model, images, batch_size).float()
    labels = labels.to(logits.device)
    return {
        "acc": accuracy(logits, labels),
        "auc": auc(torch.softmax(logits, dim=1), labels),
        "loss": float(classification_loss(logits, labels).item()),
    }
