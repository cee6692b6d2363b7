"""The page of a `meddistill tune` folder: how the search went on the validation split (each
trial's score, the best so far, parameter importance), every trial's values, and the preset
it chose. Everything comes from trials.json and preset.yaml; study.db is not opened."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from meddistill.errors import ArtifactError, ConfigError
from meddistill.report import analyses
from meddistill.report.page import ANALYSIS_DIR, cards, details, figure, html_table, page, section
from meddistill.tuning import PRESET_FILE, TRIALS_FILE


def read_trials(folder: Path) -> dict[str, Any]:
    try:
        record = json.loads((folder / TRIALS_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{folder / TRIALS_FILE} cannot be read ({exc})") from exc
    if not isinstance(record, dict) or not isinstance(record.get("trials"), list):
        raise ArtifactError(f"{folder / TRIALS_FILE} has no list of trials; is it a tune folder?")
    return record


def _percent(value: Any) -> str:
    return f"{100 * value:.2f}" if isinstance(value, int | float) else "-"


def _trial_rows(record: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for t in record["trials"]:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in t.get("params", {}).items())  # fmt: skip
        label = f"{t['number']} (base)" if t.get("base") else t["number"]
        seconds = t.get("seconds")
        rows.append([label, t["state"], _percent(t.get("val_acc")), params or "-",
                     "-" if seconds is None else f"{seconds:.0f}"])  # fmt: skip
    return rows


def _key_numbers(record: dict[str, Any]) -> str:
    states = [t["state"] for t in record["trials"]]
    best = record.get("best") or {}
    return cards([
        ("best val accuracy (%)", _percent(best.get("val_acc"))),
        ("best trial", best.get("number", "-")),
        ("trials (complete / pruned / failed)",
         f"{states.count('complete')} / {states.count('pruned')} / {states.count('fail')}"),
        ("budget", record.get("budget", "-")),
    ])  # fmt: skip


def _figure(folder: Path, record: dict[str, Any], figures: bool) -> list[str]:
    if not figures:
        return []
    try:
        result = analyses.tuning_search(record, folder / ANALYSIS_DIR / "tuning_search")
    except ConfigError:
        return []
    caption = "validation accuracy per trial, best so far, and parameter importance"
    return [figure(folder, result, caption)]


def tune_page(folder: Path, figures: bool) -> str:
    """The whole page of a tune folder."""
    record = read_trials(folder)
    title = f"Tuning {record.get('method')} on {record.get('dataset')}, IPC {record.get('ipc')}"
    subtitle = ("every trial scored on the validation split; the test split was not read "
                "(distil with preset.yaml to report it)")  # fmt: skip
    header = ["trial", "state", "val accuracy (%)", "values", "seconds"]
    trials = html_table(header, _trial_rows(record), table_id="trials")
    space = "; ".join(record.get("space", []))
    body = [
        section("summary", "Key numbers", [_key_numbers(record)]),
        section(
            "search",
            "Search",
            [*_figure(folder, record, figures), trials, f"<p>searched: {space}</p>"],
        ),  # fmt: skip
    ]
    importance = record.get("importance") or {}
    if importance:
        rows = [[k, f"{v:.3f}"] for k, v in importance.items()]
        body.append(section("importance", "Parameter importance",
                            [html_table(["knob", "importance (Optuna)"], rows,
                                        table_id="importance")]))  # fmt: skip
    preset = folder / PRESET_FILE
    if preset.is_file():
        body.append(
            section("preset", "Chosen preset", [details("preset.yaml", preset.read_text())])
        )
    return page(title, subtitle, body)
