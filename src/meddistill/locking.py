"""One writer per folder: an OS file lock (filelock) on a run or buffer folder.

Why: two processes resuming the same run folder would overwrite each other's checkpoint, and
each one's start-up cleanup would delete the other's live temporaries. The lock is an fcntl /
msvcrt lock, so the OS releases it when its owner dies (a SIGKILL leaves no stale lock); while
it is held, every temporary in the folder belongs to a dead process and may be removed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from meddistill import distributed
from meddistill.errors import ConfigError

LOCK_FILE = ".meddistill.lock"


def _owner(lock_file: Path) -> str:
    """'pid N' of the holder as it wrote itself down, or '' when unknown."""
    try:
        text = (lock_file.parent / f"{LOCK_FILE}.owner").read_text().strip()
    except OSError:
        return ""
    return f" (pid {text})" if text.isdigit() else ""


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str], what: str) -> Iterator[Path]:
    """Hold the folder's lock for the block (re-entrant in one process), or refuse at once
    with one line when another process holds it; on entry, remove temporaries of dead owners."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    if not distributed.is_main():  # torchrun: rank 0 holds the job's locks, the others work
        yield path  # under them (and write only their own expert files)
        return
    lock_file = path / LOCK_FILE
    lock = FileLock(lock_file, is_singleton=True)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(
            f"{what} {path} is in use by another meddistill process{_owner(lock_file)}; wait "
            "for it to finish, or give this run another folder (--out)"
        ) from None
    try:
        if lock.lock_counter == 1:
            (path / f"{LOCK_FILE}.owner").write_text(f"{os.getpid()}\n")
            remove_dead_temporaries(path)
        yield path
    finally:
        lock.release()


def remove_dead_temporaries(folder: Path) -> list[Path]:
    """Delete the `.<name>.*.tmp` files (atomic writes cut short by a kill) under `folder`.
    Call only while holding its lock: then no live process owns any of them."""
    removed = []
    for here, dirs, files in os.walk(folder):
        # a sub-folder with its own lock (a buffer's run/) is cleaned by its own holder
        dirs[:] = [d for d in dirs if not (Path(here) / d / LOCK_FILE).exists()]
        for name in files:
            stale = Path(here) / name
            if name.startswith(".") and name.endswith(".tmp") and not stale.is_symlink():
                stale.unlink()
                removed.append(stale)
    return removed
