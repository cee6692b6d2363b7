"""Config plumbing: dataclasses validated on load, YAML files, and `key=value` overrides.

Each stage defines its own dataclass (training, buffer, evaluation, distillation). This module
turns nested dicts into those dataclasses, refusing unknown keys and wrongly typed values with a
message that names the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from meddistill.errors import ConfigError, OptionError
from meddistill.utils import read_utf8

T = TypeVar("T")


MAX_CONFIG_BYTES = 256 << 10  # a config is a few KB; more means a wrong file was given
MAX_YAML_NODES = 20_000  # values after alias expansion; real configs have a few hundred
MAX_YAML_DEPTH = 40  # nesting levels; real configs have under ten
MAX_INCLUDES = 64  # files read for one top-level config (stops include fan-out bombs)


class YAMLRefusedError(yaml.MarkedYAMLError):
    """Well-formed YAML refused on purpose (duplicate key, alias bomb, cycle, deep nesting);
    unlike a syntax error it is never taken as plain text by an override."""


class ConfigLoader(yaml.SafeLoader):
    """safe_load's loader (tags never construct objects) that also refuses duplicate keys,
    which plain YAML resolves silently by keeping the last one (a whole section lost)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def fetch_flow_collection_start(self, TokenClass: type) -> None:  # noqa: N803 (PyYAML's)
        """Bound `[[[[...` while scanning: PyYAML's scanner is quadratic in flow depth."""
        if self.flow_level >= MAX_YAML_DEPTH:
            raise _too_deep(self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        """Bound block nesting (before Python's recursion limit is hit) and the node count
        (before a huge document is composed); aliases are measured after, by _expanded_size."""
        self._depth += 1
        self._nodes += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _too_deep(self.peek_event().start_mark)
            if self._nodes > MAX_YAML_NODES:
                raise _too_many(self.peek_event().start_mark, expanded=False)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            _refuse_duplicate_keys(self, node)
        return super().construct_mapping(node, deep=deep)


def _too_deep(mark: yaml.Mark) -> YAMLRefusedError:
    return YAMLRefusedError(
        problem=f"nests values more than {MAX_YAML_DEPTH} levels deep (line {mark.line + 1}); "
        "flatten it",
        problem_mark=mark,
    )


def _too_many(mark: yaml.Mark, expanded: bool) -> YAMLRefusedError:
    problem = (
        f"expands to more than {MAX_YAML_NODES} values (each alias *name copies its anchor's "
        "value); a config needs far fewer: write the values out or use fewer aliases"
        if expanded
        else f"holds more than {MAX_YAML_NODES} values; a config needs far fewer: check that "
        "the path names a config"
    )
    return YAMLRefusedError(problem=problem, problem_mark=mark)


def _refuse_duplicate_keys(loader: ConfigLoader, node: yaml.MappingNode) -> None:
    first: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue  # merge keys (<<) may repeat; complex keys fail in construction anyway
        key = loader.construct_object(key_node)
        if key in first:
            line = first[key].start_mark.line + 1
            raise YAMLRefusedError(
                problem=f"has key {_quoted(key)} twice in one mapping (line {line} and line "
                f"{key_node.start_mark.line + 1}); keep one, the last would silently replace "
                "the first",
                problem_mark=key_node.start_mark,
            )
        first[key] = key_node


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _expanded_size(node: yaml.Node, sizes: dict[int, int], path: set[int], depth: int) -> int:
    """Values the node stands for once every alias is copied out (what merge/deep-copy cost),
    memoised per node so a billion-laughs document is measured in linear time."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    mark = node.start_mark
    if key in path:
        raise YAMLRefusedError(
            problem=f"has an alias inside the value of its own anchor (line {mark.line + 1}), "
            "a value that contains itself; write the value out without the alias",
            problem_mark=mark,
        )
    if depth > MAX_YAML_DEPTH:  # aliases can nest deeper than the text does
        raise _too_deep(mark)
    path.add(key)
    total = 1 + sum(_expanded_size(c, sizes, path, depth + 1) for c in _children(node))
    path.discard(key)
    if total > MAX_YAML_NODES:
        raise _too_many(mark, expanded=True)
    sizes[key] = total
    return total


def parse_yaml(text: str) -> Any:
    """One YAML document, as safe_load reads it, bounded before anything is constructed:
    duplicate keys, alias bombs, self-referring aliases and deep nesting are refused."""
    loader = ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set(), 0)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _read_text(p: Path) -> str:
    """The file's text; a folder, a special file, a huge or non-UTF-8 file is a ConfigError."""
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}; check the path given to --config") from None
    except OSError as exc:
        raise ConfigError(
            f"cannot open config file {p}: {exc.strerror or exc}; fix the path"
        ) from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"config file {p} is a folder; give the path of a .yaml file")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"config file {p} is not a regular file; give the path of a .yaml file")
    if st.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {p} is {st.st_size} bytes, over the {MAX_CONFIG_BYTES}-byte limit for "
            "config files; check that the path names a config"
        )
    return read_utf8(p, "config file", ConfigError)


def _yaml_error(p: Path, exc: yaml.YAMLError) -> ConfigError:
    """A one-line ConfigError for a YAML syntax error or a refused document in file `p`."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if isinstance(exc, YAMLRefusedError):
        return ConfigError(f"config file {p} {problem}")
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    if problem == "but found another document":
        return ConfigError(
            f"config file {p} holds more than one YAML document (another '---'{where}); "
            "keep one document per config file"
        )
    return ConfigError(f"config file {p} is not valid YAML{where}: {problem}; fix the file")


def _read_mapping(p: Path) -> dict[str, Any]:
    """The file's top-level mapping; empty files and non-mappings are refused."""
    try:
        data = parse_yaml(_read_text(p))
    except yaml.YAMLError as exc:
        raise _yaml_error(p, exc) from None
    if data is None:
        raise ConfigError(
            f"config file {p} is empty (no key: value lines); fill it in or leave it out"
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {p} must hold a mapping of key: value, not {type(data).__name__}"
        )
    return data


def _include_names(value: Any, p: Path) -> list[str]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise ConfigError(
            f"config file {p}: include must be a file name or a list of file names, "
            f"got {_short(repr(value))}"
        )
    return names


def _short(value: Any, limit: int = 80) -> str:
    """`value` for a one-line message: itself if printable text, else its repr; clipped."""
    text = value if isinstance(value, str) and value.isprintable() else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _quoted(key: Any) -> str:
    """A mapping key for a one-line message: 'key' (or its repr when not printable text)."""
    text = str(key)
    return f"'{_short(text)}'" if text.isprintable() else _short(repr(key))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing, unreadable or malformed file is a ConfigError naming it.

    A top-level `include: [a.yaml, ...]` (paths relative to the including file) is merged
    first, in order, and the file's own keys go on top: presets share their common parts.
    """
    return _load_yaml(Path(path), (), [MAX_INCLUDES])


def _load_yaml(p: Path, chain: tuple[Path, ...], budget: list[int]) -> dict[str, Any]:
    real = Path(os.path.realpath(p))
    if real in chain:
        raise ConfigError(
            f"config file {p} includes itself (through {' -> '.join(map(str, chain))})"
        )
    budget[0] -= 1
    if budget[0] < 0:
        raise ConfigError(
            f"config file {p} is one include too many: more than {MAX_INCLUDES} files are "
            f"included (from {chain[0]}); include each file once"
        )
    data = _read_mapping(p)
    merged: dict[str, Any] = {}
    for inc in _include_names(data.pop("include", []), p):
        merged = merge(merged, _load_yaml(p.parent / inc, (*chain, real), budget))
    return merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.lr=0.01' -> (['train', 'lr'], 0.01); the value is parsed as YAML (same loader and
    limits as config files); a value that is not YAML at all is kept as text."""
    if "=" not in text:
        raise ConfigError(f"override {_quoted(text)} is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {_quoted(text)} has an empty key")
    try:
        value = parse_yaml(raw) if raw.strip() else ""
    except YAMLRefusedError as exc:
        raise ConfigError(f"override {_quoted(text)}: the value {exc.problem}") from None
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
                raise ConfigError(f"override {_quoted(text)}: '{part}' is a value, not a section")
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
    unknown = sorted(map(_short, set(data) - names))  # a YAML key may be 1, true or null
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown option(s) {', '.join(prefix + u for u in unknown)}; "
            f"valid options{' of ' + where if where else ''}: {', '.join(sorted(names))}"
        )
    defaults = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        value = _over_default(defaults[name], value)
        kwargs[name] = _coerce(hints[name], value, key)
    try:
        return cls(**kwargs)
    except OptionError as exc:  # a config names its options by its usual section
        raise exc.at(where) if where else exc from None
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid settings{' for ' + where if where else ''}: {exc}") from exc


def _over_default(field: dataclasses.Field, value: Any) -> Any:
    """A partial section laid over the field's own default section: `experts.epochs=3` keeps
    the job's other expert settings (not the section class's defaults), and a section with
    required fields can be changed one key at a time."""
    if not isinstance(value, dict):
        return value
    if field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    elif field.default is not dataclasses.MISSING:
        default = field.default
    else:
        return value
    if not dataclasses.is_dataclass(default):
        return value
    return merge(to_dict(default), value)


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
