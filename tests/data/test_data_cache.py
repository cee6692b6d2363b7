from __future__ import annotations

import os
from pathlib import Path

import pytest

from meddistill import utils
from meddistill.data import cache


def test_cache_dir_from_env_or_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDDISTILL_CACHE", str(tmp_path / "c"))
    assert cache.cache_dir() == (tmp_path / "c").resolve()
    monkeypatch.delenv("MEDDISTILL_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert cache.cache_dir() == tmp_path / "h" / ".cache" / "meddistill"


def test_memory_keyed_by_path_size_and_mtime(tmp_path: Path) -> None:
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    assert cache.recall_md5(f) is None
    md5, remembered = cache.file_md5(f)
    assert md5 == utils.md5_file(f) and remembered is False
    assert cache.file_md5(f) == (md5, True)
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 5))
    assert cache.recall_md5(f) is None
    f.write_bytes(b"abcd")  # a new size is a new key as well
    assert cache.recall_md5(f) is None
    copy = tmp_path / "b.bin"
    copy.write_bytes(b"abcd")
    os.utime(copy, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns))
    cache.remember_md5(f, "x" * 32)
    assert cache.recall_md5(f) == "x" * 32
    assert cache.recall_md5(copy) is None  # another path


def test_unwritable_cache_only_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MEDDISTILL_CACHE", str(blocker))
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    md5, remembered = cache.file_md5(f)  # cannot store: still returns the checksum
    assert md5 == utils.md5_file(f) and remembered is False
