"""`meddistill buffer`: train (or resume) an expert buffer."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from meddistill.app.config import BufferJob, DatasetConfig, device_of
from meddistill.config import to_dict
from meddistill.costs import measure, record_cost
from meddistill.data.dataset import MedicalDataset
from meddistill.experts.config import BufferConfig
from meddistill.experts.generate import generate_buffer
from meddistill.experts.private import buffer_dp_plan
from meddistill.runs import RunDir, environment_info, inside, slug
from meddistill.utils import stable_hash


def buffer_config_for(job: BufferJob) -> BufferConfig:
    """The buffer the job describes, with the dataset's DSA strategy decided here (the same
    rule `distill` applies to the buffer it makes) and the job's seed."""
    cfg = job.buffer
    train = cfg.train
    if train.dsa:
        train = dataclasses.replace(train, dsa_strategy=job.dataset.strategy())
    seed = cfg.seed if job.seed is None else job.seed
    return dataclasses.replace(cfg, train=train, seed=seed)


def dataset_identity(source: DatasetConfig, dataset: MedicalDataset) -> dict[str, Any]:
    """Everything about the loaded data that shapes what trains on it: the source bytes
    (md5 / listing hash), the preprocessing asked for, and what came out (shape, classes,
    split sizes, normalisation). Where the file lies and how it was fetched do not count."""
    facts = dataset.describe()
    facts.pop("info", None)
    asked = {k: getattr(source, k) for k in ("size", "resize_to", "channels", "split_seed")}
    return {"dataset": facts, "preprocessing": asked}


def buffer_folder(
    runs_root: str | Path, source: DatasetConfig, dataset: MedicalDataset, cfg: BufferConfig
) -> Path:
    """The default folder of a buffer: runs/buffers/<dataset>-<hash>, the hash over the
    dataset's identity and the buffer config (network, optimiser, DSA strategy, seed), so
    the same dataset loaded another way never meets a buffer made from other data. How the
    experts are scheduled (workers) does not count."""
    key = stable_hash({**dataset_identity(source, dataset), "buffer": cfg.identity()}, 8)
    return inside(runs_root, Path(runs_root) / "buffers" / f"{slug(dataset.name)}-{key}", "buffer")


def run_buffer(job: BufferJob, runs_root: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the expert buffer the job describes; return its summary."""
    device = device_of(job)
    cfg = buffer_config_for(job)
    dataset = job.dataset.load().to(device)
    buffer_dp_plan(dataset, cfg)  # DP experts: data and budget refused before any folder
    out = Path(job.out) if job.out else buffer_folder(runs_root, job.dataset, dataset, cfg)
    used = dataclasses.replace(job, buffer=cfg, seed=cfg.seed)
    with RunDir(out / "run", {"job": to_dict(used), "env": environment_info()}) as run:
        run.log(f"buffer for {dataset.name} -> {out}")
        return _train(run, dataset, cfg, out, device, progress)


def _train(
    run: RunDir, dataset: MedicalDataset, cfg: BufferConfig, out: Path, device: Any, progress: bool
) -> dict[str, Any]:
    """Make the buffer and record its summary and its cost (costs.json) in the run folder."""
    with measure("buffer", device) as cost:
        store = generate_buffer(dataset, cfg, out, device=device, progress=progress)
    record_cost(run.path, cost)
    summary = {
        "buffer": str(out),
        "experts": store.num_experts,
        "epochs": store.epochs,
        "num_params": store.num_params,
        "dsa_strategy": cfg.train.dsa_strategy if cfg.train.dsa else "none",
        "wall_s": round(cost.wall_s, 2),
    }
    if store.privacy is not None:
        summary["epsilon"] = store.privacy["epsilon"]
        summary["delta"] = store.privacy["delta"]
    run.metric(stage="buffer", **summary)
    run.log(f"stage buffer: {store.num_experts} experts x {store.epochs} epochs in "
            f"{summary['wall_s']} s ({cost.describe()}) -> {out}")  # fmt: skip
    run.save_json("summary.json", summary)
    return summary
