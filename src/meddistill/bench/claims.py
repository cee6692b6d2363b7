"""Claims: several `bench` processes on one grid share its cells, and none is done twice.

Before a process works on an artifact (a grid cell, or an expert buffer several cells share) it
claims the artifact's id in the results database, in one IMMEDIATE transaction (ResultsDB.
take_claim), and releases the claim when the work ends, finished or failed. Another process
skips a claimed cell and looks at it again at the end of its grid, by when it is done, free, or
still someone else's.

A claim whose owner is gone can be taken over: on the same host when its pid is not alive (or
is a zombie, or now belongs to a process started at another time: a reused pid); on another
host, whose processes cannot be asked, when its last sign of life (its start, or its latest
trained network) is older than STALE_CLAIM_S.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from meddistill.bench.db import Claim, Owner, ResultsDB
from meddistill.errors import MeddistillError

# Generous: a distillation on another host writes no sign of life until it ends.
STALE_CLAIM_S = 48 * 3600.0
_FALLBACK_START = f"t{time.time():.6f}"  # where /proc is missing: this module's import time


class ClaimBusy(Exception):
    """Another live process is making an artifact this work needs (e.g. a shared buffer)."""

    def __init__(self, holder: Claim) -> None:
        super().__init__(f"{holder.label} is being made by {holder.owner}")
        self.holder = holder


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks after boot) from /proc/PID/stat, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 onwards
    return fields[0], fields[19]


def current_owner() -> Owner:
    """This process, as a claim owner."""
    pid = os.getpid()
    stat = _proc_stat(pid)
    return Owner(socket.gethostname(), pid, stat[1] if stat else _FALLBACK_START)


def pid_alive(pid: int, started: str) -> bool:
    """Whether the process `pid` that started at `started` is still running (this host)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc to tell a reused pid: trust the signal
    state, start = stat
    return state not in ("Z", "X") and start == started


def is_dead(claim: Claim, *, now: float, host: str, stale_s: float = STALE_CLAIM_S) -> bool:
    """Whether `claim` may be taken over: its owner is known gone, or silent for too long."""
    if claim.owner.host == host:
        return not pid_alive(claim.owner.pid, claim.owner.started)
    return now - claim.heartbeat > stale_s


def take(
    db: ResultsDB,
    artifact_id: str,
    *,
    grid: str,
    label: str,
    owner: Owner,
    stale_s: float = STALE_CLAIM_S,
) -> tuple[bool, Claim | None]:
    """Claim `artifact_id` for `owner`: (taken, other owner's claim refused or replaced)."""
    now = time.time()
    mine = Claim(artifact_id, grid, label, owner, claimed_at=now, heartbeat=now)
    host = socket.gethostname()
    return db.take_claim(mine, lambda held: is_dead(held, now=now, host=host, stale_s=stale_s))


def release(db: ResultsDB, artifact_id: str, owner: Owner) -> None:
    """Release quietly: it runs while an error unwinds, which must not be hidden by this one
    (a claim left behind is taken over once this process is gone)."""
    with contextlib.suppress(MeddistillError, sqlite3.Error):
        db.release_claim(artifact_id, owner)


def heartbeat(db: ResultsDB, artifact_id: str, owner: Owner | None) -> None:
    """Tell other hosts the owner is alive (after each trained network)."""
    if owner is not None:
        db.touch_claim(artifact_id, owner, time.time())


@contextlib.contextmanager
def holding(
    db: ResultsDB, artifact_id: str, *, grid: str, label: str, owner: Owner | None
) -> Iterator[Claim | None]:
    """Hold the claim of a shared artifact for the with-block (yields the replaced claim of a
    dead owner, or None); ClaimBusy when a live process holds it. owner None: no claiming."""
    if owner is None:
        yield None
        return
    taken, other = take(db, artifact_id, grid=grid, label=label, owner=owner)
    if not taken:
        raise ClaimBusy(other)  # type: ignore[arg-type]
    try:
        yield other
    finally:
        release(db, artifact_id, owner)


def describe(claim: Claim) -> str:
    """'pid 12 on host (grid g, since 2024-05-01 10:00:00 UTC)' for log lines."""
    since = datetime.fromtimestamp(claim.claimed_at, tz=UTC)
    return f"{claim.owner} (grid {claim.grid}, since {since:%Y-%m-%d %H:%M:%S} UTC)"
