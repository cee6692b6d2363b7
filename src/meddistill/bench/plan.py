"""Planning: a grid becomes cells, one per artifact, each with its resolved config and ids.

A cell is one artifact (a synthetic set, a random real subset or the full training set, for
one dataset, IPC and seed) and the evaluation networks it needs. Its artifact id hashes what
produces it plus the seed, so a planned cell is found again in the results database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meddistill.app.config import AuditJob
from meddistill.bench.db import ResultsDB
from meddistill.bench.runners import CORESET_METHODS, _registered
from meddistill.bench.spec import (
    DatasetEntry,
    GridSpec,
    _dataset_config,
    _dataset_identity,
    audit_job_section,
)
from meddistill.config import apply_overrides, from_dict, load_yaml, merge, to_dict
from meddistill.errors import ConfigError
from meddistill.experts.config import buffer_section_identity
from meddistill.matching.config import match_identity
from meddistill.models.spec import ModelSpec
from meddistill.privacy.config import RULES_VERSION
from meddistill.training.config import TrainConfig
from meddistill.training.evaluate import EvalConfig, spec_for
from meddistill.utils import derive_seed, stable_hash

DEFAULT_FULL_TRAIN: dict[str, Any] = {"epochs": 30, "lr": 0.01, "batch_size": 256}
# Keys that say where or on what a job runs, not what it makes: left out of every identity.
_EXECUTION_KEYS = ("out", "device", "keep_checkpoint", "tuned_for")


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
    base: str | None = None  # the method a variant row runs (None: `method` itself)
    audit: dict[str, Any] | None = None  # the AuditJob keys of its audit (grid.audit), or None
    audit_id: str | None = None  # hash of the artifact and its audit's settings

    @property
    def runner(self) -> str:
        """The registered method that makes this cell's artifact."""
        return self.base or self.method

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


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    """What a cell's artifact id hashes: the config without where it runs; hard-label knobs
    left at their defaults are left out (and every unset eval.hard_labels, an unset experts.dp),
    so cells recorded before those options existed keep their ids."""
    out = {k: v for k, v in config.items() if k not in _EXECUTION_KEYS}
    if isinstance(out.get("dataset"), dict):
        out["dataset"] = _dataset_identity(out["dataset"])
    if isinstance(out.get("match"), dict):
        out["match"] = match_identity(out["match"])
    if isinstance(out.get("experts"), dict):
        out["experts"] = buffer_section_identity(out["experts"])
    return _eval_sections_as_identities(out)


def _eval_sections_as_identities(section: dict[str, Any]) -> dict[str, Any]:
    """The section with every eval section in it as EvalConfig.identity_section hashes it."""
    out = {}
    for key, value in section.items():
        if isinstance(value, dict):
            value = _eval_sections_as_identities(value)
            if key == "eval":
                value = EvalConfig.identity_section(value)
        out[key] = value
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
        setting["eval"] = {
            k: v for k, v in cfg.protocol().items() if k not in ("models", "num_nets")
        }
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
    base = grid.base_method(method)
    registered = _registered(base)
    where = f"({entry.name}, {method}, ipc {ipc})"
    data = _dataset_base(grid, entry) if entry.preset else {}
    if grid.method_preset and registered.uses_method_preset:
        rel = grid.method_preset.format(dataset=entry.name, method=base, ipc=ipc)
        preset = _read_preset(grid, rel, where)
        if preset.get("method", base) != base:
            raise ConfigError(
                f"preset {rel} is for method '{preset['method']}', not '{base}' {where}; "
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
    data = apply_overrides(data, grid.variant_overrides(method))
    data = apply_overrides(data, grid.method_overrides.get(method, []))
    data = apply_overrides(data, entry.method_overrides.get(method, []))
    data.setdefault("dataset", {})
    data["dataset"].setdefault("name", entry.name)
    data.setdefault("match", {})
    data["method"] = base
    data["match"]["ipc"] = ipc
    data["device"] = grid.device
    data["final_eval"] = False
    data["out"] = None
    setting, cfg, _ = _eval_setting(grid, data, base)
    data.pop("eval", None)  # evaluated by the grid: the job's own eval must not change its hash
    config = registered.resolve(base, data) if registered.resolve else data
    identity = {"kind": "synthetic", "method": method, "ipc": ipc, "config": _identity(config)}
    cell = _cell(
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
    cell.base = base if base != method else None
    return cell


def plan(grid: GridSpec) -> list[Cell]:
    """Every cell of the grid, in run order; every config is resolved and validated here.

    Order: per dataset, the full-data cells, then per IPC the random subsets and the methods
    (in grid order), each over the seeds. Excluded cells are left out.
    """
    for method in grid.methods:
        _registered(grid.base_method(method))
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
    section = audit_job_section(grid.audit)
    for cell in cells:
        if section is not None and cell.kind == "synthetic":
            _plan_audit(cell, section)
    return cells


# AuditJob keys that say where or on what an audit runs, not what it measures.
_AUDIT_EXECUTION_KEYS = ("synthetic", "out", "device", "tuned_for")


def _plan_audit(cell: Cell, section: dict[str, Any]) -> None:
    """The cell's audit: grid.audit on the cell's network (its dataset and set are added when
    it runs); its id hashes the artifact and what the audit measures, how."""
    cell.audit = {**section, "model": cell.config.get("model", {})}
    job = to_dict(from_dict(AuditJob, {**cell.audit, "dataset": cell.config["dataset"]}))
    identity = {k: v for k, v in job.items() if k not in _AUDIT_EXECUTION_KEYS}
    identity["dataset"] = _dataset_identity(identity["dataset"])
    identity["eval"] = {k: v for k, v in job["eval"].items() if k not in EvalConfig.SCHEDULING}
    identity["rules"] = RULES_VERSION  # a verdict under other rules is another audit
    cell.audit_id = stable_hash({"artifact": cell.artifact_id, "audit": identity})


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
