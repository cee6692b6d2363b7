"""Run folders: every command writes its resolved config, metrics as JSON lines and a log.

A run folder is named by what produced it (command, dataset and a hash of the resolved config),
so re-running the same command finds the same folder and can resume instead of starting over.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from meddistill import __version__
from meddistill.utils import atomic_path, stable_hash, write_json_atomic


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
    """A dataset name as a folder-name part (folder:/a/b and hub names carry ':' and '/')."""
    return name.replace(":", "_").replace("/", "_")


class RunDir:
    """A folder holding config.yaml, metrics.jsonl, log.txt and result files of one run."""

    def __init__(self, path: str | Path, config: dict[str, Any]):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.config = config
        with atomic_path(self.path / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        self.logger = self._make_logger()

    @classmethod
    def for_command(
        cls, runs_root: str | Path, command: str, dataset: str, config: dict[str, Any]
    ) -> RunDir:
        """The default folder runs_root/command/dataset-<config hash>."""
        name = f"{slug(dataset)}-{stable_hash(config, 8)}"
        return cls(Path(runs_root) / command / name, config)

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
        """Append one JSON object to metrics.jsonl (flushed at once, so a crash keeps it)."""
        record = {"time": round(time.time(), 3), **values}
        with open(self.path / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record, default=float) + "\n")

    def save_json(self, name: str, obj: Any) -> Path:
        """Write a result file atomically and return its path."""
        target = self.path / name
        write_json_atomic(target, obj)
        return target

    def close(self) -> None:
        for handler in list(self.logger.handlers):
            handler.close()
            self.logger.removeHandler(handler)
