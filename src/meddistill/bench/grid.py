"""`meddistill bench GRID.yaml`: datasets x methods x IPCs x seeds x evaluation architectures.

A grid is planned into cells (one per artifact: a synthetic set, a random real subset or the
full training set, for one dataset, IPC and seed). Each cell's artifact is made once and kept:
expert buffers and synthetic sets live in folders named by a hash of what produced them
(meddistill.jobs), and the results database (bench/db.py) records each finished artifact and
each trained evaluation network. Running a grid again, after a kill or with more seeds or
architectures, skips every network whose row exists and every artifact already made, and
resumes a half-made buffer or distillation from its own checkpoints.

Grid file (YAML, `include:` allowed; relative preset paths are read from `root`, by default
the grid file's folder):

    name: cpu-main                  # default: the file name without .yaml
    datasets:                       # a name, or {name, preset, config}
      - {name: bloodmnist, preset: configs/bloodmnist/cpu.yaml}
    methods: [hoptm, mtt]
    baselines: [full, random]       # real-data rows of the tables
    ipcs: [1, 10]
    seeds: [0]
    eval_archs: [convnet, lenet]
    eval: {num_nets: 5, epochs: 300}   # over each preset's eval section; models = eval_archs
    method_preset: configs/{dataset}/{method}/ipc{ipc}.yaml
    overrides: [match.iterations=50]   # key=value on every method job
    method_overrides: {mtt: [match.syn_steps=10]}   # and on one method's jobs
    full_train: {epochs: 30}           # training of the full-data networks
    full_nets: 1
    exclude: [{method: datm, ipc: 2}]  # cells to leave out
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from meddistill import jobs
from meddistill.bench.db import Artifact, ResultsDB, Stage, measure_stage
from meddistill.bench.db import Result as ResultRecord
from meddistill.config import apply_overrides, from_dict, load_yaml, merge, to_dict
from meddistill.data.dataset import MedicalDataset
from meddistill.data.synthetic import SyntheticSet
from meddistill.errors import ConfigError
from meddistill.methods import available_methods, coresets, method_kind
from meddistill.models.spec import ModelSpec
from meddistill.training.baselines import full_data, random_subset
from meddistill.training.config import TrainConfig
from meddistill.training.evaluate import (
    DEFAULT_LR,
    EvalConfig,
    resolve_lr,
    spec_for,
    train_fresh_network,
)
from meddistill.utils import derive_seed, make_generator, resolve_device, stable_hash

BASELINES = ("full", "random")
DB_FILE = "results.sqlite"
DEFAULT_FULL_TRAIN: dict[str, Any] = {"epochs": 30, "lr": 0.01, "batch_size": 256}
# Keys that say where or on what a job runs, not what it makes: left out of every identity.
_EXECUTION_KEYS = ("out", "device")
_DATASET_EXECUTION_KEYS = ("root", "download")


# ---------------------------------------------------------------------------------------------
# The grid file
# ---------------------------------------------------------------------------------------------


@dataclass
class DatasetEntry:
    """A dataset of the grid: a label (used in `method_preset` and the tables) and its config.

    `preset`: a YAML file with the dataset, model, experts and eval sections (e.g.
    configs/bloodmnist/cpu.yaml); `config`: a dict merged over it. The baselines and the
    evaluation of the real-data rows use this config; method cells merge it over their preset.
    `method_overrides`: key=value texts for one method on this dataset only (e.g. fewer DM
    iterations at 112 px), applied after the grid's own overrides.
    """

    name: str
    preset: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    method_overrides: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class GridSpec:
    """A benchmark grid (see the module docstring for the YAML form)."""

    name: str = "grid"
    datasets: list[DatasetEntry] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    baselines: list[str] = field(default_factory=lambda: ["full", "random"])
    ipcs: list[int] = field(default_factory=lambda: [1, 10])
    seeds: list[int] = field(default_factory=lambda: [0])
    eval_archs: list[str] = field(default_factory=lambda: ["convnet"])
    eval: dict[str, Any] = field(default_factory=dict)
    method_preset: str | None = None
    overrides: list[str] = field(default_factory=list)
    method_overrides: dict[str, list[str]] = field(default_factory=dict)
    full_train: dict[str, Any] = field(default_factory=dict)
    full_nets: int = 1
    random_lr: float = DEFAULT_LR
    exclude: list[dict[str, Any]] = field(default_factory=list)
    root: str | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\"):
            raise ConfigError(f"grid name {self.name!r} must be non-empty text without slashes")
        if not self.datasets:
            raise ConfigError("grid.datasets is empty; name at least one dataset")
        labels = [d.name for d in self.datasets]
        _no_duplicates("grid.datasets", labels)
        if not self.methods and not self.baselines:
            raise ConfigError("the grid has no methods and no baselines; nothing to run")
        self.methods = [m.lower() for m in self.methods]
        _no_duplicates("grid.methods", self.methods)
        clash = sorted(set(self.methods) & set(BASELINES))
        if clash:
            raise ConfigError(
                f"grid.methods lists {', '.join(clash)}: those are baselines; list them under "
                "grid.baselines"
            )
        bad = sorted(set(self.baselines) - set(BASELINES))
        if bad:
            raise ConfigError(
                f"unknown baseline(s) {', '.join(bad)} in grid.baselines; valid: "
                f"{', '.join(BASELINES)}"
            )
        _no_duplicates("grid.baselines", self.baselines)
        if (self.methods or "random" in self.baselines) and not self.ipcs:
            raise ConfigError(
                "grid.ipcs is empty; give the images per class to distil, e.g. [1, 10]"
            )
        if any(k < 1 for k in self.ipcs):
            raise ConfigError(f"grid.ipcs must be positive integers, got {self.ipcs}")
        _no_duplicates("grid.ipcs", self.ipcs)
        if not self.seeds:
            raise ConfigError("grid.seeds is empty; give at least one seed, e.g. [0]")
        _no_duplicates("grid.seeds", self.seeds)
        if not self.eval_archs:
            raise ConfigError("grid.eval_archs is empty; name at least one, e.g. [convnet]")
        self.eval_archs = [a.lower() for a in self.eval_archs]
        _no_duplicates("grid.eval_archs", self.eval_archs)
        self.method_overrides = self._checked_overrides("grid", self.method_overrides)
        for entry in self.datasets:
            where = f"grid.datasets[{entry.name}]"
            entry.method_overrides = self._checked_overrides(where, entry.method_overrides)
        if "models" in self.eval:
            raise ConfigError("grid.eval.models is set; list the architectures in grid.eval_archs")
        if self.full_nets < 1:
            raise ConfigError(f"grid.full_nets must be >= 1, got {self.full_nets}")
        if not self.random_lr > 0:
            raise ConfigError(f"grid.random_lr must be > 0, got {self.random_lr}")
        for rule in self.exclude:
            unknown = sorted(set(rule) - {"dataset", "method", "ipc", "seed"})
            if unknown or not rule:
                raise ConfigError(
                    f"grid.exclude entry {rule!r}: use keys dataset, method, ipc and seed"
                )

    def _checked_overrides(self, where: str, table: dict[str, Any]) -> dict[str, list[str]]:
        table = {k.lower(): v for k, v in table.items()}
        stray = sorted(set(table) - set(self.methods))
        if stray:
            raise ConfigError(
                f"{where}.method_overrides names {', '.join(stray)}, not in grid.methods "
                f"({', '.join(self.methods)})"
            )
        for method, items in table.items():
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise ConfigError(
                    f"{where}.method_overrides.{method} must be a list of key=value texts"
                )
        return table

    def subset(
        self, datasets: Sequence[str] | None = None, methods: Sequence[str] | None = None
    ) -> GridSpec:
        """The same grid restricted to some of its datasets and methods (one process per share
        of the datasets uses several cores); cells, identities and the grid name stay the same."""
        out = self
        if datasets:
            _check_known("dataset", datasets, [d.name for d in self.datasets], self.name)
            out = dataclasses.replace(out, datasets=[d for d in out.datasets if d.name in datasets])
        if methods:
            keep = [m.lower() for m in methods]
            _check_known("method", keep, self.methods, self.name)

            def kept(table: dict[str, list[str]]) -> dict[str, list[str]]:
                return {m: v for m, v in table.items() if m in keep}

            entries = [
                dataclasses.replace(d, method_overrides=kept(d.method_overrides))
                for d in out.datasets
            ]
            out = dataclasses.replace(
                out,
                datasets=entries,
                methods=[m for m in out.methods if m in keep],
                method_overrides=kept(out.method_overrides),
            )
        return out


def _check_known(what: str, names: Sequence[str], known: Sequence[str], grid: str) -> None:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(
            f"{what}(s) {', '.join(unknown)} not in grid {grid}; its {what}s: {', '.join(known)}"
        )


def _no_duplicates(where: str, values: Sequence[Any]) -> None:
    seen = [v for i, v in enumerate(values) if v in values[:i]]
    if seen:
        raise ConfigError(f"{where} lists {seen[0]!r} twice")


def grid_from_dict(data: dict[str, Any], root: str | Path | None = None) -> GridSpec:
    """Build a GridSpec from a mapping (datasets may be plain names); `root`: preset folder."""
    data = dict(data)
    datasets = data.get("datasets", [])
    if isinstance(datasets, (str, dict)):
        datasets = [datasets]
    if not isinstance(datasets, list):
        raise ConfigError(f"grid.datasets must be a list, got {datasets!r}")
    data["datasets"] = [{"name": d} if isinstance(d, str) else d for d in datasets]
    if root is not None:  # a relative `root:` in the file is read from the file's folder
        data["root"] = str(Path(root) / data["root"]) if data.get("root") else str(root)
    return from_dict(GridSpec, data, "grid")


def load_grid(path: str | Path, overrides: Sequence[str] = ()) -> GridSpec:
    """Read a grid file; `overrides` (key=value, e.g. 'seeds=[0,1]') apply on top of it."""
    p = Path(path)
    data = apply_overrides(load_yaml(p), list(overrides))
    data.setdefault("name", p.stem)
    return grid_from_dict(data, root=p.parent)


# ---------------------------------------------------------------------------------------------
# Runners: how a method makes its artifact
# ---------------------------------------------------------------------------------------------


@dataclass
class Produced:
    """What a runner made: a synthetic-set folder (readable by SyntheticSet.load)."""

    path: str
    stage: Stage | None = None
    parent: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    """What a runner may use: where runs go, the database, the device, logging."""

    runs_root: Path
    db: ResultsDB
    device: torch.device
    progress: bool = True
    log: Callable[[str], None] = print
    _datasets: dict[str, MedicalDataset] = field(default_factory=dict)

    def dataset(self, config: dict[str, Any]) -> MedicalDataset:
        """The dataset of a `dataset` config section, loaded once per grid run, on the device."""
        key = stable_hash(config)
        if key not in self._datasets:
            self._datasets.clear()  # cells come grouped by dataset: keep one in memory
            self._datasets[key] = _dataset_config(config).load().to(self.device)
        return self._datasets[key]


Runner = Callable[["Cell", RunContext], Produced]
Resolver = Callable[[str, dict[str, Any]], dict[str, Any]]


@dataclass
class _Registered:
    run: Runner
    resolve: Resolver | None
    uses_method_preset: bool = True


_RUNNERS: dict[str, _Registered] = {}


def register_runner(
    name: str, run: Runner, resolve: Resolver | None = None, *, uses_method_preset: bool = True
) -> None:
    """Make `name` usable in grid.methods.

    run(cell, ctx) makes the synthetic set of `cell` (its config is cell.config, its seed
    cell.seed, its IPC cell.ipc) and returns Produced(path=<synthetic-set folder>, stage=...).
    resolve(method, config) -> the validated, normalised config (raise ConfigError on bad
    input) at planning time, before anything runs; its result is hashed into the artifact id.
    uses_method_preset=False: the method reads only the dataset preset (grid.method_preset
    is not looked up for it).
    """
    key = name.lower()
    if key in BASELINES:
        raise ConfigError(f"'{name}' is a baseline name; choose another method name")
    _RUNNERS[key] = _Registered(run, resolve, uses_method_preset)


def known_methods() -> list[str]:
    """Every name grid.methods accepts."""
    return sorted(set(_RUNNERS) | set(available_methods()))


def _registered(method: str) -> _Registered:
    key = method.lower()
    if key in _RUNNERS:
        return _RUNNERS[key]
    if key in available_methods():
        return _Registered(run_distill_method, resolve_distill_config)
    raise ConfigError(
        f"unknown method '{method}' in grid.methods; known: {', '.join(known_methods())} "
        f"(baselines {', '.join(BASELINES)} go in grid.baselines)"
    )


def resolve_distill_config(method: str, data: dict[str, Any]) -> dict[str, Any]:
    """A DistillJob dict validated and completed with defaults (the method's section too).

    Trajectory methods: `experts` is what run_distill will train (its network, optimizer and
    DSA). Objective methods (DC, DM, ...) use no experts: those keys are dropped, so expert
    settings never change their identity.
    """
    job = from_dict(jobs.DistillJob, data)
    out = to_dict(job)
    if method_kind(method) != "trajectory":
        for key in ("experts", "expert_optimizer", "buffer"):
            out.pop(key, None)
    elif job.buffer is None:
        out["experts"] = to_dict(jobs.expert_buffer_config(job))
    out["match"] = to_dict(jobs.match_config(job))
    out["match"].pop("seed", None)  # the cell's seed is set when it runs
    return out


def run_distill_method(cell: Cell, ctx: RunContext) -> Produced:
    """`jobs.run_distill` without its final evaluation; for a trajectory method the expert
    buffer first (made, or reused from the database).

    The buffer is its own stage (wall time and peak memory of its own), passed to run_distill
    by absolute path so the distillation folder's hash, and thus its resume, never depends on
    how the runs folder was spelled.
    """
    job = from_dict(jobs.DistillJob, merge(cell.config, {"match": {"seed": cell.seed}}))
    parent = None
    if method_kind(job.method) == "trajectory" and job.buffer is None:
        experts = jobs.expert_buffer_config(job)
        buffer_job = jobs.BufferJob(dataset=job.dataset, buffer=experts, device=job.device)
        identity = {
            "kind": "buffer",
            "dataset": _dataset_identity(to_dict(job.dataset)),
            "buffer": to_dict(experts),
        }
        parent = stable_hash(identity)
        known = ctx.db.artifact(parent)
        if known is not None and known.path and Path(known.path).is_dir():
            path = known.path
            ctx.log(f"  buffer: reusing {path}")
        else:
            ctx.log("  buffer: training experts")
            with measure_stage(ctx.device) as stage:
                summary = jobs.run_buffer(buffer_job, ctx.runs_root, progress=ctx.progress)
            path = str(Path(summary["buffer"]).resolve())
            without_seed = {**identity, "buffer": {**identity["buffer"], "seed": None}}
            ctx.db.add_artifact(
                Artifact(
                    id=parent,
                    kind="buffer",
                    dataset=cell.dataset,
                    method="buffer",
                    ipc=None,
                    seed=experts.seed,
                    setting=stable_hash(without_seed),
                    config=to_dict(buffer_job),
                    path=path,
                    wall_s=stage.wall_s,
                    peak_mem_mb=stage.peak_mem_mb,
                    mem_kind=stage.mem_kind,
                    device=stage.device,
                )
            )
        job.buffer = str(Path(path).resolve())
    ctx.log(f"  distill: {cell.method} ipc {cell.ipc} seed {cell.seed}")
    with measure_stage(ctx.device) as stage:
        results = jobs.run_distill(job, ctx.runs_root, progress=ctx.progress)
    return Produced(
        path=results["synthetic"],
        stage=stage,
        parent=parent,
        meta={"run_dir": results["run_dir"], "syn_lr": results["syn_lr"]},
    )


# Coreset selections as grid methods; 'random' is the random-subset baseline row already.
CORESET_METHODS = tuple(m for m in coresets.CORESET_METHODS if m not in BASELINES)


def resolve_coreset_config(method: str, data: dict[str, Any]) -> dict[str, Any]:
    """A CoresetJob dict for a coreset cell: its dataset, feature network and IPC.

    The dataset preset's `model` is the network whose features rank the images; `coreset:`
    (e.g. {feature_epochs: 5}) may set the rest. Matching and expert settings are dropped:
    they do not change a coreset.
    """
    section = dict(data.get("coreset", {}))
    job = from_dict(
        jobs.CoresetJob,
        {
            **section,
            "dataset": data.get("dataset", {}),
            "model": data.get("model", {}),
            "selection": method,
            "ipc": data["match"]["ipc"],
            "final_eval": False,
            "device": data.get("device", "auto"),
        },
    )
    out = to_dict(job)
    out.pop("eval", None)
    out.pop("seed", None)  # the cell's seed is set when it runs
    out.pop("out", None)
    return out


def run_coreset_method(cell: Cell, ctx: RunContext) -> Produced:
    """`jobs.run_coreset` (no evaluation: the grid trains the networks)."""
    job = from_dict(jobs.CoresetJob, {**cell.config, "seed": cell.seed, "final_eval": False})
    ctx.log(f"  coreset: {cell.method} ipc {cell.ipc} seed {cell.seed}")
    with measure_stage(ctx.device) as stage:
        results = jobs.run_coreset(job, ctx.runs_root, progress=ctx.progress)
    return Produced(path=results["synthetic"], stage=stage, meta={"run_dir": results["run_dir"]})


for _name in CORESET_METHODS:
    register_runner(_name, run_coreset_method, resolve_coreset_config, uses_method_preset=False)


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One artifact of the grid and the evaluation networks it needs.

    kind 'synthetic' (a method) or 'baseline' ('random' or 'full'); `config` is the resolved
    config that makes it (without the seed); `eval` the evaluation setting hashed into eval_id.
    """

    index: int
    dataset: str
    method: str
    ipc: int | None
    seed: int
    kind: str
    config: dict[str, Any]
    artifact_id: str
    setting: str
    eval: dict[str, Any]
    eval_id: str
    archs: list[str]
    num_nets: int

    def label(self) -> str:
        ipc = "" if self.ipc is None else f" ipc{self.ipc}"
        return f"{self.dataset} {self.method}{ipc} seed{self.seed}"

    def networks(self) -> list[tuple[str, int, int]]:
        """(arch, k, eval_seed) of every evaluation network, in training order."""
        base = self.eval_base_seed()
        return [(a, k, derive_seed(base, a, k)) for a in self.archs for k in range(self.num_nets)]

    def eval_base_seed(self) -> int:
        """As the single commands: `distill` final eval, `baseline` random subset 0."""
        if self.method == "random":
            return derive_seed(self.seed, "random", self.ipc, 0)
        if self.method == "full":
            return derive_seed(self.seed, "full")
        return derive_seed(self.seed, "final-eval")


def _dataset_config(section: dict[str, Any]) -> jobs.DatasetConfig:
    return from_dict(jobs.DatasetConfig, section, "dataset")


def _dataset_identity(section: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in section.items() if k not in _DATASET_EXECUTION_KEYS}


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in config.items() if k not in _EXECUTION_KEYS}
    if isinstance(out.get("dataset"), dict):
        out["dataset"] = _dataset_identity(out["dataset"])
    return out


def _read_preset(grid: GridSpec, rel: str, what: str) -> dict[str, Any]:
    p = Path(rel)
    if not p.is_absolute():
        p = Path(grid.root or ".") / p
    if not p.is_file():
        raise ConfigError(
            f"preset {p} for {what} not found; relative paths are read from {grid.root or '.'} "
            "(the grid file's folder, or grid.root); add the file or exclude the cell"
        )
    return load_yaml(p)


def _dataset_base(grid: GridSpec, entry: DatasetEntry) -> dict[str, Any]:
    data = _read_preset(grid, entry.preset, f"dataset {entry.name}") if entry.preset else {}
    data = merge(data, entry.config)
    data.setdefault("dataset", {})
    data["dataset"].setdefault("name", entry.name)
    return data


def _excluded(grid: GridSpec, dataset: str, method: str, ipc: int | None, seed: int) -> bool:
    values = {"dataset": dataset, "method": method, "ipc": ipc, "seed": seed}
    return any(all(values[k] == v for k, v in rule.items()) for rule in grid.exclude)


def _eval_setting(
    grid: GridSpec, data: dict[str, Any], method: str
) -> tuple[dict[str, Any], EvalConfig, ModelSpec]:
    """The evaluation setting (hashed into eval_id) of a cell, its EvalConfig and base network."""
    dataset = _dataset_config(data.get("dataset", {}))
    base_spec = from_dict(ModelSpec, data.get("model", {}), "model")
    for arch in grid.eval_archs:
        spec_for(arch, base_spec)  # an unknown architecture fails here, before anything runs
    section = merge(data.get("eval", {}), grid.eval)
    section["models"] = list(grid.eval_archs)
    cfg = from_dict(EvalConfig, section, "eval")
    if cfg.dsa:
        cfg.dsa_strategy = dataset.strategy()
    setting: dict[str, Any] = {"model": to_dict(base_spec)}
    if method == "full":
        train = merge(DEFAULT_FULL_TRAIN, grid.full_train)
        full = from_dict(TrainConfig, train, "grid.full_train")
        if full.dsa:
            full.dsa_strategy = dataset.strategy()
        setting["full_train"] = to_dict(full)
    else:
        setting["eval"] = {k: v for k, v in to_dict(cfg).items() if k not in ("models", "num_nets")}
        if cfg.lr is None:
            real = method == "random" or method in CORESET_METHODS  # real images: no learned lr
            setting["lr"] = grid.random_lr if real else "learned"
    return setting, cfg, base_spec


def _cell(
    index: int,
    dataset: str,
    method: str,
    ipc: int,
    seed: int,
    kind: str,
    config: dict[str, Any],
    identity: dict[str, Any],
    setting: dict[str, Any],
    grid: GridSpec,
    num_nets: int,
) -> Cell:
    """A planned cell: its artifact id hashes what produces it plus the seed; `setting` drops
    the seed (so seeds of one setting pool in the tables); eval_id hashes the evaluation."""
    return Cell(
        index=index,
        dataset=dataset,
        method=method,
        ipc=ipc,
        seed=seed,
        kind=kind,
        config=config,
        artifact_id=stable_hash({**identity, "seed": seed}),
        setting=stable_hash(identity),
        eval=setting,
        eval_id=stable_hash(setting),
        archs=list(grid.eval_archs),
        num_nets=num_nets,
    )


def _baseline_cell(
    grid: GridSpec, entry: DatasetEntry, method: str, ipc: int | None, seed: int, index: int
) -> Cell:
    data = _dataset_base(grid, entry)
    setting, cfg, _ = _eval_setting(grid, data, method)
    config = {
        "dataset": to_dict(_dataset_config(data["dataset"])),
        "model": setting["model"],
    }
    identity = {
        "kind": method,
        "dataset": _dataset_identity(config["dataset"]),
        "ipc": ipc,
    }
    num_nets = grid.full_nets if method == "full" else cfg.num_nets
    return _cell(
        index, entry.name, method, ipc, seed, "baseline", config, identity, setting, grid, num_nets
    )


def _method_cell(
    grid: GridSpec, entry: DatasetEntry, method: str, ipc: int, seed: int, index: int
) -> Cell:
    registered = _registered(method)
    where = f"({entry.name}, {method}, ipc {ipc})"
    data = _dataset_base(grid, entry) if entry.preset else {}
    if grid.method_preset and registered.uses_method_preset:
        rel = grid.method_preset.format(dataset=entry.name, method=method, ipc=ipc)
        preset = _read_preset(grid, rel, where)
        if preset.get("method", method) != method:
            raise ConfigError(
                f"preset {rel} is for method '{preset['method']}', not '{method}' {where}; "
                "fix grid.method_preset"
            )
        preset_ipc = preset.get("match", {}).get("ipc", ipc)
        if preset_ipc != ipc:
            raise ConfigError(
                f"preset {rel} sets match.ipc={preset_ipc}, not {ipc} {where}; fix "
                "grid.method_preset"
            )
        data = merge(data, preset)
    data = merge(data, entry.config)
    data = apply_overrides(data, grid.overrides)
    data = apply_overrides(data, grid.method_overrides.get(method, []))
    data = apply_overrides(data, entry.method_overrides.get(method, []))
    data.setdefault("dataset", {})
    data["dataset"].setdefault("name", entry.name)
    data.setdefault("match", {})
    data["method"] = method
    data["match"]["ipc"] = ipc
    data["device"] = grid.device
    data["final_eval"] = False
    data["out"] = None
    setting, cfg, _ = _eval_setting(grid, data, method)
    data.pop("eval", None)  # evaluated by the grid: the job's own eval must not change its hash
    config = registered.resolve(method, data) if registered.resolve else data
    identity = {"kind": "synthetic", "method": method, "ipc": ipc, "config": _identity(config)}
    return _cell(
        index,
        entry.name,
        method,
        ipc,
        seed,
        "synthetic",
        config,
        identity,
        setting,
        grid,
        cfg.num_nets,
    )


def plan(grid: GridSpec) -> list[Cell]:
    """Every cell of the grid, in run order; every config is resolved and validated here.

    Order: per dataset, the full-data cells, then per IPC the random subsets and the methods
    (in grid order), each over the seeds. Excluded cells are left out.
    """
    for method in grid.methods:
        _registered(method)
    specs: list[tuple[str, DatasetEntry, str, int | None, int]] = []
    for entry in grid.datasets:
        if "full" in grid.baselines:
            specs += [("baseline", entry, "full", None, s) for s in grid.seeds]
        for ipc in grid.ipcs:
            if "random" in grid.baselines:
                specs += [("baseline", entry, "random", ipc, s) for s in grid.seeds]
            specs += [("synthetic", entry, m, ipc, s) for m in grid.methods for s in grid.seeds]
    cells: list[Cell] = []
    for kind, entry, method, ipc, seed in specs:
        if _excluded(grid, entry.name, method, ipc, seed):
            continue
        make = _baseline_cell if kind == "baseline" else _method_cell
        cells.append(make(grid, entry, method, ipc, seed, len(cells)))  # type: ignore[arg-type]
    if not cells:
        raise ConfigError("every cell of the grid is excluded; nothing to run")
    return cells


def cell_status(cells: Sequence[Cell], db: ResultsDB) -> list[tuple[Cell, bool, int, int]]:
    """(cell, artifact made?, networks done, networks needed): what `run_grid` would still do."""
    out = []
    for cell in cells:
        nets = cell.networks()
        done = sum(db.has_result(cell.artifact_id, a, cell.eval_id, s) for a, _, s in nets)
        out.append((cell, db.artifact(cell.artifact_id) is not None, done, len(nets)))
    return out


def format_status(status: Sequence[tuple[Cell, bool, int, int]]) -> str:
    """The plan as text, one line per cell (for `meddistill bench --plan`)."""
    lines = [f"{'#':>4}  {'cell':<36} {'artifact':<10} {'networks':>9}  id"]
    for cell, made, done, needed in status:
        lines.append(
            f"{cell.index + 1:>4}  {cell.label():<36} {'made' if made else 'to make':<10} "
            f"{done:>4}/{needed:<4}  {cell.artifact_id}"
        )
    todo = sum(needed - done for _, _, done, needed in status)
    lines.append(f"{todo} of {sum(n for *_, n in status)} networks to train")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


@dataclass
class EvalSet:
    """The images one cell's networks train on, and how."""

    images: torch.Tensor
    labels: torch.Tensor
    train: TrainConfig
    spec: ModelSpec


def evaluate_network(
    spec: ModelSpec,
    dataset: MedicalDataset,
    images: torch.Tensor,
    labels: torch.Tensor,
    train_cfg: TrainConfig,
    *,
    net_seed: int,
    device: torch.device,
    progress: bool | str,
) -> dict[str, float]:
    """Train one fresh network (as evaluate_set does for its k-th network) and test it."""
    result = train_fresh_network(
        spec,
        dataset,
        images,
        labels,
        train_cfg,
        net_seed=net_seed,
        device=device,
        test=dataset.test,
        progress=progress,
    )
    return {
        "acc": float(result.test_acc),
        "auc": float(result.test_auc) if result.test_auc is not None else float("nan"),
        "loss": float(result.test_loss) if result.test_loss is not None else float("nan"),
    }


def _eval_set(cell: Cell, ctx: RunContext, dataset: MedicalDataset, path: str | None) -> EvalSet:
    spec = from_dict(ModelSpec, cell.eval["model"], "model")
    if cell.method == "full":
        full = from_dict(TrainConfig, cell.eval["full_train"], "full_train")
        images, labels = full_data(dataset)
        return EvalSet(images, labels, full, spec)
    cfg = from_dict(EvalConfig, {**cell.eval["eval"], "models": cell.archs}, "eval")
    if cell.method == "random":
        gen = make_generator(cell.eval_base_seed())
        images, labels = random_subset(dataset, cell.ipc, generator=gen)  # type: ignore[arg-type]
        lr = cfg.lr if cfg.lr is not None else float(cell.eval["lr"])
    else:
        syn = SyntheticSet.load(path)  # type: ignore[arg-type]
        syn.check_compatible(dataset, where=str(path))
        images, labels = syn.images.to(ctx.device), syn.labels.to(ctx.device)
        fixed = cell.eval.get("lr", "learned")
        lr, _ = resolve_lr(cfg.lr, syn.syn_lr if fixed == "learned" else float(fixed))
    return EvalSet(images, labels, cfg.train_config(lr), spec)


def _produce(cell: Cell, ctx: RunContext) -> Artifact:
    """The cell's artifact: from the database when it is there (and its folder), else made."""
    known = ctx.db.artifact(cell.artifact_id)
    if known is not None and (known.path is None or Path(known.path).exists()):
        return known
    if known is not None:
        ctx.log(f"  {known.path} is gone; making it again")
    art = Artifact(
        id=cell.artifact_id,
        kind=cell.kind,
        dataset=cell.dataset,
        method=cell.method,
        ipc=cell.ipc,
        seed=cell.seed,
        setting=cell.setting,
        config={**cell.config, "seed": cell.seed},
        device=str(ctx.device),
    )
    if cell.kind == "synthetic":
        produced = _registered(cell.method).run(cell, ctx)
        art.path, art.parent = produced.path, produced.parent
        art.config = {**art.config, "produced": produced.meta}
        if produced.stage is not None:
            art.wall_s = produced.stage.wall_s
            art.peak_mem_mb = produced.stage.peak_mem_mb
            art.mem_kind = produced.stage.mem_kind
    ctx.db.add_artifact(art)
    return ctx.db.artifact(cell.artifact_id)  # type: ignore[return-value]


def run_cell(cell: Cell, ctx: RunContext, grid_name: str) -> int:
    """Make the cell's artifact if needed and train its missing networks; return how many."""
    ctx.db.add_eval(cell.eval_id, cell.eval)
    nets = cell.networks()
    missing = [n for n in nets if not ctx.db.has_result(cell.artifact_id, n[0], cell.eval_id, n[2])]
    known = ctx.db.artifact(cell.artifact_id)
    if not missing and known is not None:
        ctx.db.add_grid_cell(grid_name, cell.artifact_id, cell.eval_id)
        return 0
    art = _produce(cell, ctx)
    ctx.db.add_grid_cell(grid_name, cell.artifact_id, cell.eval_id)
    if not missing:
        return 0
    dataset = ctx.dataset(cell.config["dataset"])
    evs = _eval_set(cell, ctx, dataset, art.path)
    train = evs.train
    for arch, k, seed in missing:
        with measure_stage(ctx.device) as stage:
            out = evaluate_network(
                spec_for(arch, evs.spec),
                dataset,
                evs.images,
                evs.labels,
                train,
                net_seed=seed,
                device=ctx.device,
                progress=f"{cell.label()} {arch} net {k + 1}/{cell.num_nets}"
                if ctx.progress
                else False,
            )
        ctx.db.add_result(
            ResultRecord(
                artifact_id=cell.artifact_id,
                arch=arch,
                eval_id=cell.eval_id,
                eval_seed=seed,
                net_index=k,
                acc=out["acc"],
                auc=out["auc"],
                loss=out["loss"],
                epochs=train.epochs,
                lr=train.lr,
                wall_s=stage.wall_s,
                peak_mem_mb=stage.peak_mem_mb,
                mem_kind=stage.mem_kind,
                device=stage.device,
            )
        )
        ctx.log(f"  {arch} net {k + 1}/{cell.num_nets}: acc {100 * out['acc']:.2f} %")
    return len(missing)


def run_grid(
    grid: GridSpec,
    runs_root: str | Path,
    db: ResultsDB | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    data_root: str | None = None,
    download: bool = False,
    device: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) every cell of the grid; results go to `db` (default runs_root/results.sqlite).

    `data_root`, `download` and `device` say where this machine finds data and computes; they
    are not part of any artifact's identity.
    """
    runs = Path(runs_root)
    if device is not None:
        grid = dataclasses.replace(grid, device=device)
    cells = plan(grid)
    if data_root is not None or download:
        for cell in cells:
            if data_root is not None:
                cell.config["dataset"]["root"] = data_root
            if download:
                cell.config["dataset"]["download"] = True
    own_db = db is None
    database = db if db is not None else ResultsDB(runs / DB_FILE)
    ctx = RunContext(
        runs_root=runs,
        db=database,
        device=resolve_device(grid.device),
        progress=progress,
        log=log or (lambda _msg: None),
    )
    summary = {"grid": grid.name, "db": str(database.path), "cells": len(cells), "skipped": 0}
    trained = 0
    try:
        for cell in cells:
            ctx.log(f"[{cell.index + 1}/{len(cells)}] {cell.label()}")
            count = run_cell(cell, ctx, grid.name)
            if count == 0:
                summary["skipped"] += 1
                ctx.log("  done already")
            trained += count
    finally:
        if own_db:
            database.close()
    summary["networks_trained"] = trained
    return summary
