"""Run folders: every command writes its resolved config, metrics as JSON lines and a log.

A run folder is named by what produced it (command, dataset and a hash of the resolved config),
so re-running the same command finds the same folder and can resume instead of starting over.
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import re
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from meddistill import __version__, distributed
from meddistill.errors import ConfigError
from meddistill.locking import folder_lock
from meddistill.utils import atomic_path, json_text, stable_hash, write_json_atomic


def environment_info() -> dict[str, Any]:
    """What ran the job: versions and device, recorded beside every result."""
    return {
        "meddistill": __version__,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(),
    }


def slug(name: str) -> str:
    """A name from a config (dataset, method) as ONE safe folder-name part: folder:/a/b and
    hub names carry ':' and '/', and a value like '../x' must never climb out of runs/."""
    text = re.sub(r"[^A-Za-z0-9._+-]", "_", str(name)).lstrip(".")
    return text or "_"


def inside(root: str | Path, path: str | Path, what: str) -> Path:
    """`path` when it lies inside `root` (after resolving '..' and links); else refuse, so a
    value from a config can never make a run write outside its runs folder."""
    base, target = Path(root).resolve(), Path(path).resolve()
    if target != base and base not in target.parents:
        raise ConfigError(f"{what} {path} would lie outside {root}; use a plain name")
    return Path(path)


def _keeps(record: dict[str, Any], position: int, tags: dict[str, Any]) -> bool:
    """Whether a metrics record survives a rewind of the loop tagged `tags` to `position`
    (distill records carry the 0-based step, eval records the steps done)."""
    if any(record.get(k) != v for k, v in tags.items()):
        return True
    step = record.get("iteration")
    if not isinstance(step, int):
        return True
    if record.get("stage") == "distill":
        return step < position
    if record.get("stage") == "eval":
        return step <= position
    return True


class RunDir:
    """A folder holding config.yaml, metrics.jsonl, log.txt and result files of one run.

    The run holds the folder's lock from creation to close() (a second process on the same
    folder is refused with one line); use it as a context manager so errors release it too.
    """

    def __init__(self, path: str | Path, config: dict[str, Any]):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"run folder {self.path} is a file; choose another --out folder")
        self.config = config
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(folder_lock(self.path, "run folder"))
        self.writes = distributed.is_main()  # under torchrun rank 0 writes the run's files
        if not self.writes:
            self.logger = logging.getLogger("meddistill.run.other-rank")
            # a disabled logger drops every record (no handler accumulates per run folder,
            # and Python's last-resort handler never prints them on stderr)
            self.logger.disabled = True
            return
        try:
            with atomic_path(self.path / "config.yaml") as tmp:
                tmp.write_text(yaml.safe_dump(config, sort_keys=False))
            self.logger = self._make_logger()
            self._filter_metrics(lambda record: True)  # a line a kill cut short
        except BaseException:
            self._stack.close()
            raise

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def for_command(
        cls, runs_root: str | Path, command: str, dataset: str, config: dict[str, Any]
    ) -> RunDir:
        """The default folder runs_root/command/dataset-<config hash>."""
        name = f"{slug(dataset)}-{stable_hash(config, 8)}"
        return cls(inside(runs_root, Path(runs_root) / command / name, "run folder"), config)

    def _make_logger(self) -> logging.Logger:
        logger = logging.getLogger(f"meddistill.run.{self.path.resolve()}")
        logger.setLevel(logging.INFO)
        logger.propagate = False
        if not logger.handlers:
            handler = logging.FileHandler(self.path / "log.txt")
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            logger.addHandler(handler)
        return logger

    def log(self, message: str) -> None:
        """Append a line to log.txt."""
        self.logger.info(message)

    def metric(self, **values: Any) -> None:
        """Append one JSON object to metrics.jsonl (flushed at once, so a crash keeps it);
        a NaN or infinite number is written null (strict JSON, as every reader expects)."""
        if not self.writes:
            return
        record = {"time": round(time.time(), 3), **values}
        with open(self.path / "metrics.jsonl", "a") as fh:
            fh.write(json_text(record, default=float) + "\n")

    def rewind_metrics(self, position: int, tags: dict[str, Any] | None = None) -> None:
        """Drop the records a resumed loop (tagged `tags`) will write again from `position`,
        and any line cut short by a kill, so metrics.jsonl never holds a step twice."""
        self._filter_metrics(lambda record: _keeps(record, position, tags or {}))

    def drop_metrics(self, **match: Any) -> None:
        """Remove the records whose fields equal `match` (a final evaluation done again)."""
        self._filter_metrics(lambda record: any(record.get(k) != v for k, v in match.items()))

    def _filter_metrics(self, keep: Any) -> None:
        path = self.path / "metrics.jsonl"
        if not self.writes or not path.is_file():
            return
        lines = path.read_text().splitlines()
        kept = [line for line in lines if (record := _record(line)) is not None and keep(record)]
        if kept != lines:
            with atomic_path(path) as tmp:
                tmp.write_text("".join(f"{line}\n" for line in kept))

    def save_json(self, name: str, obj: Any) -> Path:
        """Write a result file atomically and return its path."""
        target = self.path / name
        if self.writes:
            write_json_atomic(target, obj)
        return target

    def close(self) -> None:
        """Close the log and release the folder's lock (idempotent)."""
        for handler in list(self.logger.handlers) if self.writes else []:
            handler.close()
            self.logger.removeHandler(handler)
        self._stack.close()


def _record(line: str) -> dict[str, Any] | None:
    """A metrics line as a dict; None for a line cut short by a kill."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
