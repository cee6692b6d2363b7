"""Coreset baselines: real training images chosen per class, no synthesis.

- random: `ipc` distinct images per class drawn with a seeded generator (the same draws as
  meddistill.training.baselines.random_subset, so both give the same subset for one seed).
- herding: Welling, "Herding Dynamical Weights to Learn", ICML 2009, in the greedy form the
  distillation papers use as a baseline (Rebuffi et al., iCaRL, CVPR 2017; Zhao et al., DC,
  ICLR 2021): per class, pick one by one the sample whose addition keeps the mean of the chosen
  features closest to the class mean feature.
- k-center greedy: Sener & Savarese, "Active Learning for Convolutional Neural Networks: A
  Core-Set Approach", ICLR 2018: per class, start from the sample closest to the class mean,
  then repeatedly pick the sample farthest from every sample chosen so far.

Herding and k-center are deterministic given the features (ties go to the lowest index). The
features are `model.embed(x)` of a network, given or trained for a few epochs on the real
training split (`feature_network`). Features are raw embeddings (not L2-normalised): DC's
herding baseline uses them raw; normalise them yourself and pass `features=` for iCaRL's form.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from meddistill.data.dataset import MedicalDataset
from meddistill.data.draws import check_ipc, draw_per_class
from meddistill.data.synthetic import SyntheticSet
from meddistill.errors import ConfigError
from meddistill.experts.store import TrajectoryStore
from meddistill.matching.config import SECTION
from meddistill.matching.loop import DistillRun
from meddistill.methods.base import MethodEntry
from meddistill.models import ModelSpec, build_model_for
from meddistill.training.config import TrainConfig
from meddistill.training.loop import train_network
from meddistill.utils import Options, derive_seed, make_generator

CORESET_METHODS = ("random", "herding", "kcenter")
CORESET_LR = 0.01  # a real subset has no learned step size; evaluate it with the usual 0.01


@torch.no_grad()
def features(model: nn.Module, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """[N, D] embeddings `model.embed(x)` computed in eval mode, `batch` images at a time.

    The model's train/eval mode is restored afterwards; the result lives on the model's device.
    """
    if not hasattr(model, "embed"):
        raise ConfigError(
            f"{type(model).__name__} has no embed(x) method; use a meddistill.models network"
        )
    if batch < 1:
        raise ConfigError(f"feature batch size must be >= 1, got {batch}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        parts = [model.embed(chunk.to(device)).flatten(1) for chunk in images.split(batch)]
    finally:
        model.train(was_training)
    return torch.cat(parts)


_embed = features  # reachable inside functions whose `features` parameter shadows the name


def feature_network(
    dataset: MedicalDataset,
    spec: ModelSpec,
    *,
    epochs: int,
    seed: int,
    lr: float = 0.01,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> nn.Module:
    """A network of `spec` trained `epochs` epochs on the real training split (SGD momentum 0.9,
    weight decay 5e-4, DSA, x0.1 at half), whose embeddings rank samples for herding/k-center.
    Everything is drawn from generators derived from `seed`."""
    device = torch.device(device) if device is not None else dataset.train.images.device
    model = build_model_for(spec, dataset, seed=derive_seed(seed, "coreset-net"), device=device)
    cfg = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size)
    train_network(
        model,
        dataset.train.images.to(device),
        dataset.train.labels.to(device),
        cfg,
        generator=make_generator(derive_seed(seed, "coreset-train")),
        progress="coreset features" if progress else False,
    )
    return model


def herding_order(feats: torch.Tensor, k: int) -> torch.Tensor:
    """Welling 2009 (greedy form): indices of `k` rows of `feats` [n, D] in selection order.

    Step t picks i minimising || mu - (sum of chosen + f_i) / t ||, mu the mean of all rows.
    """
    n = feats.shape[0]
    _check_k(k, n)
    f = feats.to(torch.float64)
    mu = f.mean(dim=0)
    chosen_sum = torch.zeros_like(mu)
    available = torch.ones(n, dtype=torch.bool, device=f.device)
    order = []
    for t in range(1, k + 1):
        dist = ((chosen_sum.unsqueeze(0) + f) / t - mu).pow(2).sum(dim=1)
        dist = torch.where(available, dist, torch.full_like(dist, float("inf")))
        i = int(torch.argmin(dist))  # first minimum: ties go to the lowest index
        order.append(i)
        available[i] = False
        chosen_sum = chosen_sum + f[i]
    return torch.tensor(order, dtype=torch.long)


def kcenter_order(feats: torch.Tensor, k: int) -> torch.Tensor:
    """Sener & Savarese 2018 k-center greedy: indices of `k` rows in selection order.

    The first pick is the row closest to the mean; each next pick maximises the distance to
    its nearest already chosen row.
    """
    n = feats.shape[0]
    _check_k(k, n)
    f = feats.to(torch.float64)
    first = int(torch.argmin((f - f.mean(dim=0)).pow(2).sum(dim=1)))
    order = [first]
    nearest = (f - f[first]).pow(2).sum(dim=1)  # squared distance to the nearest chosen row
    for _ in range(1, k):
        masked = nearest.clone()
        masked[order] = -1.0  # chosen rows have distance 0 anyway; never pick them twice
        i = int(torch.argmax(masked))
        order.append(i)
        nearest = torch.minimum(nearest, (f - f[i]).pow(2).sum(dim=1))
    return torch.tensor(order, dtype=torch.long)


def _check_k(k: int, n: int) -> None:
    if k < 1 or k > n:
        raise ConfigError(f"cannot select {k} of {n} samples; choose 1 <= k <= {n}")


def select_coreset(
    method: str,
    dataset: MedicalDataset,
    ipc: int,
    *,
    features: torch.Tensor | None = None,
    generator: torch.Generator | None,
    model: nn.Module | None = None,
    batch: int = 256,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`ipc` real training images per class chosen by `method` (random | herding | kcenter).

    Returns (images [C * ipc, ...], int64 labels [C * ipc], int64 indices into the training
    split), class by class, each class in selection order. `random` needs `generator`;
    herding and kcenter need `features` ([N_train, D], row i for training image i) or `model`
    (a network with `embed`, e.g. from `feature_network`).
    """
    name = method.lower()
    if name not in CORESET_METHODS:
        raise ConfigError(f"unknown coreset method '{method}'; valid: {', '.join(CORESET_METHODS)}")
    check_ipc(dataset, ipc)
    train = dataset.train
    per_class = dataset.class_indices("train")
    if name == "random":
        if generator is None:
            raise ConfigError("coreset 'random' needs a seeded generator (utils.make_generator)")
        index = draw_per_class(per_class, ipc, generator)
    else:
        feats = _train_features(dataset, features, model, batch)
        pick = herding_order if name == "herding" else kcenter_order
        index = torch.cat(
            [idx[pick(feats[idx.to(feats.device)], ipc).to(idx.device)] for idx in per_class]
        )
    index = index.to(train.images.device)
    return (
        train.images.index_select(0, index).clone(),
        train.labels.index_select(0, index.to(train.labels.device)).clone(),
        index.to("cpu"),
    )


def _train_features(
    dataset: MedicalDataset,
    given: torch.Tensor | None,
    model: nn.Module | None,
    batch: int,
) -> torch.Tensor:
    n = len(dataset.train)
    if given is not None:
        if given.dim() != 2 or given.shape[0] != n:
            raise ConfigError(
                f"features must have shape [{n}, D] (one row per training image of "
                f"{dataset.name}), got {tuple(given.shape)}"
            )
        return given
    if model is None:
        raise ConfigError(
            "herding and kcenter rank samples by network features: pass features=[N, D] or "
            "model= (e.g. methods.coresets.feature_network(dataset, spec, epochs=..., seed=...))"
        )
    return _embed(model, dataset.train.images, batch)


def coreset_set(
    method: str,
    dataset: MedicalDataset,
    ipc: int,
    *,
    features: torch.Tensor | None = None,
    generator: torch.Generator | None,
    model: nn.Module | None = None,
    batch: int = 256,
    meta: dict | None = None,
) -> SyntheticSet:
    """`select_coreset` packed as a SyntheticSet (CPU tensors, syn_lr 0.01), so the same
    evaluation, export and report code applies to coresets and distilled sets."""
    images, labels, index = select_coreset(
        method, dataset, ipc, features=features, generator=generator, model=model, batch=batch
    )
    return SyntheticSet(
        images=images.detach().to("cpu", torch.float32),
        labels=labels.detach().cpu(),
        normalization=dataset.normalization,
        class_names=list(dataset.class_names),
        dataset=dataset.name,
        source_id=dataset.source_id,
        syn_lr=CORESET_LR,
        meta={
            **(meta or {}),
            "method": f"coreset-{method.lower()}",
            "ipc": int(ipc),
            "train_indices": index.tolist(),
        },
    )


@dataclass
class CoresetConfig:
    """A coreset's knobs: images per class and, for herding and k-center, the epochs of the
    network whose features rank the samples."""

    ipc: int = 10
    feature_epochs: int = 5

    def __post_init__(self) -> None:
        Options(SECTION, self).counts("ipc", "feature_epochs")


def _coreset_method(name: str, paper: str) -> MethodEntry:
    def distill(
        dataset: MedicalDataset,
        cfg: CoresetConfig,
        *,
        experts: TrajectoryStore | None,
        model: ModelSpec,
        device: torch.device,
        run: DistillRun,
    ) -> SyntheticSet:
        net = None
        if name != "random":
            net = feature_network(
                dataset, model, epochs=cfg.feature_epochs,
                seed=derive_seed(run.seed, "features"), device=device, progress=run.progress,
            )  # fmt: skip
        return coreset_set(
            name, dataset, cfg.ipc, model=net,
            generator=make_generator(derive_seed(run.seed, "coreset", cfg.ipc)),
            meta={"method": name, "seed": run.seed},
        )  # fmt: skip

    return MethodEntry(
        name, paper, CoresetConfig, distill, experts=None, kind="coreset", synthesises=False
    )


METHODS = [
    _coreset_method("random", "random real subset"),
    _coreset_method("herding", "Welling, ICML 2009 (greedy form)"),
    _coreset_method("kcenter", "Sener & Savarese, ICLR 2018"),
]
