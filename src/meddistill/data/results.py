"""results.json, the numbers a run folder ends with: one versioned schema, one reader, one writer.

`distill`, `coreset`, `evaluate` and `baseline` each leave DIR/results.json; the report, the
bench and people read it. The schema lives here, so no reader has to guess the shape by
probing it, and a file written by a newer meddistill is refused with a message instead of
being misread.

Shape (schema_version 1; a file without "schema_version" is version 0, the same shape, as
written before versioning; keys whose value would be null are left out unless noted):

    {
      "schema_version": 1,
      "dataset": "bloodmnist"            distill, coreset: the dataset name
               | {"name": ..., ...},     baseline, evaluate: MedicalDataset.describe()
      "method": "hoptm",                 distill, coreset (the selection)
      "ipc": 10,                         distill, coreset
      "syn_lr": 0.01,                    distill: the learned step size
      "buffer_s": 12.5,                  distill: seconds spent making the expert buffer
      "distill_s": 340.2,                distill: seconds spent distilling
      "select_s": 3.1,                   coreset: seconds spent selecting
      "synthetic": "DIR/synthetic",      distill, coreset: the saved set
      "run_dir": "DIR",                  every command
      "rows": [ROW, ...]                 every command; [] when nothing was evaluated
    }

    ROW, one evaluated set:
    {
      "set": "hoptm" | "herding" | "synthetic:<method>" | "random" | "full",
      "ipc": 10 | null,                  always written; null for the full training set
      "archs": {"convnet": ARCH, ...},
      "wall_s": 41.0,                    seconds the evaluation took
      "lr": 0.01,                        evaluated rows (distill, coreset, evaluate), with the
      "lr_source": ..., "num_images": ..., "seed": ..., "config": {...}, "std": ...
                                         rest of training.evaluate.EvalReport.to_dict()
      "detail": {...}                    baseline rows: training.baselines.baseline()'s report
    }

    ARCH: {"acc_mean", "acc_std", "auc_mean", "auc_std": numbers (acc as a fraction),
           "nets": [NET, ...]  (evaluated rows), "num_nets": int (baseline rows),
           "arch", "spec" (evaluated rows)}
    NET:  {"acc": number, "auc": number, "index", "seed", "loss", "train_loss"}
    Evaluated rows also carry the validation split's numbers (to choose by; test is to
    report): ARCH "val_acc_mean", "val_acc_std", "val_auc_mean", "val_auc_std" and NET
    "val_acc", "val_auc", "val_loss"; null (with a reason) where the dataset has no val split.

    A number that is undefined (the AUC of a test split lacking a class, a diverged loss) is
    written null, never NaN (not JSON), with "<key>_reason" beside it saying why; the AUC keys
    may therefore be null.

Keys not named above are kept (`extra`) and written back unchanged, so adding a key needs no
new version; raise SCHEMA_VERSION only when a reader of the old version would misread a file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meddistill.errors import ArtifactError
from meddistill.utils import write_json_atomic

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"
_FIX = (
    "re-create it with the meddistill command that wrote it (distill, coreset, evaluate, baseline)"
)
_MISSING = object()
_Check = Callable[[Any], bool]


class _Malformed(ArtifactError):
    """A value of the wrong type at a place in the JSON; becomes one message naming the file."""

    def __init__(self, where: str, expected: str, got: Any = _MISSING) -> None:
        self.where, self.expected, self.got = where, expected, got
        found = "is missing" if got is _MISSING else f"is {_show(got)}"
        super().__init__(f"{where} {found}, expected {expected}")

    def at(self, prefix: str) -> _Malformed:
        return _Malformed(f"{prefix}.{self.where}", self.expected, self.got)


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _get(obj: Mapping[str, Any], key: str, where: str, expected: str, ok: _Check) -> Any:
    """obj[key] when ok(value); None when the key is absent or null; else _Malformed."""
    value = obj.get(key)
    if value is None or ok(value):
        return value
    raise _Malformed(f"{where}.{key}" if where else key, expected, value)


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_obj(value: Any) -> bool:
    return isinstance(value, dict)


def _is_list(value: Any) -> bool:
    return isinstance(value, list)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _need(obj: Mapping[str, Any], key: str, where: str, expected: str, ok: _Check) -> Any:
    """Like _get, but the key must be present and not null."""
    value = _get(obj, key, where, expected, ok)
    if value is None:
        raise _Malformed(f"{where}.{key}" if where else key, expected, obj.get(key, _MISSING))
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not _is_obj(value):
        raise _Malformed(where, "an object", value)
    return value


def _rest(obj: Mapping[str, Any], known: Iterable[str]) -> dict[str, Any]:
    names = set(known)
    return {k: v for k, v in obj.items() if k not in names}


def _present(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    return {k: v for k, v in pairs if v is not None}


@dataclass(frozen=True)
class NetStats:
    """One trained network's test numbers (acc a fraction in [0, 1])."""

    acc: float
    auc: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: Any, where: str) -> NetStats:
        d = _object(obj, where)
        return cls(
            acc=_need(d, "acc", where, "a number", _is_num),
            auc=_get(d, "auc", where, "a number or null", _is_num),
            extra=_rest(d, ("acc", "auc")),
        )

    def to_json(self) -> dict[str, Any]:
        return {**self.extra, "acc": self.acc, "auc": self.auc}


def _nets(value: Any, where: str) -> tuple[NetStats, ...]:
    if not _is_list(value):
        raise _Malformed(where, "a list of networks", value)
    return tuple(NetStats.from_json(n, f"{where}[{i}]") for i, n in enumerate(value))


_STAT_NUMBERS = ("acc_mean", "acc_std", "auc_mean", "auc_std")


@dataclass(frozen=True)
class ArchStats:
    """Mean and population std over the networks of one architecture; `nets` (evaluated rows)
    or `num_nets` (baseline rows) say how many there were."""

    acc_mean: float
    acc_std: float
    auc_mean: float | None
    auc_std: float | None
    nets: tuple[NetStats, ...] | None = None
    num_nets: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: Any, where: str) -> ArchStats:
        d = _object(obj, where)
        numbers = {k: _need(d, k, where, "a number", _is_num) for k in _STAT_NUMBERS[:2]}
        numbers.update(
            {k: _get(d, k, where, "a number or null", _is_num) for k in _STAT_NUMBERS[2:]}
        )
        nets = d.get("nets")
        return cls(
            **numbers,
            nets=None if nets is None else _nets(nets, f"{where}.nets"),
            num_nets=_get(d, "num_nets", where, "an integer", _is_int),
            extra=_rest(d, (*_STAT_NUMBERS, "nets", "num_nets")),
        )

    def to_json(self) -> dict[str, Any]:
        out = {**self.extra, **{k: getattr(self, k) for k in _STAT_NUMBERS}}
        if self.nets is not None:
            out["nets"] = [n.to_json() for n in self.nets]
        return {**out, **_present([("num_nets", self.num_nets)])}


def _detail_nets(
    detail: Mapping[str, Any], kind: str, ipc: int | None, archs: Iterable[str]
) -> dict[str, tuple[NetStats, ...]]:
    """The networks of a baseline row, which live in its detail: detail.full.nets (the full
    set's one architecture), detail.random.<ipc>.subsets[*].report.archs.<arch>.nets."""
    if kind == "full" and detail.get("full") is not None:
        full = _object(detail["full"], "detail.full")
        nets = _nets(full.get("nets", []), "detail.full.nets")
        return {arch: nets for arch in archs}
    if kind != "random":
        return {}
    random = _object(detail.get("random", {}), "detail.random")
    where = f"detail.random.{ipc}"
    part = _object(random.get(str(ipc), {}), where)
    subsets = part.get("subsets", [])
    if not _is_list(subsets):
        raise _Malformed(f"{where}.subsets", "a list", subsets)
    found: dict[str, tuple[NetStats, ...]] = {}
    for i, sub in enumerate(subsets):
        at = f"{where}.subsets[{i}]"
        report = _object(_object(sub, at).get("report", _MISSING), f"{at}.report")
        for arch, stats in _object(report.get("archs", {}), f"{at}.report.archs").items():
            arch_at = f"{at}.report.archs.{arch}"
            nets = _object(stats, arch_at).get("nets", [])
            found[arch] = found.get(arch, ()) + _nets(nets, f"{arch_at}.nets")
    return found


@dataclass(frozen=True)
class ResultRow:
    """One evaluated set: which set, its IPC, and the numbers per architecture."""

    set: str
    ipc: int | None
    archs: dict[str, ArchStats]
    lr: float | None = None
    wall_s: float | None = None
    detail: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    _detail_nets: dict[str, tuple[NetStats, ...]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        if self.detail is not None:
            found = _detail_nets(self.detail, self.set, self.ipc, self.archs)
            object.__setattr__(self, "_detail_nets", found)

    @classmethod
    def from_json(cls, obj: Any, where: str) -> ResultRow:
        d = _object(obj, where)
        archs = _object(d.get("archs", _MISSING), f"{where}.archs")
        try:
            return cls(
                set=_need(d, "set", where, "a string", _is_str),
                ipc=_get(d, "ipc", where, "an integer or null", _is_int),
                archs={
                    str(a): ArchStats.from_json(s, f"{where}.archs.{a}") for a, s in archs.items()
                },
                lr=_get(d, "lr", where, "a number", _is_num),
                wall_s=_get(d, "wall_s", where, "a number", _is_num),
                detail=_get(d, "detail", where, "an object", _is_obj),
                extra=_rest(d, ("set", "ipc", "archs", "lr", "wall_s", "detail")),
            )
        except _Malformed as exc:
            if exc.where.startswith("detail"):  # raised by __post_init__, which has no index
                raise exc.at(where) from None
            raise

    def nets(self, arch: str) -> tuple[NetStats, ...]:
        """The networks behind archs[arch]: its own list, else the baseline detail's."""
        stats = self.archs.get(arch)
        if stats is not None and stats.nets is not None:
            return stats.nets
        return self._detail_nets.get(arch, ())

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"set": self.set, "ipc": self.ipc}
        out.update(_present([("lr", self.lr)]))
        out["archs"] = {a: s.to_json() for a, s in self.archs.items()}
        out.update(self.extra)
        return {**out, **_present([("detail", self.detail), ("wall_s", self.wall_s)])}


_OPTIONAL_NUMBERS = ("syn_lr", "buffer_s", "distill_s", "select_s")


@dataclass(frozen=True)
class ResultsFile:
    """A whole results.json. `schema_version` is the version it was read as (0: written before
    versioning); to_json always writes SCHEMA_VERSION, the shapes of 0 and 1 being equal."""

    dataset: str | dict[str, Any]
    rows: tuple[ResultRow, ...] = ()
    run_dir: str | None = None
    method: str | None = None
    ipc: int | None = None
    synthetic: str | None = None
    syn_lr: float | None = None
    buffer_s: float | None = None
    distill_s: float | None = None
    select_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def dataset_name(self) -> str:
        return self.dataset if isinstance(self.dataset, str) else str(self.dataset["name"])

    @classmethod
    def from_json(cls, obj: Any, source: str = RESULTS_FILE) -> ResultsFile:
        """Validate and type a parsed results.json; `source` names it in error messages."""
        try:
            return cls._parse(_object(obj, "the document"), source)
        except _Malformed as exc:
            raise ArtifactError(f"{source}: {exc}; {_FIX}") from None

    @classmethod
    def _parse(cls, d: dict[str, Any], source: str) -> ResultsFile:
        version = _version(d, source)
        dataset = _need(d, "dataset", "", "a name or an object", lambda v: _is_str(v) or _is_obj(v))
        if _is_obj(dataset):
            _need(dataset, "name", "dataset", "a string", _is_str)
        rows = _need(d, "rows", "", "a list of rows", _is_list)
        numbers = {k: _get(d, k, "", "a number", _is_num) for k in _OPTIONAL_NUMBERS}
        known = ("schema_version", "dataset", "rows", "run_dir", "method", "ipc", "synthetic")
        return cls(
            dataset=dataset,
            rows=tuple(ResultRow.from_json(r, f"rows[{i}]") for i, r in enumerate(rows)),
            run_dir=_get(d, "run_dir", "", "a string", _is_str),
            method=_get(d, "method", "", "a string", _is_str),
            ipc=_get(d, "ipc", "", "an integer", _is_int),
            synthetic=_get(d, "synthetic", "", "a string", _is_str),
            **numbers,
            extra=_rest(d, (*known, *_OPTIONAL_NUMBERS)),
            schema_version=version,
        )

    def to_json(self) -> dict[str, Any]:
        """Today's keys plus "schema_version" (what write_results writes)."""
        out: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        out.update(_present([("method", self.method)]))
        out["dataset"] = self.dataset
        out.update(_present((k, getattr(self, k)) for k in ("ipc", *_OPTIONAL_NUMBERS)))
        out.update(_present([("synthetic", self.synthetic), ("run_dir", self.run_dir)]))
        out["rows"] = [r.to_json() for r in self.rows]
        return {**self.extra, **out}


def _version(d: Mapping[str, Any], source: str) -> int:
    """0 when absent (files written before versioning); refuses versions from the future."""
    version = _get(d, "schema_version", "", "a non-negative integer", _is_int)
    if version is None:
        return 0
    if version < 0:
        raise _Malformed("schema_version", "a non-negative integer", version)
    if version > SCHEMA_VERSION:
        raise ArtifactError(
            f"{source} has schema_version {version}, but this meddistill reads results.json up "
            f"to version {SCHEMA_VERSION}; upgrade meddistill (pip install -U meddistill) to "
            "read it, or re-run the command with this version"
        )
    return version


def results_document(
    dataset: str | Mapping[str, Any],
    rows: Iterable[ResultRow | Mapping[str, Any]] = (),
    *,
    run_dir: str | os.PathLike[str] | None = None,
    method: str | None = None,
    ipc: int | None = None,
    synthetic: str | os.PathLike[str] | None = None,
    syn_lr: float | None = None,
    buffer_s: float | None = None,
    distill_s: float | None = None,
    select_s: float | None = None,
) -> ResultsFile:
    """A validated ResultsFile from what a command knows; rows may be today's row dicts."""
    doc = {
        "schema_version": SCHEMA_VERSION,
        "dataset": dict(dataset) if isinstance(dataset, Mapping) else dataset,
        "rows": [r.to_json() if isinstance(r, ResultRow) else dict(r) for r in rows],
        "run_dir": None if run_dir is None else str(run_dir),
        "method": method,
        "ipc": ipc,
        "synthetic": None if synthetic is None else str(synthetic),
        "syn_lr": syn_lr,
        "buffer_s": buffer_s,
        "distill_s": distill_s,
        "select_s": select_s,
    }
    return ResultsFile.from_json(doc, source="results document")


def results_path(path: str | os.PathLike[str]) -> Path:
    """DIR/results.json for a run folder, else the path itself."""
    p = Path(path)
    return p / RESULTS_FILE if p.is_dir() else p


def write_results(path: str | os.PathLike[str], doc: ResultsFile | Mapping[str, Any]) -> Path:
    """Write results.json atomically (a run folder or the file's path); a mapping is
    validated first, so no writer can leave a file the readers refuse."""
    target = results_path(path)
    if not isinstance(doc, ResultsFile):
        doc = ResultsFile.from_json(dict(doc), source=str(target))
    out = doc.to_json()
    for row in out["rows"]:
        for stats in row.get("archs", {}).values():
            _explain_undefined(stats)
            for net in stats.get("nets", []):
                _explain_undefined(net)
    write_json_atomic(target, out)
    return target


# Why a number of a results row can be undefined (written null, with "<key>_reason").
_NO_AUC = "undefined: the test split has no image of some class, so AUC cannot be computed"
_NO_VAL = "not scored: the dataset has no validation split (image folders: val_fraction > 0)"
_REASONS = {"auc": _NO_AUC, "auc_mean": _NO_AUC, "auc_std": _NO_AUC}
_REASONS.update({f"val_{k}": _NO_VAL for k in ("acc", "auc", "loss")})
_REASONS.update({f"val_{k}_{s}": _NO_VAL for k in ("acc", "auc") for s in ("mean", "std")})


def _explain_undefined(record: dict[str, Any]) -> None:
    """Replace each NaN/infinite number of a row's record by null and say why beside it."""
    for key, value in list(record.items()):
        if _is_num(value) and not math.isfinite(value):
            record[key] = None
            record[f"{key}_reason"] = _REASONS.get(key, f"not a finite number ({value})")


def read_results(path: str | os.PathLike[str]) -> ResultsFile:
    """Read and validate results.json (a run folder or the file's path)."""
    target = results_path(path)
    if not target.is_file():
        raise ArtifactError(f"{target} does not exist; the run has not finished or wrote none")
    try:
        obj = json.loads(target.read_text())
    except (ValueError, OSError) as exc:
        raise ArtifactError(f"{target} is not valid JSON ({exc}); {_FIX}") from exc
    return ResultsFile.from_json(obj, source=str(target))
