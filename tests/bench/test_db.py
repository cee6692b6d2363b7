"""The results database: schema, upserts, versions and migrations, filters, stage costs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch

from meddistill.bench import db as dbmod
from meddistill.bench.db import Artifact, Result, ResultsDB, measure_stage
from meddistill.errors import ArtifactError
from meddistill.memory import reset_peak_rss


def artifact(
    id: str, dataset: str = "toy", method: str = "mtt", ipc: int | None = 1, seed: int = 0, **kw
) -> Artifact:
    kind = kw.pop("kind", "baseline" if method in ("full", "random") else "synthetic")
    return Artifact(
        id=id,
        kind=kind,
        dataset=dataset,
        method=method,
        ipc=ipc,
        seed=seed,
        setting=kw.pop("setting", f"{dataset}-{method}-{ipc}"),
        config=kw.pop("config", {"method": method}),
        **kw,
    )


def result(artifact_id: str, seed: int, acc: float, arch: str = "convnet", k: int = 0) -> Result:
    return Result(
        artifact_id=artifact_id,
        arch=arch,
        eval_id="ev",
        eval_seed=seed,
        net_index=k,
        acc=acc,
        auc=0.5,
        loss=1.0,
        epochs=300,
        lr=0.01,
    )


def test_new_database_has_the_documented_schema(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "results.sqlite"
    with ResultsDB(path) as db:
        assert db.schema_version() == dbmod.SCHEMA_VERSION == 5
    con = sqlite3.connect(path)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"meta", "artifacts", "evals", "results", "grid_cells", "claims", "audits",
                      "grid_audits"}  # fmt: skip
    cols = [r[1] for r in con.execute("PRAGMA table_info(results)")]
    assert cols[:6] == ["artifact_id", "arch", "eval_id", "eval_seed", "net_index", "acc"]
    assert {"wall_s", "cpu_s", "peak_mem_mb", "epochs", "lr", "auc"} <= set(cols)
    art_cols = {r[1] for r in con.execute("PRAGMA table_info(artifacts)")}
    assert {
        "kind",
        "dataset",
        "method",
        "ipc",
        "seed",
        "config",
        "path",
        "wall_s",
        "cpu_s",
        "peak_mem_mb",
    } <= art_cols
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_results_are_upserted_never_duplicated(tmp_path: Path) -> None:
    with ResultsDB(tmp_path / "r.sqlite") as db:
        db.add_artifact(artifact("a1"))
        db.add_eval("ev", {"epochs": 300})
        db.add_result(result("a1", seed=11, acc=0.5))
        db.add_result(result("a1", seed=11, acc=0.75))  # the same network again: replaced
        db.add_result(result("a1", seed=12, acc=0.25))
        assert db.count("results") == 2
        assert [r.acc for r in db.results()] == [0.75, 0.25]  # ordered by network, then seed
        assert db.has_result("a1", "convnet", "ev", 11)
        assert not db.has_result("a1", "lenet", "ev", 11)
        assert not db.has_result("a1", "convnet", "other", 11)


def test_artifact_upsert_keeps_created_and_updates_the_rest(tmp_path: Path) -> None:
    with ResultsDB(tmp_path / "r.sqlite") as db:
        db.add_artifact(artifact("a1", wall_s=1.0, created="2020-01-01T00:00:00Z"))
        db.add_artifact(artifact("a1", wall_s=2.5))
        assert db.count("artifacts") == 1
        got = db.artifact("a1")
        assert got is not None and got.wall_s == 2.5 and got.created == "2020-01-01T00:00:00Z"
        assert got.config == {"method": "mtt"}
        assert db.artifact("nope") is None
        with pytest.raises(ArtifactError, match="kind"):
            db.add_artifact(artifact("a2", kind="model"))


def test_result_of_an_unknown_artifact_is_refused(tmp_path: Path) -> None:
    with ResultsDB(tmp_path / "r.sqlite") as db:
        db.add_eval("ev", {})
        with pytest.raises(ArtifactError, match="add_artifact"):
            db.add_result(result("missing", seed=1, acc=0.5))
        assert db.count("results") == 0


def test_paths_inside_the_runs_folder_are_stored_relative(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with ResultsDB(runs / "results.sqlite") as db:
        db.add_artifact(artifact("a1", path=str(runs / "distill" / "x" / "synthetic")))
    moved = tmp_path / "moved"
    runs.rename(moved)
    with ResultsDB(moved / "results.sqlite") as db:
        got = db.artifact("a1")
        assert got is not None
        assert got.path == str((moved / "distill" / "x" / "synthetic").resolve())


def _set_version(path: Path, value: str) -> None:
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (value,))
    con.commit()
    con.close()


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    ResultsDB(path).close()
    _set_version(path, "99")
    with pytest.raises(ArtifactError, match="schema version 99, newer .* upgrade meddistill"):
        ResultsDB(path)


@pytest.mark.parametrize("value", ["abc", "-1"])
def test_unknown_schema_version_is_refused(tmp_path: Path, value: str) -> None:
    path = tmp_path / "r.sqlite"
    ResultsDB(path).close()
    _set_version(path, value)
    with pytest.raises(ArtifactError, match="schema version"):
        ResultsDB(path)


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(ArtifactError, match="not a meddistill results database"):
        ResultsDB(other)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite at all, just text" * 100)
    with pytest.raises(ArtifactError, match="not a readable SQLite"):
        ResultsDB(junk)
    with pytest.raises(ArtifactError, match="not a file"):
        ResultsDB(tmp_path)
    with pytest.raises(ArtifactError, match="no results database .*meddistill bench"):
        ResultsDB(tmp_path / "absent.sqlite", create=False)
    assert not (tmp_path / "absent.sqlite").exists()


def test_an_old_database_is_migrated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.sqlite"
    with ResultsDB(path) as db:
        db.add_artifact(artifact("a1"))
    migrations = {**dbmod.MIGRATIONS, 6: ("ALTER TABLE results ADD COLUMN note TEXT",)}
    monkeypatch.setattr(dbmod, "MIGRATIONS", migrations)
    monkeypatch.setattr(dbmod, "SCHEMA_VERSION", 6)
    with ResultsDB(path) as db:
        assert db.schema_version() == 6
        assert db.artifact("a1") is not None  # the data survived
    con = sqlite3.connect(path)
    assert "note" in [r[1] for r in con.execute("PRAGMA table_info(results)")]
    con.close()
    # A version with no migration path is refused, not half-migrated.
    kept = {v: dbmod.MIGRATIONS[v] for v in (1, 2, 3, 4, 5)}
    monkeypatch.setattr(dbmod, "MIGRATIONS", kept)
    monkeypatch.setattr(dbmod, "SCHEMA_VERSION", 7)
    with pytest.raises(ArtifactError, match="cannot migrate"):
        ResultsDB(path)


def test_results_filters(tmp_path: Path) -> None:
    with ResultsDB(tmp_path / "r.sqlite") as db:
        db.add_eval("ev", {})
        db.add_artifact(artifact("full", method="full", ipc=None))
        db.add_artifact(artifact("m1", ipc=1))
        db.add_artifact(artifact("m10", ipc=10))
        db.add_artifact(artifact("other", dataset="other", ipc=1))
        for i, a in enumerate(["full", "m1", "m10", "other"]):
            db.add_result(result(a, seed=i, acc=0.1 * (i + 1)))
            db.add_result(result(a, seed=i, acc=0.1 * (i + 1), arch="lenet"))
        ids = {r.artifact_id for r in db.results(ipcs=[1])}
        assert ids == {"full", "m1", "other"}  # full data belongs to every IPC
        ids = {r.artifact_id for r in db.results(datasets=["toy"], ipcs=[10], archs=["lenet"])}
        assert ids == {"full", "m10"}
        assert {r.method for r in db.results(methods=["full"])} == {"full"}
        assert db.results(grid="g") == []
        db.add_grid_cell("g", "m1", "ev")
        db.add_grid_cell("g", "m1", "ev")  # once only
        assert db.count("grid_cells") == 1
        rows = db.results(grid="g", archs=["convnet"])
        assert [(r.artifact_id, r.dataset, r.ipc, r.acc) for r in rows] == [("m1", "toy", 1, 0.2)]
        assert db.grids() == ["g"]


def test_measure_stage_reports_time_and_peak_memory() -> None:
    if not reset_peak_rss():
        pytest.skip("this kernel cannot reset the peak RSS mark (/proc/self/clear_refs)")
    with measure_stage("cpu") as stage:
        block = torch.ones(48 * 2**20 // 4)  # 48 MB, written, so resident
        total = float(block.sum())
        del block
    assert total == 48 * 2**20 // 4
    assert stage.wall_s > 0 and stage.device == "cpu"
    assert stage.mem_kind == "rss_hwm"
    assert 40 <= stage.peak_mem_mb < 200
    with measure_stage("cpu") as small:  # the mark was reset: a small stage reads small
        total = float(torch.ones(1000).sum())
    assert small.peak_mem_mb < 20


def test_a_version_2_database_is_read_as_it_is_and_migrated_to_the_current(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 3 added cpu_s: a reader (never migrating) reads it as NULL from a version 2
    file; a writer adds the columns and keeps the rows."""
    path = tmp_path / "r.sqlite"
    with monkeypatch.context() as patch:
        patch.setattr(dbmod, "MIGRATIONS", {v: dbmod.MIGRATIONS[v] for v in (1, 2)})
        patch.setattr(dbmod, "SCHEMA_VERSION", 2)
        ResultsDB(path).close()
    con = sqlite3.connect(path)
    assert "cpu_s" not in [r[1] for r in con.execute("PRAGMA table_info(artifacts)")]
    con.execute(
        "INSERT INTO artifacts (id, kind, dataset, method, setting, config, wall_s, created, "
        "updated) VALUES ('a1', 'synthetic', 'toy', 'mtt', 's', '{}', 2.0, 't', 't')"
    )
    con.commit()
    con.close()
    with ResultsDB(path, create=False) as reader:
        assert reader.schema_version() == 2
        got = reader.artifact("a1")
        assert got is not None and got.wall_s == 2.0 and got.cpu_s is None
        assert reader.audits() == [] and reader.audit("a1", "x") is None  # no audits table yet
    with ResultsDB(path) as writer:  # migrated (3: cpu_s, 4: val_acc and val_auc, 5: audits)
        assert writer.schema_version() == dbmod.SCHEMA_VERSION == 5
        assert writer.count("audits") == writer.count("grid_audits") == 0
        assert {"val_acc", "val_auc"} <= {
            r[1] for r in writer._conn.execute("PRAGMA table_info(results)")
        }
        writer.add_artifact(artifact("a2", cpu_s=1.5))
        assert writer.artifact("a1").wall_s == 2.0  # type: ignore[union-attr]
        assert writer.artifact("a2").cpu_s == 1.5  # type: ignore[union-attr]
