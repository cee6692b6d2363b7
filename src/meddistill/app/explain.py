"""What each command's config holds, generated from its job dataclass and the method's config
type so that `--help` and `meddistill config show` never drift from the code: sections, keys,
defaults, one comment per key, the values a run derives itself, and the warning for a preset
used on a dataset other than the one it was tuned on.

A key's comment is its type and default, plus its dataclass field metadata `help` when set,
else the `# comment` on the field's line in the source (field docstrings do not exist).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import textwrap
import tokenize
import types
import typing
from typing import Any

import yaml

from meddistill.app.config import (
    AuditJob,
    BaselineJob,
    BufferJob,
    CoresetJob,
    DistillJob,
    EvaluateJob,
    TuneJob,
    device_of,
)
from meddistill.config import to_dict
from meddistill.errors import MeddistillError

# The commands that run a job, and the job each resolves.
JOBS: dict[str, type] = {
    "buffer": BufferJob,
    "baseline": BaselineJob,
    "evaluate": EvaluateJob,
    "distill": DistillJob,
    "tune": TuneJob,
    "coreset": CoresetJob,
    "audit": AuditJob,
}
MATCH = "match"  # the distill job's section holding the method's own options
DISTILLING = ("distill", "tune")  # the commands whose job is a distill job (with `match`)

# The keys a user moving to another dataset changes first: `--help` shows these with their
# defaults and names the others; `config show` prints every key. A name a section lacks (a
# method without syn_steps) is skipped.
COMMON: dict[str, tuple[str, ...]] = {
    "dataset": ("name", "root", "size", "resize_to", "channels", "download"),
    "model": ("name", "depth", "width"),
    "experts": ("num_experts", "epochs"),
    "buffer": ("num_experts", "epochs"),
    MATCH: (
        "ipc",
        "iterations",
        "syn_steps",
        "expert_epochs",
        "max_start",
        "batch_syn",
        "batch_real",
        "lr_img",
        "lr_lr",
        "syn_lr_init",
    ),
    "eval": ("models", "num_nets", "epochs", "lr", "batch_size"),
    "full_train": ("epochs", "lr", "batch_size"),
    "audit": ("quantile", "members", "bootstrap", "references", "shadows", "shadow_overrides"),
}
# Keys a preset sets that say which data or run it is, not values tuned on that data.
_NOT_TUNED = ("tuned_for", "method", "dataset.name", "dataset.root", "dataset.download")
_MISSING = object()


def flow(value: Any) -> str:
    """`value` as one line of YAML (a flow scalar, list or mapping)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30, sort_keys=False)
    return text.removesuffix("...\n").strip()


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of every leaf (an empty mapping is a leaf)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def method_type(name: str | None) -> tuple[str, type]:
    """(name, config type) of a method; the distill job's default for None."""
    from meddistill.methods.registry import get_method

    entry = get_method(name or DistillJob().method)
    return entry.name, entry.config_type


def shown_config(command: str, job: Any) -> dict[str, Any]:
    """The resolved job as plain data; a distill job's `match` completed with the method's
    defaults (what the method runs with)."""
    from meddistill.methods.registry import get_method

    data = to_dict(job)
    if command in DISTILLING:
        data[MATCH] = to_dict(get_method(job.method).make_config(job.match))
    return data


def default_config(command: str, method: str | None = None) -> dict[str, Any]:
    """What the command resolves with no config file, flag or override (but --method)."""
    job = JOBS[command]()
    if command in DISTILLING:
        job = dataclasses.replace(job, method=method_type(method)[0])
    return shown_config(command, job)


def section_types(command: str, data: dict[str, Any]) -> dict[str, type]:
    """The dataclass of each section of the job (the method's config type for `match`)."""
    cls = JOBS[command]
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):  # in the job's order
        section = section_class(hints[f.name])
        if section is not None and isinstance(data.get(f.name), dict):  # an optional one: set
            out[f.name] = section
        elif f.name == MATCH and command in DISTILLING:
            out[MATCH] = method_type(data.get("method"))[1]
    return out


def section_class(tp: Any) -> type | None:
    """The dataclass a type hint holds: itself, or X of an optional `X | None` (dp)."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        return found[0] if len(found) == 1 else None
    return None


@functools.cache
def source_comments(cls: type) -> dict[str, str]:
    """{field: the `# comment` ending its line in the class source}, base classes first."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            found.update(_class_comments(klass))
    return found


def _class_comments(cls: type) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (OSError, TypeError, tokenize.TokenError, IndentationError):
        return {}  # no source (frozen or compiled install): type and default only
    body = next((t.end[1] for t in tokens if t.type == tokenize.INDENT), None)
    firsts: dict[int, list[tokenize.TokenInfo]] = {}
    comments: dict[int, str] = {}
    for tok in tokens:
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type in (tokenize.NAME, tokenize.OP):
            firsts.setdefault(tok.start[0], []).append(tok)
    out = {}
    for line, text in comments.items():
        head = firsts.get(line, [])
        if len(head) < 2 or head[0].type != tokenize.NAME or head[1].string != ":":
            continue
        if head[0].start[1] == body:  # `name: type = default  # comment` in the class body
            out[head[0].string] = text
    return out


def field_help(cls: type | None) -> dict[str, str]:
    """{field: what it is} from the field's metadata `help`, else its source comment."""
    if cls is None or not dataclasses.is_dataclass(cls):
        return {}
    comments = source_comments(cls)
    return {
        f.name: str(f.metadata.get("help") or comments.get(f.name, ""))
        for f in dataclasses.fields(cls)
    }


def type_name(tp: Any) -> str:
    """A type hint as a user reads it: `int | null`, `one of sgd, gsam`, `list of int`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (list, tuple):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict or tp is dict:
        return "mapping"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def summary_of(cls: type) -> str:
    """The first clause of a class docstring: what the section is for."""
    doc = inspect.getdoc(cls) or ""
    if doc.startswith(f"{cls.__name__}("):  # no docstring: dataclass wrote the signature
        return ""
    first = doc.split("\n\n")[0].replace("\n", " ")
    for stop in (" (", "; ", ". "):
        first = first.split(stop)[0]
    return first.rstrip(".")


# `config show` ---------------------------------------------------------------------------


def show_config(command: str, job: Any) -> str:
    """The resolved config of `command` as YAML, one comment per key: its type and default,
    what it is, and the value the run uses instead where the run derives it (the device,
    the one DSA strategy, the experts a distillation makes)."""
    data = shown_config(command, job)
    defaults = default_config(command, data.get("method"))
    derived, unused = run_values(command, job)
    pairs = _render(JOBS[command], data, defaults, "", "", section_types(command, data))
    notes = {"derived": derived, "unused": unused, "flat": flatten(data)}
    width = min(48, max(len(code) for code, _, _ in pairs) + 2)
    lines = [
        f"# meddistill {command}: the config it resolves (defaults < --config files < flags <",
        "# key=value), usable as --config; each comment: type, default, what the key is.",
    ]
    for code, dotted, comment in pairs:
        comment = _with_run_note(comment, dotted, notes)
        lines.append(f"{code.ljust(max(width, len(code) + 2))}# {comment}" if comment else code)
    return "\n".join(lines) + "\n"


def _render(
    cls: type | None,
    data: dict[str, Any],
    defaults: dict[str, Any],
    path: str,
    pad: str,
    sections: dict[str, type],
) -> list[tuple[str, str, str]]:
    """(YAML line, dotted key, comment) for each key of `data`, sections nested."""
    hints = typing.get_type_hints(cls) if cls is not None else {}
    helps = field_help(cls)
    out = []
    for key, value in data.items():
        dotted = f"{path}{key}"
        sub = sections.get(key)
        default = defaults.get(key, _MISSING) if isinstance(defaults, dict) else _MISSING
        if isinstance(value, dict) and value:
            about = helps.get(key) or (summary_of(sub) if sub is not None else "")
            out.append((f"{pad}{key}:", dotted, about))
            inner = typing.get_type_hints(sub) if sub is not None else {}
            nested = {k: section_class(t) for k, t in inner.items() if section_class(t)}
            sub_defaults = default if isinstance(default, dict) else {}
            out += _render(sub, value, sub_defaults, f"{dotted}.", pad + "  ", nested)
            continue
        parts = [type_name(hints[key])] if key in hints else []
        if default is not _MISSING:
            parts.append(f"default {flow(default)}")
        if helps.get(key):
            parts.append(helps[key])
        out.append((f"{pad}{key}: {flow(value)}", dotted, "; ".join(parts)))
    return out


def _with_run_note(comment: str, dotted: str, notes: dict[str, Any]) -> str:
    """The comment, plus what the run uses where it differs from the key's value."""
    derived, unused = notes["derived"], notes["unused"]
    top = dotted.split(".")[0]
    if top in unused and "." not in dotted:
        return f"{comment}; not used by this run ({unused[top]})".lstrip("; ")
    flat = notes["flat"]
    if dotted in flat and dotted in derived and derived[dotted] != flat[dotted]:
        return f"{comment}; the run uses {flow(derived[dotted])}".lstrip("; ")
    return comment


def run_values(command: str, job: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """({dotted key: value the run uses}, {section: why the run ignores it}), decided as the
    command decides them before it loads any data."""
    if command in (*DISTILLING, "coreset"):
        return _distill_values(command, job)
    used = to_dict(job)
    used["device"] = str(device_of(job))
    strategy = job.dataset.strategy()
    if command == "buffer":
        from meddistill.app.buffer import buffer_config_for

        cfg = buffer_config_for(job)
        used["buffer"], used["seed"] = to_dict(cfg), cfg.seed
    elif command == "baseline":  # as run_baseline: one strategy for both trainings
        used["eval"]["dsa_strategy"] = used["full_train"]["dsa_strategy"] = strategy
    elif command == "evaluate" and job.eval.dsa:
        used["eval"]["dsa_strategy"] = strategy
    elif command == "audit":  # as run_audit: one strategy for both trainings
        used["eval"]["dsa_strategy"] = used["full_train"]["dsa_strategy"] = strategy
    return flatten(used), {}


def _distill_values(command: str, job: Any) -> tuple[dict[str, Any], dict[str, str]]:
    from meddistill.app.distill import coreset_job_as_distill, resolve_distill, used_config

    plan = resolve_distill(coreset_job_as_distill(job) if command == "coreset" else job)
    used = used_config(plan)
    if command == "tune":
        used["tune"] = to_dict(job.tune)
    unused: dict[str, str] = {}
    if command in DISTILLING and "experts" not in used:
        why = "a buffer is given" if job.buffer else f"{plan.method.name} trains no experts"
        unused = {"experts": why, "expert_optimizer": why}
    return flatten(used), unused


# `--help` --------------------------------------------------------------------------------


def help_epilog(command: str, method: str | None = None) -> str:
    """The end of a command's --help: every config section with its common keys and their
    defaults, the other keys by name, and where to see them all."""
    try:
        data = default_config(command, method)
    except MeddistillError:  # an unknown --method: the run says so; help shows the default's
        data = default_config(command)
    sections = section_types(command, data)
    chosen = f" --method {data['method']}" if command in DISTILLING else ""
    lines = [
        "config (a --config YAML file, or key=value with dotted keys, e.g. eval.num_nets=3);",
        f"defaults shown; every key with a comment: meddistill config show {command}{chosen}",
        "",
    ]
    top = [k for k, v in data.items() if k not in sections and not isinstance(v, dict)]
    lines += _wrapped("top-level keys: ", [f"{k}={flow(data[k])}" for k in top])
    for name, cls in sections.items():
        about = summary_of(cls)
        if name == MATCH:
            about = f"method {data['method']}'s options ({cls.__name__}; --method M --help: M's)"
        lines.append(f"{name}: {about}")
        lines += _section_keys(name, data[name])
    return "\n".join(lines)


def _section_keys(name: str, values: dict[str, Any]) -> list[str]:
    """The common keys of a section with their defaults, then the others by name."""
    scalars = [k for k, v in values.items() if not isinstance(v, dict)]
    common = [k for k in COMMON.get(name, tuple(scalars)) if k in scalars]
    others = [k for k in scalars if k not in common]
    others += [f"{k}.*" for k, v in values.items() if isinstance(v, dict)]
    items = [f"{name}.{k}={flow(values[k])}" for k in common]
    lines = _wrapped("  ", items)
    if others:
        lines += _wrapped("  also: ", others)
    return lines


def _wrapped(head: str, items: list[str], width: int = 79) -> list[str]:
    """`items` separated by spaces, wrapped under `head`."""
    if not items:
        return []
    return textwrap.wrap(
        "  ".join(items),
        width=width,
        initial_indent=head,
        subsequent_indent=" " * len(head) if head.strip() == "" else "    ",
        break_on_hyphens=False,
    )


# Presets used on another dataset ------------------------------------------------------------


def preset_warning(files: list[dict[str, Any]], data: dict[str, Any], job: Any) -> str | None:
    """The one line saying which values of the --config files were tuned on another dataset
    than the job's (the files' `tuned_for`), or None.

    Listed: the keys a tuned file sets that still hold its value after later files, flags
    and overrides (a key the user replaced is no longer the preset's). A job whose own
    `tuned_for` is its dataset (tuned_for=<dataset> given last) is not warned about."""
    dataset = str(job.dataset.name)
    if str(job.tuned_for or "").lower() == dataset.lower():
        return None
    final = flatten(data)
    tuned: dict[str, list[str]] = {}
    for loaded in files:
        where = loaded.get("tuned_for")
        if not isinstance(where, str) or where.lower() == dataset.lower():
            continue
        keys = tuned.setdefault(where, [])
        for key, value in flatten(loaded).items():
            if key not in _NOT_TUNED and key not in keys and final.get(key, _MISSING) == value:
                keys.append(key)
    parts = [f"{name} ({', '.join(_method_first(keys))})" for name, keys in tuned.items() if keys]
    if not parts:
        return None
    return (
        f"preset values were tuned for {' and '.join(parts)}; you are running on {dataset} "
        f"— tune them on {dataset}'s validation split"
    )


def _method_first(keys: list[str]) -> list[str]:
    """The method's keys (match.*) first: they are the most tied to the data they were tuned on."""
    return sorted(keys, key=lambda k: not k.startswith(f"{MATCH}."))
