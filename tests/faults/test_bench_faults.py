"""Issue 9, benchmark grids: concurrent `bench` processes share a grid's cells through claims in
the results database (no cell done twice), and `table` / `report` read a results database they
cannot write (read-only file, folder or mount), while writers name the real reason they cannot.

Tests run as root here, which ignores file permissions: read-only cases use a real read-only
bind mount (a private mount namespace, `unshare -m`) or `chattr +i` where the machine allows,
chmod as any other user, and monkeypatched OS / SQLite failures for what cannot be made real.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from faulthelpers import REPO, changed, hostile, run_cli, snapshot
from imagefolders import image_folder

from meddistill.bench import access, claims
from meddistill.bench import db as dbmod
from meddistill.bench import run as runmod
from meddistill.bench import runners as runnersmod
from meddistill.bench.db import Artifact, Claim, Owner, Result, ResultsDB
from meddistill.bench.plan import Cell, plan
from meddistill.bench.run import run_grid
from meddistill.bench.runners import Produced, RunContext, register_runner
from meddistill.bench.spec import grid_from_dict, load_grid
from meddistill.cli import main
from meddistill.data.dataset import MedicalDataset, Normalization, Split
from meddistill.data.synthetic import SyntheticSet
from meddistill.errors import ArtifactError
from meddistill.training.evaluate import NetResult

HOST = socket.gethostname()

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def results_db(path: Path) -> Path:
    """A small results database of one grid (two methods, two seeds), written directly."""
    with ResultsDB(path) as db:
        db.add_eval("ev", {"epochs": 3})
        for method in ("random", "mtt"):
            for seed in (0, 1):
                aid = f"{method}{seed}"
                kind = "baseline" if method == "random" else "synthetic"
                db.add_artifact(Artifact(aid, kind, "toy", method, 1, seed, f"s-{method}"))
                db.add_grid_cell("g", aid, "ev")
                db.add_result(
                    Result(aid, "convnet", "ev", 10 + seed, 0, 0.5 + seed / 10, 0.6, 1.0, 3, 0.01)
                )
    return path


def tiny_grid_file(root: Path, **extra: Any) -> Path:
    """A real grid of random-subset cells on an 8x8 image folder: seconds to run."""
    ds = image_folder(root / "ds", {"a": 4, "b": 4, "c": 4})
    config = {
        "dataset": {"name": f"folder:{ds.resolve()}"},
        "model": {"name": "convnet", "depth": 1, "width": 4},
        "eval": {"num_nets": 1, "epochs": 2, "batch_size": 16},
    }
    grid = {
        "name": "tiny",
        "datasets": [{"name": "toy", "config": config}],
        "methods": [],
        "baselines": ["random"],
        "ipcs": [1, 2],
        "seeds": [0, 1, 2],
        "eval_archs": ["convnet"],
        "device": "cpu",
        **extra,
    }
    path = root / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def set_version(path: Path, value: str) -> None:
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (value,))
    con.commit()
    con.close()


def sqlite_error(code: int, text: str) -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError(text)
    exc.sqlite_errorcode = code  # type: ignore[attr-defined]
    return exc


@contextlib.contextmanager
def read_only(*paths: Path) -> Iterator[None]:
    """Make files and folders unwritable for this process: chmod for a normal user; for root
    (which ignores modes) the immutable attribute, or skip where chattr +i is refused."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in paths}
        for p in paths:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    if shutil.which("chattr") is None:
        pytest.skip("root ignores permissions and chattr is missing: cannot make a read-only file")
    done: list[Path] = []
    try:
        for p in paths:
            if subprocess.run(["chattr", "+i", str(p)], capture_output=True).returncode != 0:
                pytest.skip("root ignores permissions and chattr +i is refused on this file system")
            done.append(p)
        yield
    finally:
        for p in done:
            subprocess.run(["chattr", "-i", str(p)], capture_output=True)


# ---------------------------------------------------------------------------------------------
# (b) Readers never write; writers say why they cannot
# ---------------------------------------------------------------------------------------------


def test_readers_open_read_only_and_leave_the_folder_as_it_was(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db_path = results_db(workdir / "runs" / "results.sqlite")
    before = snapshot(workdir)
    calls: list[tuple[str, bool]] = []
    connect = sqlite3.connect

    def spy(database: str, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        calls.append((str(database), bool(kwargs.get("uri"))))
        return connect(database, *args, **kwargs)

    monkeypatch.setattr(dbmod.sqlite3, "connect", spy)
    assert main(["table", "--db", str(db_path)]) == 0
    assert "| Random |" in capsys.readouterr().out
    reading, uri = calls[0]
    assert uri and reading.startswith("file:") and reading.endswith("?mode=ro"), calls
    # no journal, -wal or -shm file is left behind, the database file is untouched
    assert changed(before, snapshot(workdir)) == []
    with ResultsDB(db_path, create=False) as db:
        assert db.readonly and db.count("results") == 4
        with pytest.raises(ArtifactError, match="open read-only"):
            db.add_eval("other", {})


def test_table_reads_and_others_refuse_a_read_only_file_in_a_read_only_folder(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = workdir / "runs"
    db_path = results_db(runs / "results.sqlite")
    grid = tiny_grid_file(workdir)
    with read_only(db_path, runs):
        assert main(["table", "--db", str(db_path), "--grid", "g"]) == 0
        assert "| Random |" in capsys.readouterr().out
        msg = hostile(capsys, workdir, ["report", str(runs), "--no-figures"])
        assert msg.startswith(f"cannot write the report into {runs}: ") and "copy" in msg
        msg = hostile(capsys, workdir, ["bench", str(grid), "--db", str(db_path)])
        assert msg.startswith(f"cannot write results database {db_path}: ")
        assert re.search("permission denied|not permitted", msg) and "--db" in msg
    assert sorted(p.name for p in runs.iterdir()) == ["results.sqlite"]


_RO_SCRIPT = """
import contextlib, io, json, sys
from meddistill.cli import main
out = {}
for name, argv in json.loads(sys.argv[1]).items():
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        code = main(argv)
    out[name] = [code, o.getvalue(), e.getvalue()]
print(json.dumps(out))
"""


def test_a_read_only_mount_is_read_by_table_and_refused_with_its_reason(workdir: Path) -> None:
    """A real read-only bind mount, in a private mount namespace of the child process."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is missing: no read-only mount to test on")
    runs = workdir / "runs"
    db_path = results_db(runs / "results.sqlite")
    grid = str(tiny_grid_file(workdir))
    calls = {
        "table": ["table", "--db", str(db_path)],
        "report": ["report", str(runs), "--no-figures"],
        "bench": ["bench", grid, "--db", str(db_path), "--no-progress"],
        "plan": ["bench", grid, "--db", str(db_path), "--plan"],
    }
    mount = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" || exit 77'
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", f'{mount}; exec "$1" -c "$2" "$3"', str(runs),
         sys.executable, _RO_SCRIPT, json.dumps(calls)],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if proc.returncode == 77 or "unshare" in proc.stderr:
        pytest.skip(f"cannot make a read-only mount here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["table"][0] == 0 and "| Random |" in out["table"][1], out["table"]
    assert out["plan"][0] == 0 and "networks to train" in out["plan"][1], out["plan"]
    for name in ("report", "bench"):
        code, _, err = out[name]
        lines = err.strip().splitlines()
        assert code != 0 and len(lines) == 1 and "Traceback" not in err, err
        assert re.search("read-only file system|file system is read-only", lines[0]), lines[0]
    assert out["bench"][2].startswith(
        f"meddistill bench: error: cannot write results database {db_path}"
    )
    assert sorted(p.name for p in runs.iterdir()) == ["results.sqlite"]


def test_schema_versions_on_a_reader(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db_path = results_db(workdir / "r.sqlite")
    argv = ["table", "--db", str(db_path)]
    # version 1 (before claims, cpu_s, val_* and audits) is read as it is: no migration, not a
    # byte changed
    con = sqlite3.connect(db_path)
    for table in ("grid_audits", "audits", "claims"):
        con.execute(f"DROP TABLE {table}")
    for table in ("artifacts", "results"):
        con.execute(f"ALTER TABLE {table} DROP COLUMN cpu_s")
    for column in ("val_acc", "val_auc"):
        con.execute(f"ALTER TABLE results DROP COLUMN {column}")
    con.commit()
    con.close()
    set_version(db_path, "1")
    before = snapshot(workdir)
    assert main(argv) == 0 and "| Random |" in capsys.readouterr().out
    assert changed(before, snapshot(workdir)) == []
    monkeypatch.setattr(dbmod, "READABLE_SINCE", 2)  # as if version 1 could no longer be read
    hostile(capsys, workdir, argv, contains=("schema version 1, older than", "migrate it"))
    monkeypatch.undo()
    # a writer migrates it, keeping the data
    with ResultsDB(db_path) as db:
        assert db.schema_version() == dbmod.SCHEMA_VERSION == 5
        assert db.count("results") == 4 and db.count("claims") == 0
        assert all(r.cpu_s is None and r.val_acc is None for r in db.results())
    set_version(db_path, "99")
    hostile(capsys, workdir, argv, contains=("schema version 99, newer", "upgrade meddistill"))
    empty = workdir / "empty.sqlite"
    empty.write_bytes(b"")
    hostile(capsys, workdir, ["table", "--db", str(empty)], contains=("empty SQLite file",))


@pytest.mark.parametrize("case", ["full", "denied", "rofs", "folder-probe", "dir", "file"])
def test_a_writer_names_why_it_cannot_write(
    case: str,
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    grid = tiny_grid_file(workdir)
    runs = workdir / "runs"
    db_path = runs / "results.sqlite"
    real_open, real_mkstemp = os.open, access.tempfile.mkstemp

    def refuse_file(err: int):  # noqa: ANN202
        def fake(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if Path(path) == db_path and flags & os.O_RDWR:
                raise OSError(err, os.strerror(err), str(path))
            return real_open(path, flags, *args, **kwargs)

        return fake

    def no_room(*args: Any, **kwargs: Any) -> Any:
        if Path(kwargs.get("dir", "")) == runs:
            raise PermissionError(errno.EACCES, "Permission denied", str(runs / ".probe"))
        return real_mkstemp(*args, **kwargs)

    expect: tuple[str, ...]
    if case == "full":  # SQLite's own report of a full disk, while it creates the schema

        def full(*args: Any, **kwargs: Any) -> Any:
            raise sqlite_error(sqlite3.SQLITE_FULL, "database or disk is full")

        monkeypatch.setattr(dbmod.sqlite3, "connect", full)
        expect = ("the disk is full", "free space")
    elif case in ("denied", "rofs"):
        results_db(db_path)
        err = errno.EACCES if case == "denied" else errno.EROFS
        monkeypatch.setattr(access.os, "open", refuse_file(err))
        expect = ("permission denied",) if case == "denied" else ("file system is read-only",)
    elif case == "folder-probe":  # SQLite cannot open: the folder refuses the -wal file

        def cantopen(*args: Any, **kwargs: Any) -> Any:
            raise sqlite_error(sqlite3.SQLITE_CANTOPEN, "unable to open database file")

        runs.mkdir()
        monkeypatch.setattr(dbmod.sqlite3, "connect", cantopen)
        monkeypatch.setattr(access.tempfile, "mkstemp", no_room)
        expect = ("permission denied", f"(at {runs})")
    elif case == "dir":
        db_path.mkdir(parents=True)
        expect = ("is not a file",)
    else:
        runs.write_text("a file where the runs folder should be")
        expect = ("a file is in the way of a folder", f"(at {runs})")
    msg = hostile(capsys, workdir, ["bench", str(grid), "--db", str(db_path)], contains=expect)
    assert str(db_path) in msg and ("--db" in msg or "file path" in msg)


def test_a_full_disk_mid_run_is_one_line_and_probe_names_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = ResultsDB(tmp_path / "r.sqlite")

    class FullDisk:
        """The connection, with every INSERT failing as on a full disk."""

        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def __getattr__(self, name: str) -> Any:
            return getattr(self.conn, name)

        def execute(self, sql: str, *args: Any) -> Any:
            if sql.startswith("INSERT"):
                raise sqlite_error(sqlite3.SQLITE_FULL, "database or disk is full")
            return self.conn.execute(sql, *args)

    real = db._conn
    db._conn = FullDisk(real)  # type: ignore[assignment]
    with pytest.raises(ArtifactError, match=r"r\.sqlite: the disk is full; free space"):
        db.add_eval("ev", {})
    assert not real.in_transaction  # rolled back, the connection still usable
    db._conn = real
    db.add_eval("ev", {})
    db.close()

    def enospc(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(access.os, "write", enospc)
    err = access.probe_folder(tmp_path)
    monkeypatch.undo()
    assert err is not None and err.errno == errno.ENOSPC and err.filename == str(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["r.sqlite"]  # the probe file is gone


# ---------------------------------------------------------------------------------------------
# (a) Claims
# ---------------------------------------------------------------------------------------------


def _start(pid: int) -> str:
    stat = claims._proc_stat(pid)
    if stat is None:
        pytest.skip("no /proc: process start times cannot be read here")
    return stat[1]


def _claim(owner: Owner, aid: str = "a1", age_s: float = 0.0, label: str = "a cell") -> Claim:
    now = time.time() - age_s
    return Claim(aid, "g", label, owner, now, now)


def test_claim_logic(tmp_path: Path) -> None:
    me = claims.current_owner()
    parent = Owner(HOST, os.getppid(), _start(os.getppid()))  # alive, not us
    child = subprocess.Popen(["true"])
    child.wait()
    dead = Owner(HOST, child.pid, "1")
    reused = Owner(HOST, os.getppid(), "0")  # a live pid, but started at another time
    with ResultsDB(tmp_path / "r.sqlite") as db:
        take = claims.take
        assert take(db, "a1", grid="g", label="x", owner=me) == (True, None)
        assert take(db, "a1", grid="g", label="x", owner=me) == (True, None)  # ours: again
        assert take(db, "a1", grid="g", label="x", owner=parent)[0] is False
        claims.release(db, "a1", parent)  # not its claim: stays
        assert db.claim("a1").owner == me  # type: ignore[union-attr]
        claims.release(db, "a1", me)
        assert db.count("claims") == 0
        # a live owner keeps its claim; a dead or reused pid, or a silent other host, loses it
        for holder, kept in (
            (parent, True),
            (dead, False),
            (reused, False),
            (Owner("elsewhere", 1, "1"), True),
        ):
            db.take_claim(_claim(holder), lambda c: False)
            taken, other = take(db, "a1", grid="g", label="x", owner=me)
            assert taken is not kept and other is not None and other.owner == holder
            claims.release(db, "a1", me)
            db.release_claim("a1", holder)
        stale = _claim(Owner("elsewhere", 1, "1"), age_s=claims.STALE_CLAIM_S + 60)
        db.take_claim(stale, lambda c: False)
        assert take(db, "a1", grid="g", label="x", owner=me)[0] is True
        before = db.claim("a1").heartbeat  # type: ignore[union-attr]
        time.sleep(0.01)
        claims.heartbeat(db, "a1", me)
        assert db.claim("a1").heartbeat > before  # type: ignore[union-attr]
    zombie = subprocess.Popen(["true"])  # exited but not waited for: a zombie
    for _ in range(500):
        if (claims._proc_stat(zombie.pid) or ("Z",))[0] == "Z":
            break
        time.sleep(0.01)
    assert not claims.pid_alive(zombie.pid, _start(zombie.pid))
    zombie.wait()
    assert claims.pid_alive(os.getpid(), me.started)


# In-process grids with a fake method and fake networks (no training)

TOY = MedicalDataset(
    "toy",
    {"train": Split(torch.zeros(12, 1, 8, 8), torch.arange(12) % 3),
     "test": Split(torch.zeros(6, 1, 8, 8), torch.arange(6) % 3)},
    ["a", "b", "c"], Normalization((0.0,), (1.0,)), source_id="toy-src",
)  # fmt: skip


class Fakes:
    """A method 'fake' that writes a synthetic set (holding a claim on a shared artifact, as a
    trajectory method holds its expert buffer), and networks that only count their calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.trained: list[str] = []
        self.runs = 0
        self.free_after: int | None = None  # release the foreign shared claim at that run
        self.fail = False
        monkeypatch.setattr(runnersmod, "_RUNNERS", {})
        monkeypatch.setattr(RunContext, "dataset", lambda ctx, cfg: TOY)
        monkeypatch.setattr(runmod, "evaluate_one_network", self.evaluate)
        register_runner("fake", self.run, lambda m, d: {"dataset": d["dataset"], "ipc": 1})

    def run(self, cell: Cell, ctx: RunContext) -> Produced:
        self.runs += 1
        if self.free_after is not None and self.runs >= self.free_after:
            ctx.db._conn.execute("DELETE FROM claims WHERE artifact_id = 'shared'")
        with claims.holding(
            ctx.db, "shared", grid=ctx.grid, label="shared buffer", owner=ctx.owner
        ):
            syn = SyntheticSet(
                images=torch.zeros(3, 1, 8, 8), labels=torch.arange(3),
                normalization=TOY.normalization, class_names=TOY.class_names,
                dataset="toy", source_id="toy-src", syn_lr=0.0625,
            )  # fmt: skip
            return Produced(path=str(syn.save(ctx.runs_root / "fake" / cell.artifact_id)))

    def evaluate(self, spec, dataset, images, labels, train_cfg, *, index, net_seed, **_):  # noqa: ANN001, ANN003, ANN202
        if self.fail:
            raise RuntimeError("a network failed")
        self.trained.append(spec.name)
        return NetResult(index, net_seed, acc=0.5, auc=0.5, loss=1.0, train_loss=0.0)


def fake_grid(root: Path, **extra: Any) -> Any:
    (root / "toy.yaml").write_text(yaml.safe_dump({
        "dataset": {"name": "bloodmnist"},
        "model": {"name": "convnet", "depth": 1, "width": 4},
        "eval": {"num_nets": 1, "epochs": 1, "batch_size": 16},
    }))  # fmt: skip
    data = {"name": "g", "datasets": [{"name": "toy", "preset": "toy.yaml"}], "methods": ["fake"],
            "baselines": ["random"], "ipcs": [1], "seeds": [0, 1], "eval_archs": ["convnet"],
            **extra}  # fmt: skip
    return grid_from_dict(data, root=root)


def test_run_grid_skips_claimed_cells_takes_over_dead_ones_and_releases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes = Fakes(monkeypatch)
    grid = fake_grid(tmp_path)
    cells = {c.label(): c for c in plan(grid)}
    runs = tmp_path / "runs"
    live = Owner(HOST, os.getppid(), _start(os.getppid()))
    child = subprocess.Popen(["true"])
    child.wait()
    gone = Owner(HOST, child.pid, "1")
    with ResultsDB(runs / "results.sqlite") as db:
        db.take_claim(_claim(live, cells["toy random ipc1 seed0"].artifact_id), lambda c: False)
        db.take_claim(_claim(gone, cells["toy random ipc1 seed1"].artifact_id), lambda c: False)
    lines: list[str] = []
    summary = run_grid(grid, runs, progress=False, log=lines.append)
    assert summary["claimed_elsewhere"] == ["toy random ipc1 seed0"]
    assert summary["networks_trained"] == 3 and len(fakes.trained) == 3
    text = "\n".join(lines)
    assert f"claimed by pid {live.pid} on {HOST}" in text and "left to it" in text
    assert f"taking over from pid {gone.pid} on {HOST}" in text
    with ResultsDB(runs / "results.sqlite") as db:
        assert [c.owner for c in db.claims()] == [live]  # ours released, the live one kept
        assert db.count("results") == 3
        # a complete cell is skipped even under a (leftover) live claim
        db.release_claim(cells["toy random ipc1 seed0"].artifact_id, live)
        db.take_claim(_claim(live, cells["toy fake ipc1 seed0"].artifact_id), lambda c: False)
    fakes.trained.clear()
    lines.clear()
    again = run_grid(grid, runs, progress=False, log=lines.append)
    assert again["networks_trained"] == 1 and again["skipped"] == 3
    assert again["claimed_elsewhere"] == [] and "claimed by" not in "\n".join(lines)
    # a failing cell releases its claim
    fakes.fail = True
    with pytest.raises(RuntimeError):
        run_grid(fake_grid(tmp_path, seeds=[2]), runs, progress=False, log=None)
    with ResultsDB(runs / "results.sqlite") as db:
        assert [c.owner for c in db.claims()] == [live]


def test_a_cell_needing_a_shared_artifact_another_process_makes_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes = Fakes(monkeypatch)
    monkeypatch.setattr(runmod, "WAIT_POLL_S", 0.01)
    runs = tmp_path / "runs"
    live = Owner(HOST, os.getppid(), _start(os.getppid()))
    with ResultsDB(runs / "results.sqlite") as db:
        db.take_claim(_claim(live, "shared", label="shared buffer"), lambda c: False)
    fakes.free_after = 4  # two fake cells fail, one retry fails, then the other process is done
    lines: list[str] = []
    summary = run_grid(fake_grid(tmp_path, baselines=[]), runs, progress=False, log=lines.append)
    assert summary["networks_trained"] == 2 and summary["claimed_elsewhere"] == []
    text = "\n".join(lines)
    assert f"needs the shared buffer, which pid {live.pid} on {HOST}" in text
    assert "waiting for pid" in text and fakes.runs == 5
    with ResultsDB(runs / "results.sqlite") as db:
        assert db.count("claims") == 0 and db.count("results") == 2


def _trained_per_cell(stdout: str) -> dict[str, int]:
    """Networks each cell trained in one process, from its log."""
    counts: dict[str, int] = {}
    label = None
    for line in stdout.splitlines():
        head = re.match(r"\[\d+/\d+\] (.+?)( \(again\))?$", line)
        if head:
            label = head.group(1)
        elif re.match(r"  \w+ net \d+/\d+: acc", line):
            counts[label] = counts.get(label, 0) + 1  # type: ignore[index]
    return counts


def test_two_processes_on_one_grid_do_each_cell_exactly_once(workdir: Path) -> None:
    grid = tiny_grid_file(workdir)
    args = ["bench", str(grid), "--no-progress", "--threads", "1"]
    procs = [run_cli(args, workdir) for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    summaries = [json.loads(out[out.index("\n{\n") + 1 :]) for out, _ in outs]
    per_process = [_trained_per_cell(out) for out, _ in outs]
    labels = [c.label() for c in plan(load_grid(grid))]
    for label in labels:  # every cell trained once, by one of the two
        assert sum(p.get(label, 0) for p in per_process) == 1, (label, per_process)
    assert sum(s["networks_trained"] for s in summaries) == len(labels) == 6
    for summary, other in zip(summaries, per_process[::-1], strict=True):
        assert all(other.get(label) == 1 for label in summary["claimed_elsewhere"])
    with ResultsDB(workdir / "runs" / "results.sqlite", create=False) as db:
        assert db.count("results") == 6 and db.count("claims") == 0
