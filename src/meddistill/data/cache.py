"""The cache directory and the memory of verified file checksums.

Hashing a 35 MB npz takes a noticeable moment and a multi-GB one takes minutes, and the data
folder may be read-only (a shared mount). So the md5 of a file is remembered in the cache dir
(env MEDDISTILL_CACHE, else ~/.cache/meddistill), keyed by the file's absolute path, size and
mtime_ns: a later load whose file still has the same size and mtime skips the hashing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from meddistill import utils
from meddistill.utils import write_json_atomic

log = logging.getLogger(__name__)

CACHE_ENV = "MEDDISTILL_CACHE"


def cache_dir() -> Path:
    """The cache root: $MEDDISTILL_CACHE when set, else ~/.cache/meddistill (not created here)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path.home() / ".cache" / "meddistill"


def _memory_file(path: Path, size: int, mtime_ns: int) -> Path:
    key = f"{path}\0{size}\0{mtime_ns}"
    return cache_dir() / "md5" / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")


def recall_md5(path: str | os.PathLike[str]) -> str | None:
    """The remembered md5 of `path` if its size and mtime_ns are unchanged since, else None."""
    p = Path(path).resolve()
    st = p.stat()
    mem = _memory_file(p, st.st_size, st.st_mtime_ns)
    try:
        rec = json.loads(mem.read_text())
    except (OSError, ValueError):
        return None
    if (
        isinstance(rec, dict)
        and rec.get("path") == str(p)
        and rec.get("size") == st.st_size
        and rec.get("mtime_ns") == st.st_mtime_ns
        and isinstance(rec.get("md5"), str)
    ):
        return rec["md5"]
    return None


def remember_md5(path: str | os.PathLike[str], md5: str) -> None:
    """Record the md5 of `path` for its current size and mtime; a read-only cache only warns."""
    p = Path(path).resolve()
    st = p.stat()
    rec = {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "md5": md5}
    try:
        write_json_atomic(_memory_file(p, st.st_size, st.st_mtime_ns), rec)
    except OSError as exc:
        log.warning("could not remember the md5 of %s in %s: %s", p, cache_dir(), exc)


def file_md5(path: str | os.PathLike[str]) -> tuple[str, bool]:
    """(md5, remembered): the remembered checksum when valid, else a fresh one (then stored)."""
    known = recall_md5(path)
    if known is not None:
        return known, True
    digest = utils.md5_file(path)
    remember_md5(path, digest)
    return digest, False
