"""Evaluate a set and record it: the one path from images to a results row and run files."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from meddistill.costs import measure, record_cost
from meddistill.data.dataset import MedicalDataset
from meddistill.data.grids import save_class_grids
from meddistill.data.results import RESULTS_FILE, write_results
from meddistill.data.synthetic import SyntheticSet
from meddistill.matching.loop import CHECKPOINT
from meddistill.models.spec import ModelSpec
from meddistill.runs import RunDir, slug
from meddistill.training.evaluate import EvalConfig, evaluate_set
from meddistill.utils import stable_hash


def summary(row: dict[str, Any]) -> dict[str, Any]:
    """The numbers a person looks for first: mean ± std per architecture, on test (to report)
    and val (to choose by) where each was scored (a split not scored is left out, not NaN)."""
    keys = ("acc_mean", "acc_std", "auc_mean", "auc_std")
    keys += tuple(f"val_{k}" for k in keys)
    out = {}
    for arch, stats in row.get("archs", {}).items():
        out[arch] = {k: stats[k] for k in keys if k in stats and not _is_nan(stats[k])}
    return out


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


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
    splits: tuple[str, ...] = ("val", "test"),
) -> dict[str, Any]:
    """Train eval_cfg.num_nets fresh networks on (images, labels), scored on `splits`; the
    results row."""
    start = time.perf_counter()
    device = dataset.train.images.device
    report = evaluate_set(
        images.to(device), labels.to(device), dataset, eval_cfg,
        base_spec=spec, seed=seed, lr=lr, progress=progress, splits=splits,
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
    keep_checkpoint: bool = False,
) -> dict[str, Any]:
    """Save a made set (synthetic/, grids/), drop its checkpoint (unless kept), evaluate it
    when asked, write results.json and log the results table.

    Evaluating the same set again with other settings keeps the earlier results as
    results.<eval id>.json; the same settings again replace their own metrics record."""
    out = run.path
    if run.writes:  # under torchrun: rank 0 (the others take part in the evaluation)
        syn.save(out / "synthetic")
        save_class_grids(syn.images, syn.labels, syn.class_names, syn.normalization, out / "grids")
        if not keep_checkpoint:  # the set is saved: the checkpoint only costs disk from here on
            for checkpoint in out.rglob(CHECKPOINT):
                checkpoint.unlink()
    eval_id = stable_hash(eval_cfg.protocol(), 8) if eval_cfg is not None else None
    results.update(
        {"synthetic": str(out / "synthetic"), "run_dir": str(out), "rows": [], "eval_id": eval_id}
    )
    if eval_cfg is not None:
        with measure("final_eval", dataset.train.images.device) as cost:
            row = evaluate_row(
                syn.images, syn.labels, dataset, eval_cfg, spec,
                seed=seed, lr=lr, label=label, ipc=ipc, progress=progress,
            )  # fmt: skip
        record_cost(out, cost, eval_id=eval_id)
        results["rows"].append(row)
        run.drop_metrics(stage="final_eval", eval_id=eval_id)
        run.metric(stage="final_eval", eval_id=eval_id, **summary(row))
        run.log(f"stage final evaluation ({eval_id}) in {row.get('wall_s')} s "
                f"({cost.describe()}):\n{results_table(results['rows'])}")  # fmt: skip
    if not run.writes:
        run.close()
        return results
    _keep_other_evaluation(out, eval_id)
    write_results(run.path, results)
    run.log(set_line(results))
    run.log(f"results: {out / RESULTS_FILE}")
    run.close()
    return results


def _mean_std(stats: dict[str, Any], key: str, scale: float, digits: int) -> str:
    """'mean ± std' of a results entry; 'n/a' where it is undefined (null, e.g. the AUC of a
    test split holding one class)."""
    mean, std = stats.get(f"{key}_mean"), stats.get(f"{key}_std")
    if mean is None:
        return "n/a"
    return f"{scale * mean:.{digits}f} ± {scale * (std or 0.0):.{digits}f}"


def set_line(results: dict[str, Any]) -> str:
    """Where the set is and its learned step size (when the method learns one)."""
    lr = results.get("syn_lr")
    step = f"  (learned step size {lr:.4g})" if lr is not None else ""
    return f"synthetic set: {results['synthetic']}{step}"


def results_table(rows: list[dict[str, Any]]) -> str:
    """The results table stdout and log.txt show: one line per set and architecture, test
    accuracy and AUC (to report) and val accuracy (to choose by; '-' where not scored)."""
    head = f"{'set':<10} {'ipc':>5} {'arch':<10} {'test acc (%)':>15} {'test auc':>15}"
    lines = [f"{head} {'val acc (%)':>15} {'wall s':>8}"]
    for row in rows:
        for arch, stats in row["archs"].items():
            ipc = "-" if row.get("ipc") is None else str(row["ipc"])
            acc, auc = _mean_std(stats, "acc", 100, 2), _mean_std(stats, "auc", 1, 3)
            val = _mean_std(stats, "val_acc", 100, 2) if "val_acc_mean" in stats else "-"
            wall = row.get("wall_s", 0)
            line = f"{row['set']:<10} {ipc:>5} {arch:<10} {acc:>15} {auc:>15} {val:>15}"
            lines.append(f"{line} {wall:>8}")
    return "\n".join(lines)


def _keep_other_evaluation(out: Path, eval_id: str | None) -> None:
    """Move an earlier results.json made with other evaluation settings out of the way."""
    current = out / RESULTS_FILE
    try:
        earlier = json.loads(current.read_text()).get("eval_id", "earlier")
    except (OSError, ValueError, AttributeError):
        return
    if earlier != eval_id and earlier is not None:
        os.replace(current, out / f"results.{slug(str(earlier))}.json")
