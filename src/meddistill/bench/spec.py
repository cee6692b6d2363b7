"""The grid file: datasets x methods x IPCs x seeds x evaluation architectures, validated.

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
    variants:                          # a method under other settings, as a row of its own
      hoptm+soft: {method: hoptm, overrides: [match.soft_labels=true]}
    full_train: {epochs: 30}           # training of the full-data networks
    full_nets: 1
    exclude: [{method: datm, ipc: 2}]  # cells to leave out
    audit: {enabled: true, members: 500, shadows: 0, eval: {num_nets: 2, epochs: 300}}
                                       # audit every synthetic set after evaluating it
                                       # (audit.* options; eval, full_train, subset_lr, seed:
                                       # the audit's networks; meddistill.privacy)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meddistill.app.config import AuditJob, DatasetConfig, dataset_section_identity
from meddistill.config import apply_overrides, from_dict, load_yaml
from meddistill.errors import ConfigError
from meddistill.training.evaluate import DEFAULT_LR

BASELINES = ("full", "random")
# Keys of a dataset section that say where this machine finds the data, not which data it is.
_DATASET_EXECUTION_KEYS = ("root", "download")


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
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    full_train: dict[str, Any] = field(default_factory=dict)
    full_nets: int = 1
    random_lr: float = DEFAULT_LR
    exclude: list[dict[str, Any]] = field(default_factory=list)
    root: str | None = None
    device: str = "auto"
    audit: dict[str, Any] = field(default_factory=dict)

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
        self.variants = _checked_variants(self.variants)
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
        audit_job_section(self.audit)  # refuses a bad audit section now, before any work
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

    def base_method(self, name: str) -> str:
        """The registered method a grid row runs (a variant's `method`, else the name)."""
        return self.variants[name]["method"] if name in self.variants else name

    def variant_overrides(self, name: str) -> list[str]:
        """A variant's key=value settings (applied after grid.overrides); [] for a method."""
        return list(self.variants.get(name, {}).get("overrides", []))

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


# Keys of grid.audit that say how the audit's networks train (AuditJob's own sections); the
# others are audit.* options (AuditConfig).
AUDIT_JOB_KEYS = ("eval", "full_train", "subset_lr", "seed")


def audit_job_section(section: dict[str, Any]) -> dict[str, Any] | None:
    """grid.audit as the keys of an AuditJob (validated; its dataset, set and model come from
    each cell), or None when audits are off (no section, or enabled: false)."""
    if not section:
        return None
    if not isinstance(section.get("enabled", False), bool):
        raise ConfigError(f"grid.audit.enabled must be true or false, got {section['enabled']!r}")
    if not section.get("enabled", False):
        return None
    body = {k: v for k, v in section.items() if k != "enabled"}
    job = {k: body.pop(k) for k in AUDIT_JOB_KEYS if k in body}
    job["audit"] = body
    try:
        from_dict(AuditJob, job)
    except ConfigError as exc:
        raise ConfigError(f"grid.audit: {exc}") from None
    return job


def _checked_variants(variants: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """grid.variants: {label: {method: NAME, overrides: [key=value, ...]}}; a label is a row
    name of its own (not a baseline), its method a plain method name (not another variant)."""
    out: dict[str, dict[str, Any]] = {}
    for label, body in variants.items():
        where = f"grid.variants.{label}"
        if not isinstance(body, dict) or set(body) - {"method", "overrides"}:
            raise ConfigError(f"{where} must be {{method: NAME, overrides: [key=value, ...]}}")
        method, items = body.get("method"), body.get("overrides", [])
        if not isinstance(method, str) or method.lower() in variants:
            raise ConfigError(f"{where}.method must name a method of meddistill, got {method!r}")
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"{where}.overrides must be a list of key=value texts")
        if label.lower() in BASELINES or label.lower() == method.lower():
            raise ConfigError(f"{where}: choose a label other than {label!r} (a row of its own)")
        out[label.lower()] = {"method": method.lower(), "overrides": items}
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


def _dataset_config(section: dict[str, Any]) -> DatasetConfig:
    """A dataset section validated (shared by planning and the runners, which load it)."""
    return from_dict(DatasetConfig, section, "dataset")


def _dataset_identity(section: dict[str, Any]) -> dict[str, Any]:
    """A dataset section without where-to-find-it keys: what artifact identities hash."""
    kept = dataset_section_identity(section)
    return {k: v for k, v in kept.items() if k not in _DATASET_EXECUTION_KEYS}
