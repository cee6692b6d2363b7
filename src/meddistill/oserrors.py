"""An OSError as the one line the CLI prints: what failed, on which path, what to do."""

from __future__ import annotations

import errno

_ADVICE = {
    errno.ENOSPC: "the disk is full; free space (or use another --runs-dir / --out) and run "
    "the same command again: finished work and the last good checkpoint are kept",
    errno.EDQUOT: "the disk quota is used up; free space and run the same command again",
    errno.EACCES: "permission denied; choose a folder you can write to (--runs-dir / --out)",
    errno.EPERM: "operation not permitted; choose a folder you can write to (--runs-dir / --out)",
    errno.EROFS: "the file system is read-only; choose a writable --runs-dir / --out",
    errno.ENOTDIR: "a part of this path is a file, not a folder; choose another --runs-dir / --out",
    errno.EISDIR: "this path is a folder but a file is needed; give a file name",
    errno.EEXIST: "something is already in the way at this path; move it or choose another path",
    errno.ENOENT: "it does not exist; check the path",
    errno.ENAMETOOLONG: "the path is too long; use a shorter --runs-dir / --out",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) and run again",
}


def describe_oserror(exc: OSError) -> str:
    """'<reason>: <path> (-> <path2>); <advice>' for any OSError."""
    reason = exc.strerror or exc.__class__.__name__
    where = ""
    if exc.filename is not None:
        where = f": {exc.filename}"
        if exc.filename2 is not None:
            where += f" -> {exc.filename2}"
    advice = _ADVICE.get(exc.errno or -1, "check the path and run the same command again")
    return f"{reason}{where}; {advice}"
