"""`meddistill evaluate`, `baseline` and `export`: sets a user already has, evaluated the same
way as a distilled one."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from meddistill.app.config import BaselineJob, EvaluateJob, device_of, job_identity
from meddistill.app.record import evaluate_row, summary
from meddistill.config import to_dict
from meddistill.costs import measure, record_cost
from meddistill.data.draws import check_ipc
from meddistill.data.grids import save_class_grids
from meddistill.data.results import write_results
from meddistill.data.synthetic import SyntheticSet
from meddistill.errors import ConfigError
from meddistill.runs import RunDir, environment_info
from meddistill.training.baselines import SubsetSink, baseline, full_dp_plan, random_subset
from meddistill.utils import derive_seed, make_generator


def run_evaluate(job: EvaluateJob, runs_root: str | Path, progress: bool = True) -> dict[str, Any]:
    """Evaluate a saved synthetic set (lr = its learned step size unless eval.lr is set) or a
    random subset of job.ipc images per class."""
    if (job.synthetic is None) == (job.ipc is None):
        raise ConfigError("evaluate needs exactly one of --synthetic PATH or --ipc K")
    device = device_of(job)
    syn = SyntheticSet.load(job.synthetic) if job.synthetic is not None else None  # checked first
    dataset = job.dataset.load()
    eval_cfg = job.eval
    if eval_cfg.dsa:
        eval_cfg = dataclasses.replace(eval_cfg, dsa_strategy=job.dataset.strategy())
    if syn is not None:
        syn.check_compatible(dataset, where=str(job.synthetic))
        images, labels, lr = syn.images, syn.labels, syn.syn_lr
        label, ipc = f"synthetic:{syn.meta.get('method', '?')}", syn.ipc()
    else:
        gen = make_generator(derive_seed(job.seed, "subset", job.ipc))
        images, labels = random_subset(dataset, job.ipc, generator=gen)
        lr, label, ipc = job.subset_lr, "random", job.ipc
    if eval_cfg.lr is not None:
        lr = eval_cfg.lr
    dataset = dataset.to(device)
    used = dataclasses.replace(job, eval=eval_cfg)
    with RunDir.for_command(runs_root, "evaluate", dataset.name, {"job": to_dict(used)}) as run:
        run.save_json("env.json", environment_info())
        with measure("evaluate", device) as cost:
            row = evaluate_row(
                images, labels, dataset, eval_cfg, job.model,
                seed=derive_seed(job.seed, "eval", label, ipc), lr=lr, label=label, ipc=ipc,
                progress=progress,
            )  # fmt: skip
        record_cost(run.path, cost)
        run.metric(stage="evaluate", **summary(row))
        run.log(f"stage evaluate: {label} ipc {ipc} in {cost.wall_s:.1f} s ({cost.describe()})")
        results = {"dataset": dataset.describe(), "rows": [row], "run_dir": str(run.path)}
        if run.writes:  # under torchrun: rank 0
            write_results(run.path, results)
    return results


def _baseline_row(kind: str, ipc: int | None, report: dict[str, Any], job: BaselineJob) -> dict:
    if kind == "full":
        stats = report["full"]
        archs = {job.model.name: {k: v for k, v in stats.items() if k.endswith(("_mean", "_std"))}}
        archs[job.model.name]["num_nets"] = len(stats["nets"])
    else:
        archs = report["random"][str(ipc)]["archs"]
    return {"set": kind, "ipc": ipc, "archs": archs, "detail": report}


def run_baseline(job: BaselineJob, runs_root: str | Path, progress: bool = True) -> dict[str, Any]:
    """Evaluate the full train set and random k-per-class subsets; write results.json."""
    device = device_of(job)
    dataset = job.dataset.load()
    for ipc in job.ipcs:
        check_ipc(dataset, ipc)
    dataset = dataset.to(device)
    strategy = job.dataset.strategy()
    job = dataclasses.replace(
        job,
        eval=dataclasses.replace(job.eval, dsa_strategy=strategy),
        full_train=dataclasses.replace(job.full_train, dsa_strategy=strategy),
    )
    if job.full and job.full_dp is not None:  # refused before the run folder exists
        full_dp_plan(dataset, job.full_train, job.full_dp)
    folder_config = {"job": job_identity(job)}
    with RunDir.for_command(runs_root, "baseline", dataset.name, folder_config) as run:
        return _baselines_in(run, job, dataset, device, progress)


def _baselines_in(
    run: RunDir, job: BaselineJob, dataset: Any, device: Any, progress: bool
) -> dict[str, Any]:
    """run_baseline's work inside its (locked) run folder."""
    run.save_json("env.json", environment_info())
    results: dict[str, Any] = {"dataset": dataset.describe(), "rows": []}
    parts: list[tuple[str, int | None]] = [("full", None)] if job.full else []
    for kind, ipc in parts + [("random", ipc) for ipc in job.ipcs]:
        sets: list[dict[str, Any]] = []
        with measure(kind if ipc is None else f"{kind}_ipc{ipc}", device) as cost:
            report = baseline(
                dataset, base_spec=job.model, ipcs=[] if ipc is None else [ipc],
                eval_cfg=job.eval, full=job.full_train if kind == "full" else None,
                seed=job.seed, full_nets=job.full_nets, progress=progress, device=device,
                on_subset=_subset_saver(run, dataset, sets), full_dp=job.full_dp,
            )  # fmt: skip
        record_cost(run.path, cost)
        privacy = report.get("full", {}).get("privacy")  # DP-SGD full-data networks
        row = {
            **_baseline_row(kind, ipc, report, job),
            **({"privacy": privacy} if privacy is not None else {}),
            **({"sets": sets} if kind == "random" else {}),
            "wall_s": round(cost.wall_s, 1),
        }
        results["rows"].append(row)
        run.metric(stage=kind, ipc=ipc, wall_s=row["wall_s"], **summary(row))
        run.log(f"{kind} ipc {ipc}: {summary(row)} in {row['wall_s']} s ({cost.describe()})")
    results["run_dir"] = str(run.path)
    write_results(run.path, results)
    return results


def _subset_saver(run: RunDir, dataset: Any, sets: list[dict[str, Any]]) -> SubsetSink:
    """Keep every random subset a baseline evaluates as a synthetic-set folder with class grids
    (RUN/random_ipc<K>/draw_<J>/synthetic and .../grids), so it can be exported, audited and
    shown like a distilled set; each saved folder is listed in `sets`."""

    def save(ipc: int, draw: int, seed: int, index: Any, images: Any, labels: Any) -> None:
        folder = run.path / f"random_ipc{ipc}" / f"draw_{draw}"
        syn = SyntheticSet(
            images=images, labels=labels, normalization=dataset.normalization,
            class_names=list(dataset.class_names), dataset=dataset.name,
            source_id=dataset.source_id, syn_lr=None,  # a real subset learned no step size
            meta={"method": "random", "seed": int(seed), "ipc": int(ipc), "draw": int(draw),
                  "train_indices": index.tolist()},
        )  # fmt: skip
        syn.save(folder / "synthetic")
        save_class_grids(images, labels, syn.class_names, syn.normalization, folder / "grids")
        sets.append(
            {"draw": draw, "seed": int(seed), "synthetic": str(folder / "synthetic"),
             "grids": str(folder / "grids")}
        )  # fmt: skip

    return save


def run_export(synthetic: str | Path, out: str | Path) -> Path:
    """Write a synthetic set as a MedMNIST-style npz of uint8 images; the set is validated on
    load and non-finite images are refused (they have no pixel value), so nothing is written
    for a damaged set."""
    return SyntheticSet.load(synthetic).export_npz(out)
