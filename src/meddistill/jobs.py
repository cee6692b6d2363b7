"""The jobs behind the CLI commands: resolved configs in, files a user can read out.

Each job is a dataclass (validated by meddistill.config.from_dict) plus one function that runs
it. The CLI only builds the config dict (defaults < --config files < flags < key=value) and
calls these; a Python user can call them directly.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from meddistill.config import from_dict, to_dict
from meddistill.data.dataset import MedicalDataset, Normalization
from meddistill.data.grids import save_class_grids
from meddistill.data.registry import default_dsa_strategy, load_dataset
from meddistill.data.synthetic import SyntheticSet
from meddistill.errors import ConfigError
from meddistill.experts.config import BufferConfig
from meddistill.experts.generate import generate_buffer
from meddistill.experts.store import TrajectoryStore
from meddistill.matching.config import MatchConfig
from meddistill.matching.engine import Distiller
from meddistill.matching.schedule import check_schedule
from meddistill.methods import (
    distill_objective,
    method_defaults,
    method_expert_optimizer,
    method_kind,
    objective_config,
)
from meddistill.methods.coresets import coreset_set, feature_network
from meddistill.methods.haba import HaBaParam
from meddistill.methods.seqmatch import run_seqmatch
from meddistill.models.spec import ModelSpec
from meddistill.runs import RunDir, environment_info
from meddistill.training.baselines import baseline, random_subset
from meddistill.training.config import TrainConfig
from meddistill.training.evaluate import EvalConfig, evaluate_set
from meddistill.utils import derive_seed, make_generator, resolve_device, stable_hash


@dataclass
class DatasetConfig:
    """Which dataset and how to prepare it (see meddistill.data.registry.load_dataset)."""

    name: str = "bloodmnist"
    root: str | None = None
    size: int | None = None
    resize_to: int | None = None
    download: bool = False
    channels: int | None = None
    split_seed: int = 0
    normalization: dict[str, list[float]] | None = None
    dsa_strategy: str | None = None
    verify_md5: bool = True  # MedMNIST only: false accepts a file whose md5 differs (recorded)

    def load(self) -> MedicalDataset:
        norm = Normalization.from_dict(self.normalization) if self.normalization else None
        extra = {} if self.verify_md5 else {"verify_md5": False}
        return load_dataset(
            self.name,
            root=self.root,
            size=self.size,
            resize_to=self.resize_to,
            download=self.download,
            channels=self.channels,
            split_seed=self.split_seed,
            normalization=norm,
            **extra,
        )

    def strategy(self) -> str:
        """The DSA strategy: the one given, else the dataset's default."""
        return (
            self.dsa_strategy if self.dsa_strategy is not None else default_dsa_strategy(self.name)
        )


@dataclass
class BufferJob:
    """`meddistill buffer`: train experts and record their trajectories."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    buffer: BufferConfig = field(default_factory=lambda: BufferConfig(num_experts=5, epochs=10))
    out: str | None = None
    device: str = "auto"


@dataclass
class BaselineJob:
    """`meddistill baseline`: full train set and random real subsets, evaluated the same way."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelSpec = field(default_factory=ModelSpec)
    ipcs: list[int] = field(default_factory=lambda: [1, 10, 50])
    full: bool = True
    full_train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=30, lr=0.01, batch_size=256)
    )
    full_nets: int = 1
    eval: EvalConfig = field(default_factory=EvalConfig)
    subset_lr: float = 0.01
    seed: int = 0
    device: str = "auto"


@dataclass
class EvaluateJob:
    """`meddistill evaluate`: train K fresh networks on a synthetic set (or a random subset)."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    synthetic: str | None = None
    ipc: int | None = None
    model: ModelSpec = field(default_factory=ModelSpec)
    eval: EvalConfig = field(default_factory=EvalConfig)
    subset_lr: float = 0.01
    seed: int = 0
    device: str = "auto"


@dataclass
class DistillJob:
    """`meddistill distill`: experts (made or reused), matching, final evaluation, artifacts."""

    method: str = "hoptm"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelSpec = field(default_factory=ModelSpec)
    buffer: str | None = None  # an existing buffer folder; None: make/reuse one from `experts`
    experts: BufferConfig = field(default_factory=lambda: BufferConfig(num_experts=5, epochs=10))
    expert_optimizer: str | None = None  # None: what the method expects (sgd or gsam)
    match: dict[str, Any] = field(default_factory=dict)  # MatchConfig overrides of the method
    eval: EvalConfig = field(default_factory=EvalConfig)
    final_eval: bool = True
    out: str | None = None
    device: str = "auto"


@dataclass
class CoresetJob:
    """`meddistill coreset`: real images chosen by random, herding or k-center selection."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    selection: str = "herding"
    ipc: int = 10
    model: ModelSpec = field(default_factory=ModelSpec)
    feature_epochs: int = 5  # epochs of the network whose embeddings rank the samples
    eval: EvalConfig = field(default_factory=EvalConfig)
    final_eval: bool = True
    seed: int = 0
    out: str | None = None
    device: str = "auto"


def check_ipc(dataset: MedicalDataset, ipcs: list[int]) -> None:
    """Refuse, before any work, an IPC no class can supply."""
    smallest = min(dataset.class_counts("train"))
    too_big = [k for k in ipcs if k > smallest]
    if too_big:
        raise ConfigError(
            f"ipc {too_big[0]} is larger than the smallest class of {dataset.name} "
            f"({smallest} train images); choose ipc <= {smallest}"
        )


def resolve(job_cls: type, data: dict[str, Any]) -> Any:
    """Build and validate a job dataclass from a merged config dict."""
    return from_dict(job_cls, data)


def run_buffer(job: BufferJob, runs_root: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the expert buffer the job describes; return its summary."""
    device = resolve_device(job.device)
    dataset = job.dataset.load().to(device)
    if job.buffer.train.dsa and job.dataset.dsa_strategy is not None:
        job.buffer.train.dsa_strategy = job.dataset.dsa_strategy
    out = Path(job.out) if job.out else Path(runs_root) / "buffers" / _buffer_name(job, dataset)
    run = RunDir(out / "run", {"job": to_dict(job), "env": environment_info()})
    run.log(f"buffer for {dataset.name} -> {out}")
    start = time.perf_counter()
    store = generate_buffer(dataset, job.buffer, out, device=device, progress=progress)
    summary = {
        "buffer": str(out),
        "experts": store.num_experts,
        "epochs": store.epochs,
        "num_params": store.num_params,
        "wall_s": round(time.perf_counter() - start, 2),
    }
    run.metric(stage="buffer", **summary)
    run.save_json("summary.json", summary)
    run.close()
    return summary


def _buffer_name(job: BufferJob, dataset: MedicalDataset) -> str:
    return (
        f"{dataset.name.replace(':', '_').replace('/', '_')}-{stable_hash(to_dict(job.buffer), 8)}"
    )


def run_baseline(job: BaselineJob, runs_root: str | Path, progress: bool = True) -> dict[str, Any]:
    """Evaluate the full train set and random k-per-class subsets; write results.json."""
    device = resolve_device(job.device)
    dataset = job.dataset.load()
    check_ipc(dataset, job.ipcs)
    dataset = dataset.to(device)
    strategy = job.dataset.strategy()
    job.eval.dsa_strategy = strategy
    job.full_train.dsa_strategy = strategy
    run = RunDir.for_command(runs_root, "baseline", dataset.name, {"job": to_dict(job)})
    run.save_json("env.json", environment_info())
    results: dict[str, Any] = {"dataset": dataset.describe(), "rows": []}
    parts: list[tuple[str, int | None]] = [("full", None)] if job.full else []
    parts += [("random", ipc) for ipc in job.ipcs]
    for kind, ipc in parts:
        start = time.perf_counter()
        report = baseline(
            dataset,
            base_spec=job.model,
            ipcs=[] if ipc is None else [ipc],
            eval_cfg=job.eval,
            full=job.full_train if kind == "full" else None,
            seed=job.seed,
            full_nets=job.full_nets,
            progress=progress,
            device=device,
        )
        if kind == "full":
            archs = {
                job.model.name: {
                    k: report["full"][k] for k in ("acc_mean", "acc_std", "auc_mean", "auc_std")
                }
            }
            archs[job.model.name]["num_nets"] = len(report["full"]["nets"])
        else:
            archs = report["random"][str(ipc)]["archs"]
        row = {
            "set": kind,
            "ipc": ipc,
            "archs": archs,
            "detail": report,
            "wall_s": round(time.perf_counter() - start, 1),
        }
        results["rows"].append(row)
        run.metric(stage=kind, ipc=ipc, wall_s=row["wall_s"], **_summary(row))
        run.log(f"{kind} ipc {ipc}: {_summary(row)} in {row['wall_s']} s")
    results["run_dir"] = str(run.path)
    run.save_json("results.json", results)
    run.close()
    return results


def run_evaluate(job: EvaluateJob, runs_root: str | Path, progress: bool = True) -> dict[str, Any]:
    """Evaluate a saved synthetic set (lr = its learned step size unless eval.lr is set)."""
    if (job.synthetic is None) == (job.ipc is None):
        raise ConfigError("evaluate needs exactly one of --synthetic PATH or --ipc K")
    device = resolve_device(job.device)
    dataset = job.dataset.load()
    if job.eval.dsa:
        job.eval.dsa_strategy = job.dataset.strategy()
    if job.synthetic is not None:
        syn = SyntheticSet.load(job.synthetic)
        syn.check_compatible(dataset, where=job.synthetic)
        images, labels, lr = syn.images, syn.labels, syn.syn_lr
        label = f"synthetic:{syn.meta.get('method', '?')}"
        ipc = syn.ipc()
    else:
        gen = make_generator(derive_seed(job.seed, "subset", job.ipc))
        images, labels = random_subset(dataset, job.ipc, generator=gen)
        lr, label, ipc = job.subset_lr, "random", job.ipc
    if job.eval.lr is not None:
        lr = job.eval.lr
    dataset = dataset.to(device)
    run = RunDir.for_command(runs_root, "evaluate", dataset.name, {"job": to_dict(job)})
    run.save_json("env.json", environment_info())
    start = time.perf_counter()
    report = evaluate_set(
        images.to(device),
        labels.to(device),
        dataset,
        job.eval,
        base_spec=job.model,
        seed=derive_seed(job.seed, "eval", label, ipc),
        lr=lr,
        progress=progress,
    )
    row = {
        "set": label,
        "ipc": ipc,
        "lr": lr,
        **report.to_dict(),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    run.metric(stage="evaluate", **_summary(row))
    results = {"dataset": dataset.describe(), "rows": [row], "run_dir": str(run.path)}
    run.save_json("results.json", results)
    run.close()
    return results


def match_config(job: DistillJob) -> Any:
    """Method defaults overlaid with the job's `match` section, validated (a MatchConfig for
    trajectory methods, the method's own config for objective methods)."""
    if method_kind(job.method) == "objective":
        return objective_config(job.method, job.match)
    return from_dict(MatchConfig, {**method_defaults(job.method), **job.match}, "match")


def expert_buffer_config(job: DistillJob) -> BufferConfig:
    """The buffer `run_distill` makes for `job` when none is given: the job's `experts`
    section with the job's network, the method's optimiser (sgd or gsam) and the dataset's DSA
    strategy. A copy: the job is not changed."""
    experts = copy.deepcopy(job.experts)
    experts.model = copy.deepcopy(job.model)
    experts.train.optimizer = job.expert_optimizer or method_expert_optimizer(job.method)
    if experts.train.dsa:
        experts.train.dsa_strategy = job.dataset.strategy()
    return experts


def _expert_store(
    job: DistillJob,
    dataset: MedicalDataset,
    runs_root: str | Path,
    device: torch.device,
    progress: bool,
    log: Any,
) -> TrajectoryStore:
    """The given buffer, or the one the job's `experts` section describes (made or reused)."""
    if job.buffer:
        return TrajectoryStore(job.buffer)
    experts = expert_buffer_config(job)
    folder = Path(runs_root) / "buffers" / _buffer_name(BufferJob(job.dataset, experts), dataset)
    log(f"expert buffer: {folder}")
    return generate_buffer(dataset, experts, folder, device=device, progress=progress)


def run_distill(job: DistillJob, runs_root: str | Path, progress: bool = True) -> dict[str, Any]:
    """Distil a dataset with one method; write the synthetic set, grids, metrics and results."""
    cfg = match_config(job)
    trajectory = method_kind(job.method) == "trajectory"
    device = resolve_device(job.device)
    dataset = job.dataset.load()
    if not (trajectory and cfg.haba_hallucinators > 0):
        check_ipc(dataset, [cfg.ipc])
    # Refuse a buffer made for another dataset or network, and windows it cannot serve,
    # before the run folder exists: a refused run leaves nothing behind.
    if trajectory:
        given = TrajectoryStore(job.buffer) if job.buffer else None
        if given is not None:
            given.check_compatible(dataset, job.model)
        check_schedule(cfg, given.epochs if given is not None else job.experts.epochs)
    dataset = dataset.to(device)
    strategy = job.dataset.strategy()
    config = {"job": to_dict(job), "match": to_dict(cfg)}
    name = f"{dataset.name.replace(':', '_').replace('/', '_')}-{job.method}-ipc{cfg.ipc}"
    out = (
        Path(job.out)
        if job.out
        else Path(runs_root) / "distill" / f"{name}-{stable_hash(config, 8)}"
    )
    run = RunDir(out, config)
    run.save_json("env.json", environment_info())
    evaluator = _periodic_evaluator(job, cfg, dataset, strategy, progress=False)
    on_metric = lambda record: run.metric(**record)  # noqa: E731
    start = time.perf_counter()
    buffer_s = 0.0
    if not trajectory:
        syn = distill_objective(
            job.method,
            job.match,
            dataset,
            job.model,
            device,
            out,
            progress,
            on_metric,
            dsa_strategy=strategy,
            evaluate=evaluator,
            log=run.log,
        )
    else:
        store = _expert_store(job, dataset, runs_root, device, progress, run.log)
        buffer_s = time.perf_counter() - start
        start = time.perf_counter()
        common = dict(
            device=device,
            out_dir=out,
            dsa_strategy=strategy,
            method=job.method,
            on_metric=on_metric,
            progress=progress,
            log=run.log,
        )
        if cfg.seq_subsets > 1:
            syn = run_seqmatch(
                cfg,
                dataset,
                store,
                job.model,
                num_subsets=cfg.seq_subsets,
                evaluate=evaluator,
                **common,
            )
        else:
            param = None
            if cfg.haba_hallucinators > 0:
                param = HaBaParam.from_real(
                    dataset,
                    cfg.ipc,
                    cfg.haba_hallucinators,
                    generator=make_generator(derive_seed(cfg.seed, "haba")),
                    lr_hallucinator=cfg.lr_hallucinator,
                )
            distiller = Distiller(cfg, dataset, store, job.model, parameterization=param, **common)
            syn = distiller.run(evaluate=evaluator)
        syn.meta.update({"buffer": str(store.path)})
    distill_s = time.perf_counter() - start
    syn.meta.update({"seed": cfg.seed})
    results: dict[str, Any] = {
        "method": job.method,
        "dataset": dataset.name,
        "ipc": cfg.ipc,
        "syn_lr": syn.syn_lr,
        "buffer_s": round(buffer_s, 1),
        "distill_s": round(distill_s, 1),
    }
    lr = job.eval.lr if job.eval.lr is not None else syn.syn_lr
    return _finish_set(
        run,
        syn,
        results,
        dataset,
        job.eval if job.final_eval else None,
        job.model,
        seed=derive_seed(cfg.seed, "final-eval"),
        lr=lr,
        label=job.method,
        ipc=cfg.ipc,
        strategy=strategy,
        progress=progress,
    )


def _finish_set(
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
    strategy: str,
    progress: bool,
) -> dict[str, Any]:
    """Save a made set (synthetic/, grids/), evaluate it when asked, write results.json."""
    out = run.path
    syn.save(out / "synthetic")
    save_class_grids(syn.images, syn.labels, syn.class_names, syn.normalization, out / "grids")
    results.update({"synthetic": str(out / "synthetic"), "run_dir": str(out), "rows": []})
    if eval_cfg is not None:
        t0 = time.perf_counter()
        eval_cfg.dsa_strategy = strategy
        device = dataset.train.images.device
        report = evaluate_set(
            syn.images.to(device),
            syn.labels.to(device),
            dataset,
            eval_cfg,
            base_spec=spec,
            seed=seed,
            lr=lr,
            progress=progress,
        )
        row = {
            "set": label,
            "ipc": ipc,
            "lr": lr,
            **report.to_dict(),
            "wall_s": round(time.perf_counter() - t0, 1),
        }
        results["rows"].append(row)
        run.metric(stage="final_eval", **_summary(row))
    run.save_json("results.json", results)
    run.close()
    return results


def _periodic_evaluator(
    job: DistillJob, cfg: MatchConfig, dataset: MedicalDataset, strategy: str, progress: bool
) -> Any:
    """evaluate(syn, iteration) -> metrics, with the (cheap) settings of match.eval."""
    if not cfg.eval_every:
        return None
    cfg.eval.dsa_strategy = strategy

    def evaluate(syn: SyntheticSet, iteration: int) -> dict[str, Any]:
        report = evaluate_set(
            syn.images.to(dataset.train.images.device),
            syn.labels.to(dataset.train.images.device),
            dataset,
            cfg.eval,
            base_spec=job.model,
            seed=derive_seed(cfg.seed, "eval", iteration),
            lr=cfg.eval.lr if cfg.eval.lr is not None else syn.syn_lr,
            progress=progress,
        )
        return _summary({"archs": report.to_dict()["archs"]})

    return evaluate


def run_coreset(job: CoresetJob, runs_root: str | Path, progress: bool = True) -> dict[str, Any]:
    """Select a coreset, save it as a synthetic set (same format), optionally evaluate it."""
    device = resolve_device(job.device)
    dataset = job.dataset.load()
    check_ipc(dataset, [job.ipc])
    dataset = dataset.to(device)
    config = {"job": to_dict(job)}
    name = f"{dataset.name.replace(':', '_').replace('/', '_')}-{job.selection}-ipc{job.ipc}"
    out = (
        Path(job.out)
        if job.out
        else Path(runs_root) / "coreset" / f"{name}-{stable_hash(config, 8)}"
    )
    run = RunDir(out, config)
    start = time.perf_counter()
    model = None
    if job.selection != "random":
        model = feature_network(
            dataset,
            job.model,
            epochs=job.feature_epochs,
            seed=derive_seed(job.seed, "features"),
            device=device,
            progress=progress,
        )
    syn = coreset_set(
        job.selection,
        dataset,
        job.ipc,
        model=model,
        generator=make_generator(derive_seed(job.seed, "coreset", job.ipc)),
        meta={"method": job.selection, "seed": job.seed},
    )
    results: dict[str, Any] = {
        "method": job.selection,
        "dataset": dataset.name,
        "ipc": job.ipc,
        "select_s": round(time.perf_counter() - start, 1),
    }
    return _finish_set(
        run,
        syn,
        results,
        dataset,
        job.eval if job.final_eval else None,
        job.model,
        seed=derive_seed(job.seed, "final-eval"),
        lr=job.eval.lr,
        label=job.selection,
        ipc=job.ipc,
        strategy=job.dataset.strategy(),
        progress=progress,
    )


def run_export(synthetic: str | Path, out: str | Path) -> Path:
    """Write a synthetic set as a MedMNIST-style npz of uint8 images."""
    return SyntheticSet.load(synthetic).export_npz(out)


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    """The numbers a person looks for first: mean ± std per architecture."""
    out = {}
    for arch, stats in row.get("archs", {}).items():
        out[arch] = {
            k: stats[k] for k in ("acc_mean", "acc_std", "auc_mean", "auc_std") if k in stats
        }
    return out


def device_summary() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
