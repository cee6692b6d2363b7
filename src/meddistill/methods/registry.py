"""The one registry of methods: the CLI, bench and the Python API dispatch through it."""

from __future__ import annotations

from meddistill.errors import ConfigError
from meddistill.methods import (
    att,
    cafe,
    coresets,
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
from meddistill.methods.base import MethodEntry

_ENTRIES: list[MethodEntry] = [
    hoptm.METHOD,
    ptm.METHOD,
    mtt.METHOD,
    ftd.METHOD,
    datm.METHOD,
    tesla.METHOD,
    att.METHOD,
    smdd.METHOD,
    seqmatch.METHOD,
    haba.METHOD,
    dc.METHOD,
    dsa_method.METHOD,
    dm.METHOD,
    idm.METHOD,
    cafe.METHOD,
    *coresets.METHODS,
]
METHODS: dict[str, MethodEntry] = {m.name: m for m in _ENTRIES}


def available_methods() -> list[str]:
    """Every method name, sorted."""
    return sorted(METHODS)


def get_method(name: str) -> MethodEntry:
    """The method called `name` (case-insensitive); a clear error listing the valid names."""
    key = str(name).lower()
    if key not in METHODS:
        raise ConfigError(f"unknown method '{name}'; valid: {', '.join(available_methods())}")
    return METHODS[key]


def register(method: MethodEntry) -> None:
    """Add a user's method (one object: name, config type, experts, distill)."""
    if method.name in METHODS:
        raise ConfigError(f"a method named '{method.name}' is registered already")
    METHODS[method.name] = method
