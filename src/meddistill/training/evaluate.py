"""The reference evaluation protocol: train K fresh networks on a set, test each on the real test split.

Used for synthetic sets, random real subsets and (with its own epochs) the full training set.
Every network's seed is derived from (seed, architecture, k), so a report is reproducible and
adding architectures does not change the networks of the others.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from meddistill.config import to_dict
from meddistill.data.dataset import MedicalDataset
from meddistill.errors import ConfigError
from meddistill.models import ModelSpec, build_model_for
from meddistill.models.registry import available_models
from meddistill.training.config import TrainConfig
from meddistill.training.loop import TrainResult, train_network
from meddistill.utils import Options, derive_seed, make_generator

DEFAULT_LR = 0.01


@dataclass
class EvalConfig:
    """How a set is evaluated (defaults: the MTT protocol; HoP-TM uses batch_size 128).

    `models`: architectures to train on the set; "convnet" means the distillation network
    (depth, width, norm of the spec the caller passes), any other name its default spec.
    `lr`: None uses the step size learned with the synthetic set, or 0.01 when there is none
    (real subsets); a number overrides both.
    """

    models: list[str] = field(default_factory=lambda: ["convnet"])
    num_nets: int = 5
    epochs: int = 1000
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    dsa: bool = True
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"

    def __post_init__(self) -> None:
        # Everything train_config builds is checked here, so a bad value is refused when the
        # job is resolved, named eval.*, not after a whole distillation as train.*.
        check = Options("eval", self)
        if not self.models:
            check.fail("models", "a non-empty list of architectures, e.g. [convnet]")
        unknown = [m for m in self.models if str(m).lower() not in available_models()]
        if unknown:
            check.fail("models", f"architectures from {', '.join(available_models())}", unknown)
        check.counts("num_nets", "epochs", "batch_size")
        check.positive("lr", optional=True)
        check.fraction("momentum")
        check.at_least("weight_decay")
        check.strategy("dsa_strategy")

    def train_config(self, lr: float) -> TrainConfig:
        """The per-network training settings: constant lr, x0.1 at half, as the references."""
        return TrainConfig(
            epochs=self.epochs,
            lr=lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            lr_schedule="step_half",
            dsa=self.dsa,
            dsa_strategy=self.dsa_strategy,
        )


@dataclass
class NetResult:
    """One trained network's numbers on the test split (acc as a fraction in [0, 1])."""

    index: int
    seed: int
    acc: float
    auc: float
    loss: float
    train_loss: float


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and POPULATION std (np.std, ddof=0), as the reference scripts report mean +- std."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std())


@dataclass
class ArchReport:
    """All networks of one architecture, with mean and population std over them."""

    arch: str
    spec: dict[str, Any]
    nets: list[NetResult]

    @property
    def acc_mean(self) -> float:
        return mean_std([n.acc for n in self.nets])[0]

    @property
    def acc_std(self) -> float:
        return mean_std([n.acc for n in self.nets])[1]

    @property
    def auc_mean(self) -> float:
        return mean_std([n.auc for n in self.nets])[0]

    @property
    def auc_std(self) -> float:
        return mean_std([n.auc for n in self.nets])[1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "spec": self.spec,
            "nets": [asdict(n) for n in self.nets],
            "acc_mean": self.acc_mean,
            "acc_std": self.acc_std,
            "auc_mean": self.auc_mean,
            "auc_std": self.auc_std,
        }


@dataclass
class EvalReport:
    """Per-architecture results of `evaluate_set`; std is the population std (np.std)."""

    archs: dict[str, ArchReport]
    lr: float
    lr_source: str
    num_images: int
    seed: int
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "archs": {k: v.to_dict() for k, v in self.archs.items()},
            "lr": self.lr,
            "lr_source": self.lr_source,
            "num_images": self.num_images,
            "seed": self.seed,
            "config": self.config,
            "std": "population (np.std, ddof=0), as the reference scripts",
        }

    def summary(self) -> str:
        """One line per architecture, e.g. 'convnet: acc 72.50 +- 1.40 %, AUC 0.940 +- 0.010'."""
        return "\n".join(
            f"{a}: acc {100 * r.acc_mean:.2f} +- {100 * r.acc_std:.2f} %, "
            f"AUC {r.auc_mean:.3f} +- {r.auc_std:.3f} ({len(r.nets)} nets)"
            for a, r in self.archs.items()
        )


def spec_for(arch: str, base_spec: ModelSpec) -> ModelSpec:
    """The distillation spec for the distillation architecture, else that architecture's default."""
    name = arch.lower()
    if name == base_spec.name or (name == "convnet" and base_spec.name == "convnet3d"):
        return base_spec
    return ModelSpec(name=name)


def resolve_lr(cfg_lr: float | None, learned_lr: float | None) -> tuple[float, str]:
    """cfg.lr wins, then the learned step size, then 0.01; returns (lr, where it came from)."""
    if cfg_lr is not None:
        return float(cfg_lr), "config"
    if learned_lr is not None:
        return float(learned_lr), "learned"
    return DEFAULT_LR, "default"


def _check_set(images: torch.Tensor, labels: torch.Tensor, dataset: MedicalDataset) -> None:
    if tuple(images.shape[1:]) != dataset.image_shape:
        raise ConfigError(
            f"the set's images have shape {tuple(images.shape[1:])} but dataset '{dataset.name}' "
            f"has {dataset.image_shape}; was the set made for another dataset or resolution?"
        )
    if labels.dim() == 2 and labels.shape[1] != dataset.num_classes:
        raise ConfigError(
            f"soft labels have {labels.shape[1]} columns but dataset '{dataset.name}' has "
            f"{dataset.num_classes} classes"
        )
    if (
        labels.dim() == 1
        and labels.numel()
        and not (int(labels.min()) >= 0 and int(labels.max()) < dataset.num_classes)
    ):
        raise ConfigError(
            f"labels must lie in 0..{dataset.num_classes - 1} for dataset '{dataset.name}', "
            f"got {int(labels.min())}..{int(labels.max())}"
        )


def train_fresh_network(
    spec: ModelSpec,
    dataset: MedicalDataset,
    images: torch.Tensor,
    labels: torch.Tensor,
    train_cfg: TrainConfig,
    *,
    net_seed: int,
    device: torch.device | str | None,
    test: Any,
    progress: str | bool,
) -> TrainResult:
    """Build a network of `spec` for `dataset` from `net_seed` and train it on (images, labels),
    batch order and augmentation drawn from a generator derived from the same seed."""
    _, result = fresh_trained_network(
        spec, dataset, images, labels, train_cfg,
        net_seed=net_seed, device=device, test=test, progress=progress,
    )  # fmt: skip
    return result


def fresh_trained_network(
    spec: ModelSpec,
    dataset: MedicalDataset,
    images: torch.Tensor,
    labels: torch.Tensor,
    train_cfg: TrainConfig,
    *,
    net_seed: int,
    device: torch.device | str | None,
    test: Any = None,
    progress: str | bool = False,
) -> tuple[nn.Module, TrainResult]:
    """`train_fresh_network`, also returning the trained network (for its features)."""
    model = build_model_for(spec, dataset, seed=net_seed, device=device)
    result = train_network(
        model,
        images,
        labels,
        train_cfg,
        generator=make_generator(derive_seed(net_seed, "train")),
        test_split=test,
        progress=progress,
    )
    return model, result


def evaluate_one_network(
    spec: ModelSpec,
    dataset: MedicalDataset,
    images: torch.Tensor,
    labels: torch.Tensor,
    train_cfg: TrainConfig,
    *,
    index: int,
    net_seed: int,
    device: torch.device | str | None,
    test: Any,
    progress: str | bool,
) -> NetResult:
    """Train one fresh network from `net_seed` and test it on `test`.

    The one place a network of the protocol is made and scored: `evaluate_set` calls it for
    its k-th network, and the benchmark grid for each network it still lacks, so both give
    bit-identical numbers for the same seed. A missing AUC or loss (no test split) is NaN.
    """
    result = train_fresh_network(
        spec, dataset, images, labels, train_cfg,
        net_seed=net_seed, device=device, test=test, progress=progress,
    )  # fmt: skip
    return NetResult(
        index=index,
        seed=net_seed,
        acc=float(result.test_acc),
        auc=_or_nan(result.test_auc),
        loss=_or_nan(result.test_loss),
        train_loss=result.train_loss,
    )


def _or_nan(value: float | None) -> float:
    return float(value) if value is not None else float("nan")


def evaluate_set(
    images: torch.Tensor,
    labels: torch.Tensor,
    dataset: MedicalDataset,
    cfg: EvalConfig,
    *,
    base_spec: ModelSpec,
    seed: int,
    lr: float | None = None,
    progress: bool = True,
    device: torch.device | str | None = None,
) -> EvalReport:
    """Train `cfg.num_nets` fresh networks per architecture on (images, labels); test on dataset.test.

    `lr` is the step size learned with a synthetic set (used when cfg.lr is None). Tensors are
    moved to `device` (default: the images' device) once, and stay there.
    """
    _check_set(images, labels, dataset)
    device = torch.device(device) if device is not None else images.device
    images, labels = images.to(device), labels.to(device)
    test = dataset.test.to(device)
    lr_value, lr_source = resolve_lr(cfg.lr, None if lr is None else float(lr))
    if not (math.isfinite(lr_value) and lr_value > 0):
        raise ConfigError(
            f"the {lr_source} learning rate {lr_value:g} is not positive; evaluation cannot train "
            "with it: set eval.lr to a positive number"
        )
    train_cfg = cfg.train_config(lr_value)
    archs: dict[str, ArchReport] = {}
    total = len(cfg.models) * cfg.num_nets
    with tqdm(total=total, desc="evaluate", disable=not progress, unit="net") as bar:
        for arch in cfg.models:
            spec = spec_for(arch, base_spec)
            nets = []
            for k in range(cfg.num_nets):
                net = evaluate_one_network(
                    spec,
                    dataset,
                    images,
                    labels,
                    train_cfg,
                    index=k,
                    net_seed=derive_seed(seed, arch, k),
                    device=device,
                    test=test,
                    progress=f"{arch} net {k + 1}/{cfg.num_nets}" if progress else False,
                )
                nets.append(net)
                bar.update(1)
                bar.set_postfix(arch=arch, acc=f"{100 * net.acc:.1f}%")
            archs[arch] = ArchReport(arch=arch, spec=to_dict(spec), nets=nets)
    return EvalReport(
        archs=archs,
        lr=lr_value,
        lr_source=lr_source,
        num_images=int(images.shape[0]),
        seed=int(seed),
        config=to_dict(cfg),
    )
