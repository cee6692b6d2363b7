"""The trajectory buffer on disk, and `TrajectoryStore`, its reader.

A buffer is a folder:
  buffer.json                    what produced it: dataset (name, source_id, normalisation),
                                 network spec and parameter layout, optimiser and its settings,
                                 seed, dtype, P, E, package version, buffer_id; `privacy`, the
                                 (epsilon, delta) guarantee of DP-SGD experts (null: none;
                                 absent in older buffers); and
                                 `experts`, one summary per finished expert (index, seed, final
                                 train / val accuracy, final_test_acc, per-epoch val_acc),
                                 rewritten atomically after each expert
  expert_000.safetensors, ...    one per finished expert: tensor "trajectory" [E + 1, P]
                                 (row e = all parameters after epoch e, flattened in
                                 named_parameters() order) and, in the safetensors header, the
                                 expert's seed, buffer_id and history: per-epoch train loss /
                                 accuracy and validation accuracy / AUC, and the test accuracy
                                 of the final network only (older buffers: per-epoch test_acc)

Each expert file is written atomically when the expert finishes, so a file that exists is
complete. Reading one snapshot uses safetensors' memory map and `get_slice`: only the bytes of
that row are touched, never the whole buffer (13 GB for 100 ConvNet-3 experts x 101 epochs).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from meddistill.config import to_dict
from meddistill.data.dataset import MedicalDataset
from meddistill.errors import ConfigError, ExpertBufferError
from meddistill.models import ModelSpec, ParamLayout
from meddistill.utils import atomic_path, json_text, write_json_atomic

FORMAT = "meddistill-expert-buffer"
FORMAT_VERSION = 1
META_FILE = "buffer.json"
TENSOR = "trajectory"
_EXPERT_RE = re.compile(r"^expert_(\d{3,})\.safetensors$")
_REMAKE = "make a new buffer with `meddistill buffer ...`"
_FILE_DTYPES = {"float32": "F32", "float16": "F16"}  # buffer.json dtype -> safetensors dtype
NO_VAL_NOTE = (
    "the dataset has no validation split: no held-out accuracy was measured per epoch (the test "
    "split is not used to watch training); only final_test_acc, once, on the final network"
)
OLD_HELD_OUT = "test (older buffer: accuracy measured on the test split every epoch)"


def expert_filename(index: int) -> str:
    return f"expert_{index:03d}.safetensors"


def write_expert(
    folder: Path,
    index: int,
    trajectory: torch.Tensor,
    *,
    buffer_id: str,
    seed: int,
    history: dict[str, Any],
) -> Path:
    """Write one finished expert atomically: a reader sees the whole file or none."""
    path = Path(folder) / expert_filename(index)
    metadata = {
        "format": FORMAT,
        "buffer_id": buffer_id,
        "expert": str(index),
        "seed": str(seed),
        "history": json_text(history),
    }
    with atomic_path(path) as tmp:
        save_file({TENSOR: trajectory.detach().cpu().contiguous()}, str(tmp), metadata=metadata)
    return path


def read_meta(folder: Path) -> dict[str, Any]:
    """buffer.json of `folder`, or ExpertBufferError saying what is wrong and what to do."""
    path = Path(folder) / META_FILE
    if not Path(folder).is_dir():
        raise ExpertBufferError(f"no expert buffer at {folder} (folder missing); {_REMAKE}")
    if not path.is_file():
        raise ExpertBufferError(
            f"{path} is missing, so {folder} is not a complete expert buffer; {_REMAKE}"
        )
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ExpertBufferError(
            f"{path} cannot be read ({exc.__class__.__name__}); delete the folder and {_REMAKE}"
        ) from exc
    validate_buffer_meta(meta, path)
    return meta


def train_batch_size(meta: dict[str, Any]) -> int | None:
    """The experts' training batch size from buffer.json (None when it does not say: older
    buffers, or a value that is not a positive integer)."""
    train = meta.get("train")
    batch = train.get("batch_size") if isinstance(train, dict) else None
    return batch if _is_int(batch) and batch > 0 else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, float)


def _int_at_least(low: int) -> Callable[[Any], bool]:
    return lambda v: _is_int(v) and v >= low


def _list_of(ok: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and all(ok(x) for x in v)


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


# (dotted key, required, check, what it must be): every field a reader of buffer.json uses;
# an optional field may be absent, but when present it must pass its check (null included).
_META_FIELDS: tuple[tuple[str, bool, Callable[[Any], bool], str], ...] = (
    ("buffer_id", True, _is_name, "a non-empty string"),
    ("epochs", True, _int_at_least(1), "an integer >= 1"),
    ("num_params", True, _int_at_least(1), "an integer >= 1"),
    ("dtype", True, lambda v: v in _FILE_DTYPES, f"one of {', '.join(_FILE_DTYPES)}"),
    ("num_experts", False, _int_at_least(0), "an integer >= 0"),
    ("seed", False, _is_int, "an integer"),
    ("dataset", True, lambda v: isinstance(v, dict), "an object"),
    ("dataset.name", True, _is_name, "a non-empty string"),
    ("dataset.source_id", True, _is_name, "a non-empty string"),
    ("dataset.image_shape", True, _list_of(_int_at_least(1)), "a list of positive integers"),
    ("dataset.normalization", True, lambda v: isinstance(v, dict), "an object"),
    ("dataset.normalization.mean", True, _list_of(_is_number), "a list of numbers"),
    ("dataset.normalization.std", True, _list_of(_is_number), "a list of numbers"),
    ("model", True, lambda v: isinstance(v, dict) and _is_name(v.get("name")), "a network spec"),
    ("train", False, lambda v: isinstance(v, dict), "an object"),
    ("train.dsa", False, lambda v: isinstance(v, bool), "true or false"),
    ("train.dsa_strategy", False, lambda v: v is None or isinstance(v, str), "a string or null"),
    ("param_layout", True, lambda v: isinstance(v, dict), "an object"),
    ("param_layout.names", True, _list_of(_is_name), "a list of parameter names"),
    ("param_layout.shapes", True, _list_of(_list_of(_int_at_least(0))), "a list of shapes"),
    ("experts", False, _list_of(lambda v: isinstance(v, dict)), "a list of expert summaries"),
    ("privacy", False, lambda v: v is None or isinstance(v, dict), "an object or null"),
    ("privacy.epsilon", False, lambda v: _is_number(v) and v > 0, "a number > 0"),
    ("privacy.delta", False, lambda v: _is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    ("privacy.experts", False, _int_at_least(1), "an integer >= 1"),
)
_MISSING = object()


def _lookup(meta: dict[str, Any], dotted: str) -> Any:
    value: Any = meta
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def validate_buffer_meta(meta: Any, path: Path) -> None:
    """Refuse a buffer.json that a reader would misread or crash on (hand-edited, or written by
    something else): one ExpertBufferError naming the file, the field and the fix."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ExpertBufferError(f"{path} is not a meddistill expert-buffer description; {_REMAKE}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ExpertBufferError(
            f"{path} has buffer format version {_show(meta.get('format_version'))}, this "
            f"meddistill reads version {FORMAT_VERSION}; {_REMAKE}"
        )
    fix = f"{_REMAKE} (in another folder, or delete {Path(path).parent} first)"
    for key, required, ok, expected in _META_FIELDS:
        value = _lookup(meta, key)
        if value is _MISSING:
            if required:
                raise ExpertBufferError(f"{path} lacks '{key}' ({expected}); {fix}")
            continue
        if not ok(value):
            raise ExpertBufferError(
                f"{path} has {key} = {_show(value)}, expected {expected}; {fix}"
            )
    layout = meta["param_layout"]
    if len(layout["names"]) != len(layout["shapes"]):
        raise ExpertBufferError(
            f"{path} has {len(layout['names'])} parameter names but "
            f"{len(layout['shapes'])} shapes in param_layout; {fix}"
        )
    _check_expert_summaries(meta.get("experts", []), path, fix)


def _is_fraction_or_null(value: Any) -> bool:
    return value is None or (_is_number(value) and 0.0 <= value <= 1.0)


# Every key of an `experts` entry and what it must be (each entry has all of them).
_SUMMARY_FIELDS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("index", _int_at_least(0), "an integer >= 0"),
    ("seed", _is_int, "an integer"),
    ("held_out", lambda v: v is None or isinstance(v, str), "a string or null"),
    ("final_train_acc", _is_fraction_or_null, "a fraction in [0, 1] or null"),
    ("final_val_acc", _is_fraction_or_null, "a fraction in [0, 1] or null"),
    ("final_test_acc", _is_fraction_or_null, "a fraction in [0, 1] or null"),
    (
        "val_acc",
        lambda v: v is None or _list_of(_is_fraction_or_null)(v),
        "a list of fractions (one per epoch) or null",
    ),
)


def _check_expert_summaries(entries: list[dict[str, Any]], path: Path, fix: str) -> None:
    """The optional `experts` list: every field a reader uses, and one entry per expert."""
    seen: set[int] = set()
    for i, entry in enumerate(entries):
        for key, ok, expected in _SUMMARY_FIELDS:
            if key not in entry:
                raise ExpertBufferError(f"{path} lacks 'experts[{i}].{key}' ({expected}); {fix}")
            if not ok(entry[key]):
                raise ExpertBufferError(
                    f"{path} has experts[{i}].{key} = {_show(entry[key])}, expected {expected}; "
                    f"{fix}"
                )
        if entry["index"] in seen:
            raise ExpertBufferError(
                f"{path} lists expert {entry['index']} twice in 'experts'; {fix}"
            )
        seen.add(entry["index"])


def _show(value: Any) -> str:
    """A value from a JSON file, short and on one line."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


class TrajectoryStore:
    """Read-only access to a buffer folder, one snapshot at a time.

    Experts are addressed by their index (the number in expert_XXX.safetensors); `expert_ids`
    lists the finished ones (a run that is still going, or was stopped, has fewer than it
    planned). Sample from `expert_ids`, not from range(num_experts), if a gap is possible.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.meta = read_meta(self.path)
        self.epochs = int(self.meta["epochs"])
        self.num_params = int(self.meta["num_params"])
        self.dtype = str(self.meta["dtype"])
        self.buffer_id = str(self.meta["buffer_id"])
        self._files: dict[int, Path] = {}
        for file in sorted(self.path.iterdir()):
            match = _EXPERT_RE.match(file.name)
            if match:
                self._check_file(file)
                self._files[int(match.group(1))] = file

    # Structure -------------------------------------------------------------------------
    @property
    def expert_ids(self) -> list[int]:
        return sorted(self._files)

    @property
    def num_experts(self) -> int:
        """Number of finished experts."""
        return len(self._files)

    @property
    def privacy(self) -> dict[str, Any] | None:
        """The buffer's differential-privacy guarantee (buffer.json `privacy`), or None."""
        return self.meta.get("privacy")

    @property
    def layout(self) -> ParamLayout:
        """Where each named parameter sits in a snapshot vector."""
        return ParamLayout.from_dict(self.meta["param_layout"])

    def _check_file(self, file: Path) -> None:
        fix = f"delete {file} and rerun `meddistill buffer` with the same settings to remake it"
        try:
            with safe_open(str(file), framework="pt") as fh:
                header = fh.metadata() or {}
                shape = list(fh.get_slice(TENSOR).get_shape())
                dtype = fh.get_slice(TENSOR).get_dtype()
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise ExpertBufferError(
                f"expert file {file} is corrupt or unreadable ({reason}); {fix}"
            ) from exc
        self._check_header(file, header, fix)
        expected = [self.epochs + 1, self.num_params]
        want_dtype = _FILE_DTYPES[self.dtype]
        if shape != expected or dtype != want_dtype:
            raise ExpertBufferError(
                f"expert file {file} holds a {dtype} trajectory of shape {shape}, expected "
                f"{want_dtype} {expected}; {fix}"
            )

    def _check_header(self, file: Path, header: dict[str, str], fix: str) -> None:
        """The header fields `history` and `expert_seed` read: the buffer, seed and history."""
        if header.get("buffer_id") != self.buffer_id:
            raise ExpertBufferError(
                f"expert file {file} belongs to buffer {header.get('buffer_id')}, not to "
                f"{self.buffer_id} described by {self.path / META_FILE}; {fix}"
            )
        try:
            int(header.get("seed", ""))
            history = json.loads(header.get("history", "{}"))
        except ValueError:
            history = None
        if not isinstance(history, dict):
            raise ExpertBufferError(
                f"expert file {file} has a damaged header (seed {_show(header.get('seed'))}, "
                f"history not a JSON object); {fix}"
            )

    def _file(self, expert: int) -> Path:
        if expert not in self._files:
            raise ExpertBufferError(
                f"expert {expert} is not in the buffer at {self.path} (finished experts: "
                f"{_ranges(self.expert_ids)}); run `meddistill buffer` again to finish it"
            )
        return self._files[expert]

    def _check_epoch(self, epoch: int) -> None:
        if not 0 <= epoch <= self.epochs:
            raise ConfigError(
                f"epoch {epoch} is outside 0..{self.epochs} of the buffer at {self.path}; "
                "lower max_start / expert_epochs or make a longer buffer"
            )

    # Reading ---------------------------------------------------------------------------
    def load(
        self, expert: int, epoch: int, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Snapshot of `expert` after `epoch` (0 = init) as float32 [P]; reads only that row."""
        return self.load_many(expert, [epoch], device=device)[0]

    def load_many(
        self, expert: int, epochs: Sequence[int], device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Snapshots of several epochs of one expert, float32 [len(epochs), P], row by row."""
        file = self._file(expert)
        for e in epochs:
            self._check_epoch(int(e))
        try:
            with safe_open(str(file), framework="pt") as fh:
                sl = fh.get_slice(TENSOR)
                rows = [sl[int(e) : int(e) + 1] for e in epochs]
        except Exception as exc:
            raise ExpertBufferError(
                f"cannot read expert file {file} ({exc}); delete it and rerun `meddistill buffer`"
            ) from exc
        for e, row in zip(epochs, rows, strict=True):
            self._check_finite(file, int(e), row)
        out = torch.cat(rows).to(torch.float32) if rows else torch.zeros(0, self.num_params)
        return out.to(device) if device is not None else out

    def _check_finite(self, file: Path, epoch: int, row: torch.Tensor) -> None:
        """Every row read is checked (the whole buffer is never read at once): a NaN or inf
        parameter (float16 overflow, damage) is the buffer's fault, not the distillation's."""
        bad = int((~torch.isfinite(row)).sum())
        if bad:
            hint = (
                " (buffer.dtype=float32 avoids float16 overflow)" if self.dtype == "float16" else ""
            )
            raise ExpertBufferError(
                f"expert file {file} holds {bad} non-finite parameter value(s) (NaN or inf) "
                f"at epoch {epoch}; delete it and {_REMAKE}{hint}"
            )

    def history(self, expert: int) -> dict[str, Any]:
        """An expert's history as written (index e = after epoch e): train_loss / train_acc,
        val_acc / val_auc and final_test_acc; older buffers hold per-epoch test_acc instead.
        `summary` reads either."""
        file = self._file(expert)
        with safe_open(str(file), framework="pt") as fh:
            header = fh.metadata() or {}
        return json.loads(header.get("history", "{}"))

    def expert_seed(self, expert: int) -> int:
        with safe_open(str(self._file(expert)), framework="pt") as fh:
            return int((fh.metadata() or {})["seed"])

    def summary(self, expert: int) -> dict[str, Any]:
        """The expert's `experts` entry of buffer.json, made from its file (any format)."""
        return expert_summary(expert, self.expert_seed(expert), self.history(expert))

    # Compatibility ---------------------------------------------------------------------
    def check_compatible(self, dataset: MedicalDataset, spec: ModelSpec) -> None:
        """Refuse a buffer made for another dataset (by source md5) or another network."""
        made = self.meta["dataset"]
        if made.get("source_id") != dataset.source_id or made.get("name") != dataset.name:
            raise ExpertBufferError(
                f"buffer at {self.path} was made for dataset {made.get('name')} "
                f"(source {made.get('source_id')}), not {dataset.name} (source "
                f"{dataset.source_id}); {_REMAKE}"
            )
        if list(made.get("image_shape", [])) != list(dataset.image_shape):
            raise ExpertBufferError(
                f"buffer at {self.path} was made for images of shape {made.get('image_shape')}, "
                f"not {list(dataset.image_shape)} of {dataset.name}; {_REMAKE}"
            )
        if made.get("normalization") != dataset.normalization.to_dict():
            raise ExpertBufferError(
                f"buffer at {self.path} was made with normalisation {made.get('normalization')}, "
                f"not {dataset.normalization.to_dict()}; {_REMAKE}"
            )
        if self.meta["model"] != to_dict(spec):
            raise ExpertBufferError(
                f"buffer at {self.path} was made for network {_spec_text(self.meta['model'])}, "
                f"not {_spec_text(to_dict(spec))}; {_REMAKE}"
            )

    def __repr__(self) -> str:
        return (
            f"TrajectoryStore({str(self.path)!r}, experts={self.num_experts}, "
            f"epochs={self.epochs}, params={self.num_params}, dtype={self.dtype})"
        )


def _fraction(value: Any) -> float | None:
    """An accuracy from a history as written, or None (missing, null, not a fraction)."""
    return value if _is_number(value) and 0.0 <= value <= 1.0 else None


def _last(values: Any) -> float | None:
    return _fraction(values[-1]) if isinstance(values, list) and values else None


def expert_summary(index: int, seed: int, history: dict[str, Any]) -> dict[str, Any]:
    """One `experts` entry of buffer.json from an expert file's history. An older history
    (per-epoch test_acc) still reads: its last test_acc is the final network's test accuracy,
    and it has no validation numbers."""
    entry: dict[str, Any] = {
        "index": int(index),
        "seed": int(seed),
        "final_train_acc": _last(history.get("train_acc")),
    }
    if "final_test_acc" not in history and "test_acc" in history:
        return {
            **entry,
            "held_out": OLD_HELD_OUT,
            "final_val_acc": None,
            "final_test_acc": _last(history.get("test_acc")),
            "val_acc": None,
        }
    val = history.get("val_acc")
    held_out = history.get("held_out")
    entry.update(
        held_out=held_out if isinstance(held_out, str) else None,
        final_val_acc=_last(val),
        final_test_acc=_fraction(history.get("final_test_acc")),
        val_acc=[_fraction(v) for v in val] if isinstance(val, list) else None,
    )
    if entry["held_out"] is None:
        entry["note"] = NO_VAL_NOTE
    return entry


def record_expert_summaries(folder: str | Path) -> list[dict[str, Any]]:
    """Rewrite buffer.json's `experts` from the finished expert files (atomically, and only
    when it changed): built from the files, it also covers experts finished before a kill
    between an expert file and this write, and those of an older meddistill."""
    store = TrajectoryStore(folder)
    entries = [store.summary(i) for i in store.expert_ids]
    if store.meta.get("experts") != entries:
        meta = {**store.meta, "experts": entries}
        validate_buffer_meta(meta, store.path / META_FILE)
        write_json_atomic(store.path / META_FILE, meta)
    return entries


def _spec_text(spec: dict[str, Any]) -> str:
    return "/".join(f"{k}={v}" for k, v in spec.items())


def _ranges(ids: list[int]) -> str:
    if not ids:
        return "none"
    parts, start, prev = [], ids[0], ids[0]
    for i in [*ids[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(parts)
