"""The loss-threshold membership attack (Yeom et al. 2018) on a whole pipeline.

Members are a sample of the train split (everything the pipeline consumed), non-members as
many held-out images (never seen by it). K networks are trained on what the pipeline outputs
(a synthetic set, a random real subset, the full train split); each image is scored by the
loss of its true label averaged over the K networks, and lower loss reads as "member". The
maths that turns scores into AUC and TPR at low FPR is in privacy/attack.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from meddistill.data.dataset import MedicalDataset, Split
from meddistill.errors import NumericalError
from meddistill.models import ModelSpec
from meddistill.privacy.attack import AttackStats, attack_stats
from meddistill.training.config import TrainConfig
from meddistill.training.evaluate import fresh_trained_network
from meddistill.training.metrics import hard_labels, predict_logits
from meddistill.utils import derive_seed, make_generator


@dataclass
class Scored:
    """Images an attack scores, with their true labels and indices in their split."""

    images: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor


def attack_sample(
    dataset: MedicalDataset, heldout: str, count: int, generator: torch.Generator
) -> tuple[Scored, Scored]:
    """(members, non-members): `count` train and as many `heldout` images (fewer when either
    split is smaller: the two stay balanced), drawn without replacement with `generator`."""
    train, other = dataset.train, dataset.splits[heldout]
    n = min(count, len(train), len(other))

    def draw(split: Split) -> Scored:
        index = torch.randperm(len(split), generator=generator)[:n].sort().values
        at = index.to(split.images.device)
        return Scored(split.images[at], split.labels[at], index)

    return draw(train), draw(other)


@torch.no_grad()
def true_label_losses(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Per-image cross-entropy of the true class under `model` (eval mode), float64."""
    logits = predict_logits(model, images).float()
    loss = F.cross_entropy(logits, hard_labels(labels).to(logits.device), reduction="none")
    return loss.double().cpu().numpy()


def mean_losses(models: list[nn.Module], scored: Scored) -> np.ndarray:
    """The true-label loss of each image, averaged over `models`."""
    losses = np.mean([true_label_losses(m, scored.images, scored.labels) for m in models], axis=0)
    if not np.isfinite(losses).all():
        raise NumericalError(
            "a network of the attack gives a non-finite loss on real images; train it with a "
            "smaller learning rate (eval.lr) or fewer epochs"
        )
    return losses


def loss_attack(
    models: list[nn.Module],
    members: Scored,
    nonmembers: Scored,
    *,
    bootstrap: int,
    seed: int,
) -> AttackStats:
    """The attack's numbers: score = minus the mean true-label loss (higher = member)."""
    return attack_stats(
        -mean_losses(models, members),
        -mean_losses(models, nonmembers),
        generator=make_generator(seed),
        bootstrap=bootstrap,
    )


def trained_networks(
    dataset: MedicalDataset,
    spec: ModelSpec,
    images: torch.Tensor,
    labels: torch.Tensor,
    train_cfg: TrainConfig,
    *,
    count: int,
    seed: int,
    device: torch.device,
    progress: str | bool = False,
) -> list[nn.Module]:
    """`count` fresh networks of `spec` trained on (images, labels), network k from
    derive_seed(seed, k): the evaluation protocol's training, one network at a time."""
    models = []
    for k in range(count):
        label = f"{progress} {k + 1}/{count}" if isinstance(progress, str) else progress
        model, _ = fresh_trained_network(
            spec, dataset, images.to(device), labels.to(device), train_cfg,
            net_seed=derive_seed(seed, k), device=device, progress=label,
        )  # fmt: skip
        models.append(model)
    return models
