"""Evaluate a set and record it: the one path from images to a results row and run files."""

from __future__ import annotations

import time
from typing import Any

import torch

from meddistill.data.dataset import MedicalDataset
from meddistill.data.grids import save_class_grids
from meddistill.data.results import write_results
from meddistill.data.synthetic import SyntheticSet
from meddistill.models.spec import ModelSpec
from meddistill.runs import RunDir
from meddistill.training.evaluate import EvalConfig, evaluate_set


def summary(row: dict[str, Any]) -> dict[str, Any]:
    """The numbers a person looks for first: mean ± std per architecture."""
    out = {}
    for arch, stats in row.get("archs", {}).items():
        out[arch] = {
            k: stats[k] for k in ("acc_mean", "acc_std", "auc_mean", "auc_std") if k in stats
        }
    return out


def evaluate_row(
    images: torch.Tensor,
    labels: torch.Tensor,
    dataset: MedicalDataset,
    eval_cfg: EvalConfig,
    spec: ModelSpec,
    *,
    seed: int,
    lr: float | None,
    label: str,
    ipc: int | None,
    progress: bool,
) -> dict[str, Any]:
    """Train eval_cfg.num_nets fresh networks on (images, labels); the results row."""
    start = time.perf_counter()
    device = dataset.train.images.device
    report = evaluate_set(
        images.to(device), labels.to(device), dataset, eval_cfg,
        base_spec=spec, seed=seed, lr=lr, progress=progress,
    )  # fmt: skip
    return {
        "set": label,
        "ipc": ipc,
        "lr": lr,
        **report.to_dict(),
        "wall_s": round(time.perf_counter() - start, 1),
    }


def finish_set(
    run: RunDir,
    syn: SyntheticSet,
    results: dict[str, Any],
    dataset: MedicalDataset,
    eval_cfg: EvalConfig | None,
    spec: ModelSpec,
    *,
    seed: int,
    lr: float | None,
    label: str,
    ipc: int,
    progress: bool,
) -> dict[str, Any]:
    """Save a made set (synthetic/, grids/), evaluate it when asked, write results.json."""
    out = run.path
    syn.save(out / "synthetic")
    save_class_grids(syn.images, syn.labels, syn.class_names, syn.normalization, out / "grids")
    results.update({"synthetic": str(out / "synthetic"), "run_dir": str(out), "rows": []})
    if eval_cfg is not None:
        row = evaluate_row(
            syn.images, syn.labels, dataset, eval_cfg, spec,
            seed=seed, lr=lr, label=label, ipc=ipc, progress=progress,
        )  # fmt: skip
        results["rows"].append(row)
        run.metric(stage="final_eval", **summary(row))
    write_results(run.path, results)
    run.close()
    return results
