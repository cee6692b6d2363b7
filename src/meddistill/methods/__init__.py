"""Methods: each module names its paper and sets the defaults of the engine it configures.

Two kinds, one engine each:
- trajectory methods (hoptm, ptm, mtt, ftd, datm, tesla, att, smdd, seqmatch, haba): a dict of MatchConfig defaults
  for the trajectory-matching engine (meddistill.matching.engine) and the kind of expert buffer
  they expect (`EXPERTS`: 'sgd' or 'gsam');
- objective methods (dc, dsa, dm, idm, cafe; `KIND = "objective"`): a config dataclass and an
  objective for the shared surrogate-objective loop (meddistill.matching.objective); no experts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from meddistill.config import from_dict
from meddistill.data.dataset import MedicalDataset
from meddistill.data.synthetic import SyntheticSet
from meddistill.errors import ConfigError
from meddistill.matching.objective import MetricSink, ObjectiveConfig, ObjectiveDistiller
from meddistill.methods import (
    att,
    cafe,
    datm,
    dc,
    dm,
    dsa_method,
    ftd,
    haba,
    hoptm,
    idm,
    mtt,
    ptm,
    seqmatch,
    smdd,
    tesla,
)
from meddistill.models import ModelSpec

_MODULES: dict[str, ModuleType] = {
    "hoptm": hoptm,
    "ptm": ptm,
    "mtt": mtt,
    "ftd": ftd,
    "datm": datm,
    "tesla": tesla,
    "att": att,
    "smdd": smdd,
    "seqmatch": seqmatch,
    "haba": haba,
    "dc": dc,
    "dsa": dsa_method,
    "dm": dm,
    "idm": idm,
    "cafe": cafe,
}


def available_methods() -> list[str]:
    return sorted(_MODULES)


def method_module(name: str) -> ModuleType:
    key = name.lower()
    if key not in _MODULES:
        raise ConfigError(f"unknown method '{name}'; valid: {', '.join(available_methods())}")
    return _MODULES[key]


def method_kind(name: str) -> str:
    """'trajectory' (matching engine + expert buffer) or 'objective' (no experts)."""
    return str(getattr(method_module(name), "KIND", "trajectory"))


def trajectory_methods() -> list[str]:
    return [m for m in available_methods() if method_kind(m) == "trajectory"]


def method_defaults(name: str) -> dict[str, Any]:
    """The defaults of a method's config (a fresh copy)."""
    return dict(method_module(name).DEFAULTS)


def method_expert_optimizer(name: str) -> str:
    """'sgd' (MTT-style experts) or 'gsam' (flat experts of FTD, DATM, HoP-TM)."""
    return str(getattr(method_module(name), "EXPERTS", "sgd"))


def objective_config(method: str, cfg_dict: dict[str, Any] | None) -> ObjectiveConfig:
    """An objective method's DEFAULTS overlaid with `cfg_dict`, validated into its config."""
    module = method_module(method)
    if method_kind(method) != "objective":
        raise ConfigError(f"method '{method}' is a trajectory method, not an objective method")
    return from_dict(module.CONFIG, {**module.DEFAULTS, **(cfg_dict or {})}, "match")


def distill_objective(
    method: str,
    cfg_dict: dict[str, Any] | None,
    dataset: MedicalDataset,
    spec: ModelSpec,
    device: torch.device,
    out_dir: str | Path,
    progress: bool = True,
    on_metric: MetricSink | None = None,
    *,
    dsa_strategy: str | None = None,
    evaluate: Callable[[SyntheticSet, int], dict[str, Any]] | None = None,
    log: Callable[[str], None] | None = None,
) -> SyntheticSet:
    """Distil `dataset` with DC, DSA, DM, IDM or CAFE; resumes from out_dir/checkpoint."""
    cfg = objective_config(method, cfg_dict)
    distiller = ObjectiveDistiller(
        cfg,
        dataset,
        spec,
        method_module(method).build,
        device=device,
        out_dir=out_dir,
        dsa_strategy=dsa_strategy,
        method=method.lower(),
        on_metric=on_metric,
        progress=progress,
        log=log,
    )
    return distiller.run(evaluate=evaluate)
