"""Methods as presets of the matching engine: each module names its paper and sets defaults.

A method is a dict of MatchConfig defaults (plus the kind of expert buffer it expects); the
engine (meddistill.matching) does the work. `method_defaults(name)` returns a copy.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from meddistill.errors import ConfigError
from meddistill.methods import att, datm, ftd, hoptm, mtt, ptm, tesla

_MODULES: dict[str, ModuleType] = {
    "hoptm": hoptm,
    "ptm": ptm,
    "mtt": mtt,
    "ftd": ftd,
    "datm": datm,
    "tesla": tesla,
    "att": att,
}


def available_methods() -> list[str]:
    return sorted(_MODULES)


def method_module(name: str) -> ModuleType:
    key = name.lower()
    if key not in _MODULES:
        raise ConfigError(f"unknown method '{name}'; valid: {', '.join(available_methods())}")
    return _MODULES[key]


def method_defaults(name: str) -> dict[str, Any]:
    """The MatchConfig defaults of a method (a fresh copy)."""
    return dict(method_module(name).DEFAULTS)


def method_expert_optimizer(name: str) -> str:
    """'sgd' (MTT-style experts) or 'gsam' (flat experts of FTD, DATM, HoP-TM)."""
    return str(getattr(method_module(name), "EXPERTS", "sgd"))
