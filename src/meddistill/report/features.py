"""Features of real test images from networks trained on each synthetic set (for t-SNE).

PTM Fig. 7 compares how well networks trained on different synthetic sets separate the real
classes. Every set trains a network of the same architecture from the SAME initial weights
and batch seed, and all embed the SAME real test images, so the panels differ only by the set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from meddistill.data.dataset import MedicalDataset
from meddistill.errors import ConfigError
from meddistill.models import ModelSpec
from meddistill.report.analyses import embed_features
from meddistill.training.evaluate import EvalConfig, fresh_trained_network, resolve_lr, spec_for
from meddistill.utils import derive_seed, make_generator


@dataclass
class TrainingSet:
    """A set to train on: images and labels as the engine stores them, and its learned lr."""

    images: torch.Tensor
    labels: torch.Tensor
    lr: float | None = None


def stratified_test_sample(
    dataset: MedicalDataset, num_points: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A class-stratified random sample of the test split (at most num_points images, the
    same number per class where the classes allow), in class order."""
    test = dataset.test
    labels = test.labels.cpu()
    per_class = max(1, num_points // dataset.num_classes)
    picks = []
    for c in range(dataset.num_classes):
        idx = torch.nonzero(labels == c).flatten()
        order = torch.randperm(idx.numel(), generator=generator)
        picks.append(idx[order[:per_class]])
    chosen = torch.cat(picks)
    return test.images[chosen.to(test.images.device)], labels[chosen]


def features_of_sets(
    sets: Mapping[str, TrainingSet],
    dataset: MedicalDataset,
    base_spec: ModelSpec,
    eval_cfg: EvalConfig,
    *,
    seed: int,
    arch: str = "convnet",
    num_points: int = 1000,
    device: torch.device | str | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Train one `arch` network per set (eval_cfg's training settings, lr: eval_cfg.lr, else the
    set's learned lr, else 0.01) and embed a stratified sample of real test images.

    Returns ({name: [N, D] features}, [N] labels), the input of analyses.tsne_features.
    """
    if not sets:
        raise ConfigError("no sets to train on; give at least one {name: TrainingSet}")
    dev = torch.device(device) if device is not None else dataset.test.images.device
    spec = spec_for(arch, base_spec)
    net_seed = derive_seed(seed, "tsne", arch)
    images, labels = stratified_test_sample(
        dataset, num_points, make_generator(derive_seed(seed, "points"))
    )
    features: dict[str, np.ndarray] = {}
    for name, s in sets.items():
        lr, _ = resolve_lr(eval_cfg.lr, s.lr)
        model, _ = fresh_trained_network(
            spec, dataset, s.images.to(dev), s.labels.to(dev), eval_cfg.train_config(lr),
            net_seed=net_seed, device=dev,
        )  # fmt: skip
        features[str(name)] = embed_features(model, images.to(dev))
    return features, labels.numpy()
