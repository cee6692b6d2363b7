"""Real-data baselines every distillation table is read against: the full training set and
random real subsets of k images per class ("random" in the papers' tables)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from meddistill.config import to_dict
from meddistill.data.dataset import MedicalDataset
from meddistill.data.draws import draw_per_class
from meddistill.errors import ConfigError
from meddistill.models import ModelSpec
from meddistill.training.config import TrainConfig
from meddistill.training.dp import (
    DPConfig,
    DPPlan,
    PrivateTraining,
    check_private_data,
    plan_dp,
)
from meddistill.training.evaluate import (
    EvalConfig,
    evaluate_one_network,
    evaluate_set,
    mean_std,
)
from meddistill.utils import derive_seed, make_generator


def random_subset_indices(
    dataset: MedicalDataset, ipc: int, *, generator: torch.Generator
) -> torch.Tensor:
    """Train-split indices of `ipc` distinct images per class, drawn with `generator` class by
    class (meddistill.data.draws, the draw every command shares); ordered by class."""
    if int(ipc) != ipc or ipc < 1:
        raise ConfigError(f"ipc must be a positive integer, got {ipc!r}")
    counts = dataset.class_counts("train")
    for c, count in enumerate(counts):
        if count < ipc:
            raise ConfigError(
                f"ipc={ipc} is larger than class '{dataset.class_names[c]}' (index {c}) of dataset "
                f"'{dataset.name}', which has {count} training images; choose ipc <= {min(counts)}"
            )
    return draw_per_class(dataset.class_indices("train"), ipc, generator)


def random_subset(
    dataset: MedicalDataset, ipc: int, *, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """`ipc` distinct real training images per class, drawn with `generator`, class by class.

    Returns (images [C * ipc, ...], int64 labels [C * ipc]) ordered by class.
    """
    return subset_at(dataset, random_subset_indices(dataset, ipc, generator=generator))


def subset_at(dataset: MedicalDataset, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Copies of the train images and labels at `index` (a draw's indices)."""
    train = dataset.train
    return train.images[index].clone(), train.labels[index].clone()


# Called with (ipc, draw j, its seed, train indices, images, labels) of every random subset,
# before it is evaluated, with the very tensors evaluated: lets a caller keep the subset.
SubsetSink = Callable[[int, int, int, torch.Tensor, torch.Tensor, torch.Tensor], None]


def full_data(dataset: MedicalDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole training split (images, labels), the upper bound of every table."""
    return dataset.train.images, dataset.train.labels


def full_train_config(epochs: int = 50, lr: float = 0.01) -> TrainConfig:
    """A sensible full-data run: SGD momentum 0.9, wd 5e-4, batch 256, DSA, x0.1 at half."""
    return TrainConfig(epochs=epochs, lr=lr)


def _full_report(
    data: MedicalDataset,
    base_spec: ModelSpec,
    full: TrainConfig,
    *,
    seed: int,
    full_nets: int,
    progress: bool,
    device: torch.device,
    dp: DPConfig | None = None,
) -> dict[str, Any]:
    """The upper bound: `full_nets` networks trained on the whole training split; with `dp`,
    each with DP-SGD at (epsilon, delta) on its own (the DP-SGD reference of a private set)."""
    images, labels = full_data(data)
    plan = full_dp_plan(data, full, dp)
    nets = []
    for k in tqdm(range(full_nets), desc="full data", disable=not progress, unit="net"):
        net_seed = derive_seed(seed, "full", k)
        private = PrivateTraining(plan, dp.secret("full", k)) if plan and dp else None
        result = evaluate_one_network(
            base_spec, data, images, labels, full,
            index=k, net_seed=net_seed, device=device, test=data.test, val=data.val,
            progress=f"full data net {k + 1}/{full_nets}" if progress else False,
            private=private,
        )  # fmt: skip
        nets.append({"seed": net_seed, **_numbers(dataclasses.asdict(result))})
    report = {"train": to_dict(full), "nets": nets, **_stats(nets)}
    if plan is not None:
        report["privacy"] = {**plan.record(), "networks": full_nets, "composition": PER_NETWORK}
    return report


PER_NETWORK = (
    "per network: each network alone is calibrated to (epsilon, delta); the row averages "
    "independent repeats of one private release"
)


def full_dp_plan(data: MedicalDataset, full: TrainConfig, dp: DPConfig | None) -> DPPlan | None:
    """The DP-SGD of one full-data network (None without `dp`); refuses a normalisation
    measured on the train split, as DP experts do."""
    if dp is None:
        return None
    check_private_data(data)
    return plan_dp(dp, len(data.train), full.batch_size, full.epochs, 1, "full_dp")


def _numbers(net: dict[str, Any]) -> dict[str, Any]:
    """A network's scores as results.json holds them: val_* only where a val split exists."""
    keys = ("acc", "auc", "loss", "train_loss", "val_acc", "val_auc", "val_loss")
    return {k: net[k] for k in keys if not (k.startswith("val_") and math.isnan(net[k]))}


def _stats(nets: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and population std of test accuracy and AUC, and of val's where every net has it."""
    stats: dict[str, Any] = {}
    for key in ("acc", "auc", "val_acc", "val_auc"):
        values = [n.get(key) for n in nets]
        if values and all(v is not None and not math.isnan(v) for v in values):
            stats[f"{key}_mean"], stats[f"{key}_std"] = mean_std(values)
    return stats


def _random_report(
    data: MedicalDataset,
    ipc: int,
    base_spec: ModelSpec,
    eval_cfg: EvalConfig,
    *,
    seed: int,
    num_subsets: int,
    progress: bool,
    device: torch.device,
    on_subset: SubsetSink | None = None,
) -> dict[str, Any]:
    """`num_subsets` random real subsets of `ipc` images per class, each evaluated in full."""
    subsets = []
    for j in range(num_subsets):
        subset_seed = derive_seed(seed, "random", ipc, j)
        index = random_subset_indices(data, ipc, generator=make_generator(subset_seed))
        images, labels = subset_at(data, index)
        if on_subset is not None:
            on_subset(ipc, j, subset_seed, index, images, labels)
        ev = evaluate_set(
            images,
            labels,
            data,
            eval_cfg,
            base_spec=base_spec,
            seed=subset_seed,
            progress=progress,
            device=device,
        )
        subsets.append({"seed": subset_seed, "report": ev.to_dict()})
    per_arch = {arch: _pooled_arch(subsets, arch) for arch in eval_cfg.models}
    return {"subsets": subsets, "archs": per_arch}


def _pooled_arch(subsets: list[dict[str, Any]], arch: str) -> dict[str, Any]:
    """Mean and std of one architecture over all networks of all subsets (pooled, not nested)."""
    nets = [n for s in subsets for n in s["report"]["archs"][arch]["nets"]]
    return {**_stats(nets), "num_nets": len(nets)}


def baseline(
    dataset: MedicalDataset,
    *,
    base_spec: ModelSpec,
    ipcs: list[int],
    eval_cfg: EvalConfig,
    full: TrainConfig | None,
    seed: int,
    full_nets: int = 1,
    num_subsets: int = 1,
    progress: bool = True,
    device: torch.device | str | None = None,
    on_subset: SubsetSink | None = None,
    full_dp: DPConfig | None = None,
) -> dict[str, Any]:
    """Evaluate the full training set (`full`, or skipped when None) and random subsets.

    Full data: `full_nets` networks of `base_spec` trained with `full` and tested on the test
    split. Random subsets: for each ipc, `num_subsets` subsets (seeds from (seed, 'random', ipc,
    j)), each evaluated with `eval_cfg` (lr 0.01 unless eval_cfg.lr is set, since a real subset
    has no learned step size). Mean +- population std over all networks of all subsets.
    `on_subset` receives each random subset, exactly as evaluated, so a caller can save it.
    `full_dp` trains the full-data networks with DP-SGD (Opacus) at its (epsilon, delta).
    """
    device = torch.device(device) if device is not None else dataset.train.images.device
    data = dataset.to(device)
    report: dict[str, Any] = {
        "dataset": dataset.name,
        "source_id": dataset.source_id,
        "model": to_dict(base_spec),
        "seed": int(seed),
        "eval": eval_cfg.protocol(),
        "std": "population (np.std, ddof=0), as the reference scripts",
    }
    if full is not None:
        report["full"] = _full_report(
            data,
            base_spec,
            full,
            seed=seed,
            full_nets=full_nets,
            progress=progress,
            device=device,
            dp=full_dp,
        )
    report["random"] = {
        str(ipc): _random_report(
            data,
            ipc,
            base_spec,
            eval_cfg,
            seed=seed,
            num_subsets=num_subsets,
            progress=progress,
            device=device,
            on_subset=on_subset,
        )
        for ipc in ipcs
    }
    return report
