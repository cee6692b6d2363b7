"""The results database of a benchmark grid: one SQLite file (stdlib sqlite3) in the runs folder.

Why SQLite: a grid is killed and resumed, several grids share buffers and synthetic sets, and
tables are computed long after; one file with transactions and UNIQUE keys makes a re-run
update a row instead of adding a second one, and needs no server.

Schema (SCHEMA_VERSION = 5):

  meta(key TEXT PRIMARY KEY, value TEXT)
      'schema_version' (an integer as text), 'created', 'meddistill_version'.
  artifacts                one row per thing a stage made (or, for baselines, chose)
      id           TEXT PRIMARY KEY   hash of what produced it (config, dataset, seed, ...)
      kind         'buffer' | 'synthetic' | 'baseline'
      dataset      the grid's dataset label (e.g. 'bloodmnist')
      method       'buffer', a distillation method ('hoptm', ...), 'random' or 'full'
      ipc          images per class (NULL: buffers and full data)
      seed         the seed of the run that made it
      setting      hash of the same config WITHOUT the seed: rows of one setting pool over
                   seeds in tables; two settings in one table cell are refused
      config       JSON of the resolved config that produced it
      path         its folder, relative to the database's folder when inside it (NULL when
                   nothing is stored, e.g. a random subset, redrawn from its seed)
      parent       the artifact it was made from (a synthetic set's buffer), or NULL
      wall_s, peak_mem_mb, mem_kind, device   cost of the stage that made it (meddistill.costs:
                   peak_mem_mb is the peak above the stage's start, of what mem_kind says)
      cpu_s (version 3)   CPU seconds (user + system, with worker processes) of that stage
      created, updated   ISO-8601 UTC
  evals(id TEXT PRIMARY KEY, config TEXT)
      an evaluation setting (epochs, lr rule, batch, DSA, base network) by its hash
  results                  one row per trained evaluation network
      artifact_id  -> artifacts.id       arch  evaluation architecture ('convnet', 'lenet', ...)
      eval_id      -> evals.id           eval_seed   the network's seed (init, batches, DSA)
      net_index    k of the k-th network of (artifact, arch, eval setting)
      acc (fraction in [0, 1]), auc, loss     on the real test split
      epochs, lr   how it was trained           wall_s, peak_mem_mb, mem_kind, device, created
      cpu_s (version 3)   CPU seconds of training and testing the network
      val_acc, val_auc (version 4)   on the validation split (to choose by; NULL without one)
      PRIMARY KEY (artifact_id, arch, eval_id, eval_seed): a re-run replaces, never duplicates
  grid_cells(grid, artifact_id, eval_id)  which artifacts and evaluation settings a grid uses,
      PRIMARY KEY of all three, so tables can show exactly one grid's results.
  claims (version 2)       who is working on an artifact now, so that several `bench` processes
      on one grid share its cells instead of each doing them all (bench/claims.py)
      artifact_id  PRIMARY KEY: a grid cell's artifact, or a shared one (an expert buffer)
      grid, label  the grid and the cell, for messages
      host, pid, started   the owner process (started: its start time, against pid reuse)
      claimed_at, heartbeat   unix times: when taken, and the owner's last sign of life
  audits (version 5)       one row per privacy audit of a synthetic set (meddistill.privacy)
      artifact_id  -> artifacts.id       audit_id   hash of the artifact and the audit's settings
      light        'green' | 'amber' | 'red'      images   the set's images
      near_copies_pixel, near_copies_features, copies_8bit
      attack_auc, attack_auc_lo, attack_auc_hi, attack_tpr, attack_tpr_lo, attack_tpr_hi
                   the loss attack on networks trained on the set: AUC and TPR at 1 % FPR with
                   their 95 % bootstrap intervals
      lira_auc .. lira_tpr_hi, shadows   the same for LiRA (NULL, 0 without shadows)
      path         its audit.json (stored as artifacts.path is)     config   JSON of the audit job
      wall_s, created
      PRIMARY KEY (artifact_id, audit_id): an audit is recorded once, a re-run skips it
  grid_audits(grid, artifact_id, audit_id) (version 5)  which audits a grid asked for, so
      `meddistill table --kind audit --grid G` shows exactly that grid's.

Writers (ResultsDB(path)) run the migrations MIGRATIONS[v] for v = old+1 .. current in one
transaction; a newer or unknown version is refused with an ArtifactError. Readers
(ResultsDB(path, create=False): `meddistill table`, `report`) open the file read-only (an SQLite
`mode=ro` URI), never migrate and need no write access, so a results folder on a read-only mount
or owned by someone else can be read; they accept versions READABLE_SINCE .. SCHEMA_VERSION and
read a column an older version lacks (cpu_s before 3, val_* before 4) as NULL, and no audits
before 5.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from meddistill import __version__
from meddistill.bench.access import (
    check_writable,
    primary_code,
    read_failure,
    remove_empty,
    unreadable_wal,
    write_failure,
)
from meddistill.costs import Cost, measure
from meddistill.errors import ArtifactError
from meddistill.utils import json_text

SCHEMA_VERSION = 5
# The oldest version a reader understands without migrating (version 2 only added `claims`,
# version 3 the cpu_s columns, read as NULL from older files).
READABLE_SINCE = 1
KINDS = ("buffer", "synthetic", "baseline")

# MIGRATIONS[v]: the statements that turn a version v-1 database into version v (v=1: create).
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE artifacts (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('buffer', 'synthetic', 'baseline')),
            dataset TEXT NOT NULL,
            method TEXT NOT NULL,
            ipc INTEGER,
            seed INTEGER,
            setting TEXT NOT NULL,
            config TEXT NOT NULL,
            path TEXT,
            parent TEXT,
            wall_s REAL,
            peak_mem_mb REAL,
            mem_kind TEXT,
            device TEXT,
            created TEXT NOT NULL,
            updated TEXT NOT NULL
        )""",
        "CREATE INDEX artifacts_cell ON artifacts (dataset, method, ipc)",
        "CREATE TABLE evals (id TEXT PRIMARY KEY, config TEXT NOT NULL)",
        """CREATE TABLE results (
            artifact_id TEXT NOT NULL REFERENCES artifacts (id) ON DELETE CASCADE,
            arch TEXT NOT NULL,
            eval_id TEXT NOT NULL REFERENCES evals (id),
            eval_seed INTEGER NOT NULL,
            net_index INTEGER NOT NULL,
            acc REAL NOT NULL,
            auc REAL,
            loss REAL,
            epochs INTEGER NOT NULL,
            lr REAL NOT NULL,
            wall_s REAL,
            peak_mem_mb REAL,
            mem_kind TEXT,
            device TEXT,
            created TEXT NOT NULL,
            PRIMARY KEY (artifact_id, arch, eval_id, eval_seed)
        )""",
        """CREATE TABLE grid_cells (
            grid TEXT NOT NULL,
            artifact_id TEXT NOT NULL REFERENCES artifacts (id) ON DELETE CASCADE,
            eval_id TEXT NOT NULL REFERENCES evals (id),
            PRIMARY KEY (grid, artifact_id, eval_id)
        )""",
    ),
    2: (
        """CREATE TABLE claims (
            artifact_id TEXT PRIMARY KEY,
            grid TEXT NOT NULL,
            label TEXT NOT NULL,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            started TEXT NOT NULL,
            claimed_at REAL NOT NULL,
            heartbeat REAL NOT NULL
        )""",
    ),
    3: (
        "ALTER TABLE artifacts ADD COLUMN cpu_s REAL",
        "ALTER TABLE results ADD COLUMN cpu_s REAL",
    ),
    4: (
        "ALTER TABLE results ADD COLUMN val_acc REAL",
        "ALTER TABLE results ADD COLUMN val_auc REAL",
    ),
    5: (
        """CREATE TABLE audits (
            artifact_id TEXT NOT NULL REFERENCES artifacts (id) ON DELETE CASCADE,
            audit_id TEXT NOT NULL,
            light TEXT NOT NULL CHECK (light IN ('green', 'amber', 'red')),
            images INTEGER,
            near_copies_pixel INTEGER,
            near_copies_features INTEGER,
            copies_8bit INTEGER,
            attack_auc REAL,
            attack_auc_lo REAL,
            attack_auc_hi REAL,
            attack_tpr REAL,
            attack_tpr_lo REAL,
            attack_tpr_hi REAL,
            lira_auc REAL,
            lira_auc_lo REAL,
            lira_auc_hi REAL,
            lira_tpr REAL,
            lira_tpr_lo REAL,
            lira_tpr_hi REAL,
            shadows INTEGER NOT NULL DEFAULT 0,
            path TEXT,
            config TEXT NOT NULL,
            wall_s REAL,
            created TEXT NOT NULL,
            PRIMARY KEY (artifact_id, audit_id)
        )""",
        """CREATE TABLE grid_audits (
            grid TEXT NOT NULL,
            artifact_id TEXT NOT NULL,
            audit_id TEXT NOT NULL,
            PRIMARY KEY (grid, artifact_id, audit_id),
            FOREIGN KEY (artifact_id, audit_id) REFERENCES audits (artifact_id, audit_id)
                ON DELETE CASCADE
        )""",
    ),
}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---------------------------------------------------------------------------------------------
# Cost of a stage
# ---------------------------------------------------------------------------------------------


# The one measuring function of the package (meddistill.costs), under the bench's old names.
Stage = Cost


def measure_stage(device: torch.device | str = "cpu") -> contextlib.AbstractContextManager[Cost]:
    """`meddistill.costs.measure` of an unnamed stage: wall, CPU time and peak memory."""
    return measure("stage", device)


# ---------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------


@dataclass
class Artifact:
    """A row of `artifacts` (path: absolute, or None)."""

    id: str
    kind: str
    dataset: str
    method: str
    ipc: int | None
    seed: int | None
    setting: str
    config: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    parent: str | None = None
    wall_s: float | None = None
    peak_mem_mb: float | None = None
    mem_kind: str | None = None
    device: str | None = None
    cpu_s: float | None = None
    created: str = ""
    updated: str = ""


@dataclass
class Result:
    """A row of `results`: one trained evaluation network."""

    artifact_id: str
    arch: str
    eval_id: str
    eval_seed: int
    net_index: int
    acc: float
    auc: float | None
    loss: float | None
    epochs: int
    lr: float
    wall_s: float | None = None
    peak_mem_mb: float | None = None
    mem_kind: str | None = None
    device: str | None = None
    cpu_s: float | None = None
    val_acc: float | None = None
    val_auc: float | None = None
    created: str = ""


@dataclass
class ResultRow(Result):
    """A result joined with what its artifact is (for tables)."""

    kind: str = ""
    dataset: str = ""
    method: str = ""
    ipc: int | None = None
    seed: int | None = None
    setting: str = ""


@dataclass
class AuditRow:
    """A row of `audits`: one privacy audit of a synthetic set (path: absolute, or None)."""

    artifact_id: str
    audit_id: str
    light: str
    images: int | None = None
    near_copies_pixel: int | None = None
    near_copies_features: int | None = None
    copies_8bit: int | None = None
    attack_auc: float | None = None
    attack_auc_lo: float | None = None
    attack_auc_hi: float | None = None
    attack_tpr: float | None = None
    attack_tpr_lo: float | None = None
    attack_tpr_hi: float | None = None
    lira_auc: float | None = None
    lira_auc_lo: float | None = None
    lira_auc_hi: float | None = None
    lira_tpr: float | None = None
    lira_tpr_lo: float | None = None
    lira_tpr_hi: float | None = None
    shadows: int = 0
    path: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    wall_s: float | None = None
    created: str = ""


@dataclass
class AuditedSet(AuditRow):
    """An audit joined with what its artifact is (for tables)."""

    dataset: str = ""
    method: str = ""
    ipc: int | None = None
    seed: int | None = None


@dataclass(frozen=True)
class Owner:
    """A process that claims work: its host, pid and start time (a reused pid differs in it)."""

    host: str
    pid: int
    started: str

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"


@dataclass
class Claim:
    """A row of `claims`: `owner` is working on artifact `artifact_id` (a cell of `grid`)."""

    artifact_id: str
    grid: str
    label: str
    owner: Owner
    claimed_at: float
    heartbeat: float


_ARTIFACT_COLS = tuple(Artifact.__dataclass_fields__)
_RESULT_COLS = tuple(Result.__dataclass_fields__)
_AUDIT_COLS = tuple(AuditRow.__dataclass_fields__)
_CLAIM_COLS = ("artifact_id", "grid", "label", "host", "pid", "started", "claimed_at", "heartbeat")


class ResultsDB:
    """The results database at `path`.

    create=True (writers: `bench`): made, or migrated to SCHEMA_VERSION, on open; a file that
    cannot be written is refused with the operating system's reason (disk full, permission,
    read-only file system, a folder in the way). create=False (readers: `table`, `report`): the
    file must exist; it is opened read-only and never changed.
    """

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        self.readonly = not create
        self._tidy = False
        self._columns: dict[str, set[str]] = {}
        if self.path.exists() and not self.path.is_file():
            raise ArtifactError(f"results database {self.path} is not a file; give a file path")
        if not create and not self.path.is_file():
            raise ArtifactError(
                f"no results database at {self.path}; run `meddistill bench GRID.yaml` first, or "
                "give its path with --db"
            )
        made = check_writable(self.path) if create else []
        try:
            if create:
                self._open_writer()
            else:
                self._check_readable(self._open_reader())
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            fail = write_failure if create else read_failure
            error = fail(self.path, exc)
            remove_empty(made)
            raise error from exc
        except ArtifactError:
            self._close_quietly()
            remove_empty(made)
            raise

    # Opening and migrations -----------------------------------------------------------------
    def _open_writer(self) -> None:
        self._conn = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None)
        self._conn.execute("PRAGMA busy_timeout = 60000")
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._open()

    def _open_reader(self) -> int:
        """Connect read-only and return the schema version.

        A WAL database needs its -shm file even to be read; where it cannot be created (a
        read-only folder or mount) the file is read as immutable, which is exact only while no
        -wal file holds changes not yet merged into it (then this refuses, saying so).
        """
        wal, shm = (Path(f"{self.path}{end}") for end in ("-wal", "-shm"))
        self._tidy = not wal.exists() and not shm.exists()
        try:
            self._conn = self._connect_ro("mode=ro")
            return self._read_version()
        except sqlite3.OperationalError as exc:
            if primary_code(exc) not in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN):
                raise
        self._tidy = False  # nothing could be created there
        self._close_quietly()
        if wal.is_file() and wal.stat().st_size > 0:
            raise unreadable_wal(self.path)
        self._conn = self._connect_ro("mode=ro&immutable=1")
        return self._read_version()

    def _connect_ro(self, query: str) -> sqlite3.Connection:
        uri = f"{self.path.resolve().as_uri()}?{query}"
        conn = sqlite3.connect(uri, uri=True, timeout=60.0, isolation_level=None)
        conn.execute("PRAGMA query_only = ON")
        return conn

    def _check_readable(self, version: int) -> None:
        """Refuse versions a reader cannot read as they are (readers never migrate)."""
        if version == 0:
            raise ArtifactError(
                f"{self.path} is an empty SQLite file, not a results database yet; run "
                "`meddistill bench GRID.yaml` with it as --db first, or give another --db path"
            )
        if version > SCHEMA_VERSION:
            raise self._newer(version)
        if version < READABLE_SINCE:
            raise ArtifactError(
                f"results database {self.path} has schema version {version}, older than this "
                f"meddistill reads ({READABLE_SINCE}..{SCHEMA_VERSION}); migrate it by running "
                "`meddistill bench GRID.yaml --db PATH` once with write access, or read it with "
                "the meddistill that wrote it"
            )

    def _newer(self, version: int) -> ArtifactError:
        return ArtifactError(
            f"results database {self.path} has schema version {version}, newer than this "
            f"meddistill {__version__} understands ({SCHEMA_VERSION}); upgrade meddistill "
            "or use another --db"
        )

    def _open(self) -> None:
        with self._tx():
            version = self._read_version()
            if version == SCHEMA_VERSION:
                return
            if version > SCHEMA_VERSION:
                raise self._newer(version)
            missing = [v for v in range(version + 1, SCHEMA_VERSION + 1) if v not in MIGRATIONS]
            if version < 0 or missing:
                raise ArtifactError(
                    f"results database {self.path} has schema version {version}, which this "
                    f"meddistill cannot migrate to {SCHEMA_VERSION}; move it away and re-run the "
                    "grid (buffers and synthetic sets on disk are reused)"
                )
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[v]:
                    self._conn.execute(statement)
            meta = {"schema_version": str(SCHEMA_VERSION), "meddistill_version": __version__}
            if version == 0:
                meta["created"] = _now()
            for key, value in meta.items():
                self._conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )

    def _read_version(self) -> int:
        """0 for an empty file; the stored version otherwise; ArtifactError for a foreign file."""
        tables = {
            r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if not tables:
            return 0
        if "meta" not in tables:
            raise ArtifactError(
                f"{self.path} is an SQLite database but not a meddistill results database (no "
                "meta table); give another --db path"
            )
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        text = None if row is None else row[0]
        try:
            return int(text)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ArtifactError(
                f"results database {self.path} has an unreadable schema version {text!r}; move "
                "it away and re-run the grid"
            ) from None

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: concurrent writers wait instead of failing);
        a failed write (disk full, read-only, locked too long) becomes a one-line ArtifactError."""
        if self.readonly:
            raise ArtifactError(
                f"results database {self.path} is open read-only (create=False); open it with "
                "ResultsDB(path) to write"
            )
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if self._conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
            raise write_failure(self.path, exc) from exc

    def schema_version(self) -> int:
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close; a reader that made the -wal and -shm files removes them again (see _tidy_up)."""
        self._conn.close()
        if self._tidy:
            self._tidy_up()

    def _tidy_up(self) -> None:
        """A read-only connection leaves the -wal and -shm files it had to create; a brief
        read-write connection, closed last, lets SQLite remove them (it keeps them while any
        other process uses the database). Best effort: without write access they stay."""
        self._tidy = False
        if not any(Path(f"{self.path}{end}").exists() for end in ("-wal", "-shm")):
            return
        with contextlib.suppress(sqlite3.Error, OSError):
            conn = sqlite3.connect(str(self.path), timeout=1.0)
            try:
                conn.execute("SELECT 1 FROM sqlite_master").fetchall()
            finally:
                conn.close()

    def _close_quietly(self) -> None:
        """Close after a failed open (a refused reader leaves no -wal or -shm file either)."""
        with contextlib.suppress(Exception):
            self._conn.close()
        if self._tidy:
            self._tidy_up()

    def __enter__(self) -> ResultsDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Paths ------------------------------------------------------------------------------------
    def _store_path(self, path: str | Path | None) -> str | None:
        """Relative to the database's folder when inside it, so a runs folder can be moved."""
        if path is None:
            return None
        p = Path(path).resolve()
        try:
            return p.relative_to(self.path.parent.resolve()).as_posix()
        except ValueError:
            return str(p)

    def _load_path(self, text: str | None) -> str | None:
        if text is None:
            return None
        p = Path(text)
        return str(p if p.is_absolute() else (self.path.parent / p).resolve())

    def _select(self, table: str, cols: Sequence[str], alias: str = "") -> str:
        """The SELECT list of `cols`: NULL for a column an older schema lacks (cpu_s before
        version 3), so a reader, which never migrates, reads older files too."""
        if table not in self._columns:
            info = self._conn.execute(f"PRAGMA table_info({table})").fetchall()
            self._columns[table] = {row[1] for row in info}
        have, prefix = self._columns[table], f"{alias}." if alias else ""
        return ", ".join(f"{prefix}{c}" if c in have else f"NULL AS {c}" for c in cols)

    # Artifacts --------------------------------------------------------------------------------
    def add_artifact(self, art: Artifact) -> None:
        """Insert or replace (by id) an artifact; `created` keeps its first value."""
        if art.kind not in KINDS:
            raise ArtifactError(f"artifact kind {art.kind!r} is not one of {', '.join(KINDS)}")
        now = _now()
        values = {
            **{c: getattr(art, c) for c in _ARTIFACT_COLS},
            "config": json_text(art.config, sort_keys=True),
            "path": self._store_path(art.path),
            "created": art.created or now,
            "updated": now,
        }
        cols = ", ".join(_ARTIFACT_COLS)
        marks = ", ".join("?" for _ in _ARTIFACT_COLS)
        updates = ", ".join(
            f"{c} = excluded.{c}" for c in _ARTIFACT_COLS if c not in ("id", "created")
        )
        with self._tx():
            self._conn.execute(
                f"INSERT INTO artifacts ({cols}) VALUES ({marks}) "
                f"ON CONFLICT (id) DO UPDATE SET {updates}",
                [values[c] for c in _ARTIFACT_COLS],
            )

    def artifact(self, artifact_id: str) -> Artifact | None:
        cols = self._select("artifacts", _ARTIFACT_COLS)
        row = self._conn.execute(
            f"SELECT {cols} FROM artifacts WHERE id = ?", (artifact_id,)
        ).fetchone()
        return None if row is None else self._artifact(row)

    def artifacts(
        self,
        *,
        kind: str | None = None,
        dataset: str | None = None,
        method: str | None = None,
    ) -> list[Artifact]:
        where, args = _where({"kind": kind, "dataset": dataset, "method": method})
        cols = self._select("artifacts", _ARTIFACT_COLS)
        rows = self._conn.execute(
            f"SELECT {cols} FROM artifacts{where} ORDER BY created, id", args
        ).fetchall()
        return [self._artifact(r) for r in rows]

    def _artifact(self, row: Sequence[Any]) -> Artifact:
        data = dict(zip(_ARTIFACT_COLS, row, strict=True))
        data["config"] = json.loads(data["config"])
        data["path"] = self._load_path(data["path"])
        return Artifact(**data)

    # Evaluation settings and results -----------------------------------------------------------
    def add_eval(self, eval_id: str, config: dict[str, Any]) -> None:
        """Record an evaluation setting (a no-op when the id is known)."""
        with self._tx():
            self._conn.execute(
                "INSERT INTO evals (id, config) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
                (eval_id, json_text(config, sort_keys=True)),
            )

    def eval_config(self, eval_id: str) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT config FROM evals WHERE id = ?", (eval_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def add_result(self, res: Result) -> None:
        """Insert or replace the row of (artifact_id, arch, eval_id, eval_seed)."""
        values = {c: getattr(res, c) for c in _RESULT_COLS}
        values["created"] = res.created or _now()
        cols = ", ".join(_RESULT_COLS)
        marks = ", ".join("?" for _ in _RESULT_COLS)
        key = ("artifact_id", "arch", "eval_id", "eval_seed")
        updates = ", ".join(f"{c} = excluded.{c}" for c in _RESULT_COLS if c not in key)
        try:
            with self._tx():
                self._conn.execute(
                    f"INSERT INTO results ({cols}) VALUES ({marks}) "
                    f"ON CONFLICT (artifact_id, arch, eval_id, eval_seed) DO UPDATE SET {updates}",
                    [values[c] for c in _RESULT_COLS],
                )
        except sqlite3.IntegrityError as exc:
            raise ArtifactError(
                f"result for artifact {res.artifact_id} / eval {res.eval_id} refused ({exc}); "
                "record the artifact (add_artifact) and the evaluation setting (add_eval) first"
            ) from exc

    def has_result(self, artifact_id: str, arch: str, eval_id: str, eval_seed: int) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM results WHERE artifact_id = ? AND arch = ? AND eval_id = ? "
            "AND eval_seed = ?",
            (artifact_id, arch, eval_id, int(eval_seed)),
        ).fetchone()
        return row is not None

    def results(
        self,
        *,
        datasets: Sequence[str] | None = None,
        methods: Sequence[str] | None = None,
        ipcs: Sequence[int] | None = None,
        archs: Sequence[str] | None = None,
        seeds: Sequence[int] | None = None,
        eval_id: str | None = None,
        grid: str | None = None,
        artifact_id: str | None = None,
    ) -> list[ResultRow]:
        """Result rows joined with their artifact, filtered; None means no filter.

        `ipcs` keeps rows whose artifact has no IPC (full data) too: they belong to every IPC.
        `grid` keeps the (artifact, evaluation setting) pairs that grid recorded.
        """
        clauses: list[str] = []
        args: list[Any] = []
        for column, values in (
            ("a.dataset", datasets),
            ("a.method", methods),
            ("r.arch", archs),
            ("a.seed", seeds),
        ):
            if values is not None:
                clauses.append(f"{column} IN ({', '.join('?' for _ in values)})")
                args.extend(values)
        if ipcs is not None:
            clauses.append(f"(a.ipc IS NULL OR a.ipc IN ({', '.join('?' for _ in ipcs)}))")
            args.extend(int(i) for i in ipcs)
        if eval_id is not None:
            clauses.append("r.eval_id = ?")
            args.append(eval_id)
        if artifact_id is not None:
            clauses.append("r.artifact_id = ?")
            args.append(artifact_id)
        if grid is not None:
            clauses.append(
                "EXISTS (SELECT 1 FROM grid_cells g WHERE g.grid = ? AND "
                "g.artifact_id = r.artifact_id AND g.eval_id = r.eval_id)"
            )
            args.append(grid)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        cols = self._select("results", _RESULT_COLS, "r")
        rows = self._conn.execute(
            f"SELECT {cols}, a.kind, a.dataset, a.method, a.ipc, a.seed, a.setting "
            f"FROM results r JOIN artifacts a ON a.id = r.artifact_id{where} "
            "ORDER BY a.dataset, a.method, a.ipc, a.seed, r.arch, r.eval_id, r.net_index, r.eval_seed",
            args,
        ).fetchall()
        names = (*_RESULT_COLS, "kind", "dataset", "method", "ipc", "seed", "setting")
        return [ResultRow(**dict(zip(names, row, strict=True))) for row in rows]

    # Grids ------------------------------------------------------------------------------------
    def add_grid_cell(self, grid: str, artifact_id: str, eval_id: str) -> None:
        """Remember that `grid` uses this artifact with this evaluation setting."""
        with self._tx():
            self._conn.execute(
                "INSERT INTO grid_cells (grid, artifact_id, eval_id) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (grid, artifact_id, eval_id),
            )

    def grids(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT DISTINCT grid FROM grid_cells ORDER BY 1")]

    # Audits (version 5) -------------------------------------------------------------------------
    def _has_table(self, name: str) -> bool:
        """Whether the file has table `name` (a reader of an older version may lack it)."""
        row = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return row is not None

    def add_audit(self, row: AuditRow, grid: str | None = None) -> None:
        """Insert or replace the audit (artifact_id, audit_id); `grid`: a grid that asked for it."""
        values = {c: getattr(row, c) for c in _AUDIT_COLS}
        values.update(config=json_text(row.config, sort_keys=True), path=self._store_path(row.path),
                      created=row.created or _now())  # fmt: skip
        cols, marks = ", ".join(_AUDIT_COLS), ", ".join("?" for _ in _AUDIT_COLS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in _AUDIT_COLS[2:])
        with self._tx():
            self._conn.execute(
                f"INSERT INTO audits ({cols}) VALUES ({marks}) "
                f"ON CONFLICT (artifact_id, audit_id) DO UPDATE SET {updates}",
                [values[c] for c in _AUDIT_COLS],
            )
        if grid is not None:
            self.add_grid_audit(grid, row.artifact_id, row.audit_id)

    def add_grid_audit(self, grid: str, artifact_id: str, audit_id: str) -> None:
        """Remember that `grid` asked for this audit."""
        with self._tx():
            self._conn.execute(
                "INSERT INTO grid_audits (grid, artifact_id, audit_id) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (grid, artifact_id, audit_id),
            )

    def audit(self, artifact_id: str, audit_id: str) -> AuditRow | None:
        """The recorded audit, or None (also for a database from before audits)."""
        if not self._has_table("audits"):
            return None
        row = self._conn.execute(
            f"SELECT {', '.join(_AUDIT_COLS)} FROM audits WHERE artifact_id = ? AND audit_id = ?",
            (artifact_id, audit_id),
        ).fetchone()
        return None if row is None else AuditRow(**self._audit_values(row))

    def audits(self, grid: str | None = None) -> list[AuditedSet]:
        """Every audit joined with its artifact (`grid`: those the grid asked for), ordered by
        dataset, method, IPC and seed; [] for a database from before audits."""
        if not self._has_table("audits"):
            return []
        cols = ", ".join(f"u.{c}" for c in _AUDIT_COLS)
        where, args = "", []
        if grid is not None:
            where = (" WHERE EXISTS (SELECT 1 FROM grid_audits g WHERE g.grid = ? AND "
                     "g.artifact_id = u.artifact_id AND g.audit_id = u.audit_id)")  # fmt: skip
            args.append(grid)
        rows = self._conn.execute(
            f"SELECT {cols}, a.dataset, a.method, a.ipc, a.seed FROM audits u JOIN artifacts a "
            f"ON a.id = u.artifact_id{where} ORDER BY a.dataset, a.method, a.ipc, a.seed, "
            "u.audit_id",
            args,
        ).fetchall()
        n, joined = len(_AUDIT_COLS), ("dataset", "method", "ipc", "seed")
        return [
            AuditedSet(**self._audit_values(r[:n]), **dict(zip(joined, r[n:], strict=True)))
            for r in rows
        ]

    def _audit_values(self, row: Sequence[Any]) -> dict[str, Any]:
        data = dict(zip(_AUDIT_COLS, row, strict=True))
        data["config"] = json.loads(data["config"])
        data["path"] = self._load_path(data["path"])
        return data

    # Claims (bench/claims.py decides who may take over) -----------------------------------------
    def take_claim(
        self, claim: Claim, replaceable: Callable[[Claim], bool]
    ) -> tuple[bool, Claim | None]:
        """Claim claim.artifact_id for claim.owner in one IMMEDIATE transaction, so two
        processes never both get it. Returns (taken, other): other is the claim of another
        owner found there, refused (taken False) or replaced because `replaceable` said so."""
        with self._tx():
            held = self.claim(claim.artifact_id)
            if held is not None and held.owner == claim.owner:
                held = None  # ours already (a re-claim): keep going
            if held is not None and not replaceable(held):
                return False, held
            cols = ", ".join(_CLAIM_COLS)
            self._conn.execute(
                f"INSERT OR REPLACE INTO claims ({cols}) VALUES ({', '.join('?' for _ in _CLAIM_COLS)})",
                _claim_values(claim),
            )
        return True, held

    def release_claim(self, artifact_id: str, owner: Owner) -> None:
        """Drop the claim if `owner` still holds it (one taken over by another stays)."""
        with self._tx():
            self._conn.execute(
                "DELETE FROM claims WHERE artifact_id = ? AND host = ? AND pid = ? AND started = ?",
                (artifact_id, owner.host, owner.pid, owner.started),
            )

    def touch_claim(self, artifact_id: str, owner: Owner, now: float) -> None:
        """Record a sign of life of the owner (the stale limit counts from the last one)."""
        with self._tx():
            self._conn.execute(
                "UPDATE claims SET heartbeat = ? WHERE artifact_id = ? AND host = ? AND pid = ? "
                "AND started = ?",
                (now, artifact_id, owner.host, owner.pid, owner.started),
            )

    def claim(self, artifact_id: str) -> Claim | None:
        cols = ", ".join(_CLAIM_COLS)
        row = self._conn.execute(
            f"SELECT {cols} FROM claims WHERE artifact_id = ?", (artifact_id,)
        ).fetchone()
        return None if row is None else _claim_row(row)

    def claims(self) -> list[Claim]:
        cols = ", ".join(_CLAIM_COLS)
        rows = self._conn.execute(f"SELECT {cols} FROM claims ORDER BY claimed_at, artifact_id")
        return [_claim_row(r) for r in rows.fetchall()]

    def count(self, table: str) -> int:
        if table not in ("artifacts", "evals", "results", "grid_cells", "claims", "audits",
                         "grid_audits"):  # fmt: skip
            raise ArtifactError(f"unknown table {table!r}")
        return int(self._conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def _claim_values(claim: Claim) -> list[Any]:
    owner = claim.owner
    return [
        claim.artifact_id, claim.grid, claim.label, owner.host, owner.pid, owner.started,
        claim.claimed_at, claim.heartbeat,
    ]  # fmt: skip


def _claim_row(row: Sequence[Any]) -> Claim:
    artifact_id, grid, label, host, pid, started, claimed_at, heartbeat = row
    return Claim(artifact_id, grid, label, Owner(host, int(pid), started), claimed_at, heartbeat)


def _where(filters: dict[str, Any]) -> tuple[str, list[Any]]:
    items = [(k, v) for k, v in filters.items() if v is not None]
    if not items:
        return "", []
    return " WHERE " + " AND ".join(f"{k} = ?" for k, _ in items), [v for _, v in items]
