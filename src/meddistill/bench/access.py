"""Why a results database cannot be opened or written: the operating system's reason, in one line.

SQLite says "unable to open database file" or "attempt to write a readonly database" alike for
a full disk, a missing permission, a read-only mount or a folder in the way, and a user needs
to know which, and what to do. These helpers redo the failing step with plain OS calls (open
the file, create a file in its folder) to learn the errno, and word it with the path.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import tempfile
from pathlib import Path

from meddistill.errors import ArtifactError

_FULL = ("the disk is full", "free space, or give --db a path on another disk")
_DENIED_TODO = "make it writable for this user, or give --db another path"
# errno -> (what is wrong, what to do) when WRITING the database
_WRITE_REASONS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: _FULL,
    errno.EDQUOT: ("the disk quota is used up", "free space, or give --db a path on another disk"),
    errno.EROFS: (
        "the file system is read-only",
        "give --db a path on a writable disk (`meddistill table` and `report` can still read it)",
    ),
    errno.EACCES: ("permission denied", _DENIED_TODO),
    errno.EPERM: ("operation not permitted (an immutable or protected file)", _DENIED_TODO),
    errno.ENOTDIR: ("a file is in the way of a folder", "move it away, or give --db another path"),
    errno.EEXIST: ("a file is in the way of a folder", "move it away, or give --db another path"),
    errno.EISDIR: ("it is a folder, not a file", "give --db a file path"),
}
_PROBE_SQLITE = {
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_PERM,
}


def primary_code(exc: sqlite3.Error) -> int | None:
    """The primary SQLite result code of an error (extended codes carry it in the low byte)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def _where(err: OSError, path: Path) -> str:
    """' (at PATH)' when the failing path is not the database itself (its folder, a parent)."""
    name = err.filename
    return "" if name is None or Path(name) == path else f" (at {name})"


def os_failure(path: Path, err: OSError, *, writing: bool = True) -> ArtifactError:
    """One line: the database, the OS reason with where it happened, and what to do."""
    verb = "write" if writing else "read"
    if writing and err.errno in _WRITE_REASONS:
        reason, todo = _WRITE_REASONS[err.errno]
    elif err.errno in (errno.EACCES, errno.EPERM):
        reason, todo = "permission denied", "make it readable for this user, or copy it"
    else:
        reason = (err.strerror or str(err)).lower()
        todo = "fix that, or give --db another path"
    return ArtifactError(
        f"cannot {verb} results database {path}: {reason}{_where(err, path)}; {todo}"
    )


def check_writable(path: Path) -> list[Path]:
    """Make the database's folder and open an existing file for writing, before SQLite does:
    its errors (permission, read-only mount, a file in the way) name the exact reason.
    Returns the folders it made (see remove_empty)."""
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            os.close(os.open(path, os.O_RDWR))
    except OSError as exc:
        remove_empty(made)
        raise os_failure(path, exc) from exc
    return made


def remove_empty(folders: list[Path]) -> None:
    """Remove folders made for a database that could not be opened (deepest first), so a
    refused command leaves nothing behind; a folder something went into stays."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def probe_folder(folder: Path) -> OSError | None:
    """Create, write and remove a small file in `folder` (as SQLite does with its -wal and -shm
    files next to the database): the OSError that stops it (naming the folder), or None."""
    try:
        fd, name = tempfile.mkstemp(prefix=".meddistill-probe-", dir=folder)
    except OSError as exc:
        return OSError(exc.errno, exc.strerror, str(folder))
    try:
        os.write(fd, b"\0" * 65536)
        os.fsync(fd)
    except OSError as exc:
        return OSError(exc.errno, exc.strerror, str(folder))
    finally:
        os.close(fd)
        os.unlink(name)
    return None


def write_failure(path: Path, exc: sqlite3.Error) -> ArtifactError:
    """The ArtifactError of a failed SQLite open or write of `path`, with the OS reason."""
    code = primary_code(exc)
    if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT) or not isinstance(
        exc, sqlite3.OperationalError
    ):
        return not_a_database(path, exc)
    if code == sqlite3.SQLITE_FULL:
        return os_failure(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return ArtifactError(
            f"results database {path} stayed locked by another process for over 60 s ({exc}); "
            "wait for it to finish, or give --db another path"
        )
    if code in _PROBE_SQLITE:
        err = probe_folder(path.parent)
        if err is not None:
            return os_failure(path, err)
    return ArtifactError(
        f"cannot write results database {path} ({exc}); check the disk and the permissions of "
        "its folder, or give --db another path"
    )


def read_failure(path: Path, exc: sqlite3.Error) -> ArtifactError:
    """The ArtifactError of a failed read-only open of `path`."""
    if primary_code(exc) in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_IOERR):
        try:
            os.close(os.open(path, os.O_RDONLY))
        except OSError as err:
            return os_failure(path, err, writing=False)
    return not_a_database(path, exc)


def not_a_database(path: Path, exc: sqlite3.Error) -> ArtifactError:
    return ArtifactError(
        f"{path} is not a readable SQLite results database ({exc}); move it away or give "
        "another --db path"
    )


def unreadable_wal(path: Path) -> ArtifactError:
    """A reader without write access to the folder cannot see changes still in the -wal file."""
    return ArtifactError(
        f"results database {path} has changes in {path.name}-wal that cannot be read without "
        f"write access to {path.parent}; run `meddistill table` once where it is writable "
        "(SQLite merges them), or copy the folder to a writable disk"
    )
