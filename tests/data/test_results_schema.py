"""results.json through meddistill.data.results: today's shapes round-trip exactly (plus
schema_version), files from before versioning still read, newer and malformed ones are refused
with one message that names the file."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from meddistill.data.results import (
    RESULTS_FILE,
    SCHEMA_VERSION,
    ArchStats,
    ResultRow,
    ResultsFile,
    read_results,
    results_document,
    write_results,
)
from meddistill.errors import ArtifactError

NETS = [
    {"index": k, "seed": 10 + k, "acc": a, "auc": 0.8, "loss": 1.0, "train_loss": 0.5}
    for k, a in enumerate((0.6, 0.65))
]


def arch_report(acc: float = 0.625) -> dict[str, Any]:
    """archs.<arch> of an evaluated row, as EvalReport.to_dict() writes it."""
    return {
        "arch": "convnet",
        "spec": {"name": "convnet", "width": 128},
        "nets": copy.deepcopy(NETS),
        "acc_mean": acc,
        "acc_std": 0.025,
        "auc_mean": 0.8,
        "auc_std": 0.0,
    }


def evaluated_row(label: str = "hoptm", ipc: int = 10) -> dict[str, Any]:
    """A row as _finish_set and run_evaluate write it: set, ipc, lr, the report, wall_s."""
    return {
        "set": label,
        "ipc": ipc,
        "lr": 0.0123,
        "archs": {"convnet": arch_report()},
        "lr_source": "learned",
        "num_images": 70,
        "seed": 7,
        "config": {"num_nets": 2, "epochs": 300},
        "std": "population (np.std, ddof=0), as the reference scripts",
        "wall_s": 41.0,
    }


def distill_results(run_dir: str = "runs/distill/x") -> dict[str, Any]:
    return {
        "method": "hoptm",
        "dataset": "bloodmnist",
        "ipc": 10,
        "syn_lr": 0.0123,
        "buffer_s": 12.5,
        "distill_s": 340.2,
        "synthetic": f"{run_dir}/synthetic",
        "run_dir": run_dir,
        "rows": [evaluated_row()],
    }


def baseline_results() -> dict[str, Any]:
    """run_baseline's file: the dataset's description, a full row and a random row with the
    baseline report as detail (the networks live there)."""
    subset = {"seed": 3, "report": {"archs": {"convnet": arch_report(0.4)}, "lr": 0.01}}
    stats = {"acc_mean": 0.4, "acc_std": 0.0, "auc_mean": 0.8, "auc_std": 0.0, "num_nets": 2}
    detail = {
        "dataset": "bloodmnist",
        "full": {"train": {"epochs": 50}, "nets": copy.deepcopy(NETS[:1]), **stats},
        "random": {"2": {"subsets": [subset], "archs": {"convnet": stats}}},
    }
    row = {"ipc": None, "archs": {"convnet": {**stats, "num_nets": 1}}, "wall_s": 3.0}
    return {
        "dataset": {"name": "bloodmnist", "task": "multi-class", "num_classes": 8},
        "rows": [
            {"set": "full", **row, "detail": detail},
            {"set": "random", "ipc": 2, "archs": {"convnet": stats}, "detail": detail, "wall_s": 2},
        ],
        "run_dir": "runs/baseline/x",
    }


def test_round_trip_writes_todays_keys_plus_the_version(tmp_path: Path) -> None:
    doc = results_document(
        "bloodmnist",
        [evaluated_row()],
        run_dir="runs/distill/x",
        method="hoptm",
        ipc=10,
        synthetic=Path("runs/distill/x/synthetic"),
        syn_lr=0.0123,
        buffer_s=12.5,
        distill_s=340.2,
    )
    assert doc.to_json() == {"schema_version": SCHEMA_VERSION, **distill_results()}
    path = write_results(tmp_path, doc)
    assert path == tmp_path / RESULTS_FILE
    on_disk = json.loads(path.read_text())
    assert on_disk == {"schema_version": 1, **distill_results()}
    back = read_results(path)
    assert back == doc and back.schema_version == 1
    row = back.rows[0]
    assert isinstance(row.archs["convnet"], ArchStats)
    assert [n.acc for n in row.nets("convnet")] == [0.6, 0.65]
    assert row.lr == 0.0123 and row.extra["lr_source"] == "learned"


@pytest.mark.parametrize(
    "today",
    [
        distill_results(),
        {  # coreset: no step size, selection time; evaluated without an lr of its own
            "method": "herding",
            "dataset": "bloodmnist",
            "ipc": 1,
            "select_s": 3.1,
            "synthetic": "c/synthetic",
            "run_dir": "c",
            "rows": [],
        },
        {"dataset": {"name": "bloodmnist"}, "rows": [evaluated_row("random")], "run_dir": "e"},
        baseline_results(),
    ],
    ids=["distill", "coreset", "evaluate", "baseline"],
)
def test_every_command_shape_reads_and_writes_back_unchanged(
    tmp_path: Path, today: dict[str, Any]
) -> None:
    (tmp_path / RESULTS_FILE).write_text(json.dumps(today))  # version 0: no schema_version
    doc = read_results(tmp_path / RESULTS_FILE)
    assert doc.schema_version == 0
    assert doc.to_json() == {"schema_version": SCHEMA_VERSION, **today}
    write_results(tmp_path / "again.json", today)  # a plain dict is validated, then written
    assert json.loads((tmp_path / "again.json").read_text()) == {"schema_version": 1, **today}


def test_version_0_file_reads_with_its_baseline_networks(tmp_path: Path) -> None:
    (tmp_path / RESULTS_FILE).write_text(json.dumps(baseline_results()))
    doc = read_results(tmp_path)  # a run folder works as well as the file
    assert doc.schema_version == 0 and doc.dataset_name == "bloodmnist"
    full, random = doc.rows
    assert full.ipc is None and full.lr is None and full.archs["convnet"].num_nets == 1
    assert [n.acc for n in full.nets("convnet")] == [0.6]  # detail.full.nets
    assert [n.acc for n in random.nets("convnet")] == [0.6, 0.65]  # the subsets' networks
    assert random.nets("lenet") == ()


def test_a_newer_version_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / RESULTS_FILE
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1, **distill_results()}))
    with pytest.raises(ArtifactError) as err:
        read_results(path)
    message = str(err.value)
    assert str(path) in message and f"schema_version {SCHEMA_VERSION + 1}" in message
    assert "upgrade meddistill" in message


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (
            lambda d: d["rows"][0]["archs"]["convnet"].update(acc_mean="high"),
            'rows[0].archs.convnet.acc_mean is "high", expected a number',
        ),
        (lambda d: d["rows"][0].pop("archs"), "rows[0].archs is missing, expected an object"),
        (lambda d: d["rows"][0].update(ipc="10"), 'rows[0].ipc is "10", expected an integer'),
        (
            lambda d: d["rows"][0]["archs"]["convnet"]["nets"][1].pop("acc"),
            "rows[0].archs.convnet.nets[1].acc is missing, expected a number",
        ),
        (lambda d: d.update(rows={}), "rows is {}, expected a list of rows"),
        (lambda d: d.update(schema_version="1"), 'schema_version is "1", expected a non-neg'),
    ],
    ids=["number", "missing", "ipc", "net", "rows", "version"],
)
def test_a_malformed_file_is_refused_with_one_clear_message(
    tmp_path: Path, change: Any, where: str
) -> None:
    doc = distill_results()
    change(doc)
    path = tmp_path / RESULTS_FILE
    path.write_text(json.dumps(doc))
    with pytest.raises(ArtifactError) as err:
        read_results(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {where}")
    assert "re-create it" in message and "\n" not in message


def test_malformed_baseline_detail_names_the_row(tmp_path: Path) -> None:
    doc = baseline_results()
    doc["rows"][1]["detail"]["random"]["2"]["subsets"][0]["report"]["archs"]["convnet"]["nets"] = 5
    with pytest.raises(ArtifactError, match=r"rows\[1\]\.detail\.random\.2\.subsets\[0\]"):
        ResultsFile.from_json(doc)


def test_a_malformed_document_is_not_written(tmp_path: Path) -> None:
    bad = distill_results()
    bad["rows"][0]["set"] = None
    with pytest.raises(ArtifactError, match=r"rows\[0\]\.set is null, expected a string"):
        write_results(tmp_path / RESULTS_FILE, bad)
    assert not (tmp_path / RESULTS_FILE).exists()
    with pytest.raises(ArtifactError, match="results document: dataset"):
        results_document(None, [])  # type: ignore[arg-type]


def test_unreadable_or_absent_file(tmp_path: Path) -> None:
    (tmp_path / RESULTS_FILE).write_text("{not json")
    with pytest.raises(ArtifactError, match="is not valid JSON"):
        read_results(tmp_path / RESULTS_FILE)
    with pytest.raises(ArtifactError, match="does not exist"):
        read_results(tmp_path / "missing.json")
    with pytest.raises(ArtifactError, match="the document is"):
        ResultsFile.from_json([1, 2])


def test_unknown_keys_are_kept_and_rows_can_be_typed() -> None:
    today = {**distill_results(), "note": {"by": "a later writer"}}
    today["rows"][0]["archs"]["convnet"]["nets"][0]["extra_metric"] = 1.5
    assert ResultsFile.from_json(today).to_json() == {"schema_version": 1, **today}
    row = ResultRow.from_json(evaluated_row(), "row")
    doc = results_document({"name": "toy"}, [row], run_dir="r")
    assert doc.rows == (row,) and doc.dataset_name == "toy"
