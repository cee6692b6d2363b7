"""What a run folder holds, read once for its report page.

A run folder is anything a meddistill command wrote: config.yaml, metrics.jsonl,
results.json (read through meddistill.data.results, which validates it), synthetic/meta.json,
env.json, grids/, snapshots/. Any part may be missing (a running or stopped run), so every
accessor answers None or empty instead of failing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from meddistill.data.results import RESULTS_FILE, ResultRow, ResultsFile, read_results
from meddistill.errors import ArtifactError
from meddistill.report import analyses


def read_json(path: Path) -> Any:
    """A JSON file's content, None when it is absent; ArtifactError when it is not JSON."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc}); re-create it") from exc


def read_yaml(path: Path) -> tuple[dict[str, Any], str]:
    """A YAML mapping and its text ({} and '' when absent), for the page and its details."""
    if not path.is_file():
        return {}, ""
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ArtifactError(f"{path} is not valid YAML ({exc}); re-create it") from exc
    return (data if isinstance(data, dict) else {}), text


@dataclass
class RunFolder:
    """What a run folder holds, read once (missing parts are None / empty)."""

    path: Path
    config: dict[str, Any]
    config_text: str
    results: ResultsFile | None
    records: list[dict[str, Any]]
    meta: dict[str, Any] | None
    env: Any

    @classmethod
    def read(cls, folder: Path) -> RunFolder:
        config, text = read_yaml(folder / "config.yaml")
        metrics = folder / "metrics.jsonl"
        results = folder / RESULTS_FILE
        return cls(
            path=folder,
            config=config,
            config_text=text,
            results=read_results(results) if results.is_file() else None,
            records=analyses.read_metrics(metrics) if metrics.is_file() else [],
            meta=read_json(folder / "synthetic" / "meta.json"),
            env=read_json(folder / "env.json"),
        )

    def job(self) -> dict[str, Any]:
        """The job's config: config.yaml itself for distill/coreset runs (the job as every
        stage ran it), its `job` section for the other commands and for older runs."""
        job = self.config.get("job")
        if isinstance(job, dict):
            return job
        return self.config if "method" in self.config else {}

    def buffer_meta(self) -> dict[str, Any] | None:
        """buffer.json of the expert buffer the set was distilled from, when it is readable."""
        where = (self.meta or {}).get("buffer") or self.job().get("buffer")
        if not isinstance(where, str):
            return None
        folder = Path(where)
        if not folder.is_absolute() and not folder.exists():
            folder = self.path.parent.parent.parent / folder  # relative to the runs' cwd
        meta = read_json(folder / "buffer.json")
        return meta if isinstance(meta, dict) else None

    def method(self) -> str | None:
        if self.results is not None and self.results.method:
            return self.results.method
        for source in (self.job(), self.meta):
            if source and isinstance(source.get("method"), str):
                return source["method"]
        job = self.job()
        if isinstance(job.get("selection"), str):
            return job["selection"]
        return None

    def dataset(self) -> str | None:
        if self.results is not None:
            return self.results.dataset_name
        ds = self.job().get("dataset")
        if isinstance(ds, dict) and ds.get("name"):
            return str(ds["name"])
        return self.meta.get("dataset") if self.meta else None

    def ipc(self) -> int | None:
        if self.results is not None and self.results.ipc is not None:
            return self.results.ipc
        for source in (self.config.get("match"), self.job()):
            if isinstance(source, dict) and isinstance(source.get("ipc"), int):
                return source["ipc"]
        return None

    def planned_iterations(self) -> int | None:
        match = self.config.get("match")
        if isinstance(match, dict) and isinstance(match.get("iterations"), int):
            return match["iterations"]
        return None

    def rows(self) -> tuple[ResultRow, ...]:
        return self.results.rows if self.results is not None else ()
