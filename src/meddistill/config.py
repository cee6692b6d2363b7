"""Config plumbing: dataclasses validated on load, YAML files, and `key=value` overrides.

Each stage defines its own dataclass (training, buffer, evaluation, distillation). This module
turns nested dicts into those dataclasses, refusing unknown keys and wrongly typed values with a
message that names the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from meddistill.errors import ConfigError

T = TypeVar("T")


def load_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML mapping; a missing or malformed file is a ConfigError naming it.

    A top-level `include: [a.yaml, ...]` (paths relative to the including file) is merged
    first, in order, and the file's own keys go on top: presets share their common parts.
    """
    p = Path(path)
    if p.resolve() in _seen:
        raise ConfigError(
            f"config file {p} includes itself (through {' -> '.join(map(str, _seen))})"
        )
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}; check the path given to --config")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"config file {p} is not valid YAML{where}: {problem}; fix the file"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {p} must hold a mapping of key: value, not {type(data).__name__}"
        )
    includes = data.pop("include", [])
    if isinstance(includes, str):
        includes = [includes]
    merged: dict[str, Any] = {}
    for inc in includes:
        merged = merge(merged, load_yaml(p.parent / inc, (*_seen, p.resolve())))
    return merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.lr=0.01' -> (['train', 'lr'], 0.01); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(base: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `base` with each `a.b=value` override set (nested dicts created)."""
    out = _deep_copy(base)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override '{text}': '{part}' is a value, not a section")
            node = nxt
        node[path[-1]] = value
    return out


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `extra` over `base` (mappings merged, everything else replaced)."""
    out = _deep_copy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = _deep_copy(value)
    return out


def _deep_copy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _deep_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deep_copy(v) for v in obj]
    return obj


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass `cls` from a mapping, checking names and types recursively."""
    data = dict(data or {})
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown option(s) {', '.join(prefix + u for u in unknown)}; "
            f"valid options{' of ' + where if where else ''}: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = _coerce(hints[name], value, key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid settings{' for ' + where if where else ''}: {exc}") from exc


def to_dict(obj: Any) -> Any:
    """A dataclass (possibly nested) as plain JSON/YAML-friendly data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """`value` checked (and converted where lossless) against the type hint `tp` of option `key`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(args, value, key)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"option {key}={value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"option {key} must be a section (mapping), got {value!r}")
        return from_dict(tp, value, key)
    if origin in (list, tuple, dict):
        return _coerce_container(origin, args, value, key)
    return _coerce_scalar(tp, value, key)


def _coerce_union(args: tuple[Any, ...], value: Any, key: str) -> Any:
    """An optional/union option takes the first member type that accepts the value."""
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(arg, value, key)
        except ConfigError as exc:
            errors.append(str(exc))
    raise ConfigError(errors[0] if errors else f"option {key}: bad value {value!r}")


def _coerce_container(origin: Any, args: tuple[Any, ...], value: Any, key: str) -> Any:
    """Lists and tuples are checked item by item (a lone scalar becomes a one-item list)."""
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"option {key} must be a mapping, got {value!r}")
        return dict(value)
    if isinstance(value, (str, int, float)) and not isinstance(value, bool) and origin is list:
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"option {key} must be a list, got {value!r}")
    inner = args[0] if args else Any
    items = [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
    return items if origin is list else tuple(items)


def _coerce_scalar(tp: Any, value: Any, key: str) -> Any:
    """bool/int/float/str refuse lossy or surprising values (True is not 1, 1.5 is not an int)."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"option {key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"option {key} must be an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"option {key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"option {key} must be text, got {value!r}")
        return str(value)
    return value
