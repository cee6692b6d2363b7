from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from meddistill.data.download import download_file
from meddistill.errors import DownloadError


def _source(tmp_path: Path) -> tuple[Path, str]:
    src = tmp_path / "server" / "blob.bin"
    src.parent.mkdir()
    data = bytes(range(256)) * 5000  # > 1 MiB chunk, so the loop runs more than once
    src.write_bytes(data)
    return src, hashlib.md5(data).hexdigest()


def test_download_writes_file_and_returns_md5(tmp_path: Path) -> None:
    src, md5 = _source(tmp_path)
    dest = tmp_path / "out" / "blob.bin"
    assert download_file(src.as_uri(), dest, md5, progress=False) == md5
    assert dest.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["blob.bin"]


def test_md5_mismatch_leaves_nothing(tmp_path: Path) -> None:
    src, _ = _source(tmp_path)
    dest = tmp_path / "out" / "blob.bin"
    with pytest.raises(DownloadError, match="expected 0000") as err:
        download_file(src.as_uri(), dest, "0" * 32, progress=False)
    assert str(dest) in str(err.value)
    assert list(dest.parent.iterdir()) == []


def test_mismatch_keeps_an_existing_file(tmp_path: Path) -> None:
    src, _ = _source(tmp_path)
    dest = tmp_path / "blob.bin"
    dest.write_bytes(b"old")
    with pytest.raises(DownloadError):
        download_file(src.as_uri(), dest, "0" * 32, progress=False)
    assert dest.read_bytes() == b"old"


def test_unreachable_url(tmp_path: Path) -> None:
    dest = tmp_path / "blob.bin"
    with pytest.raises(DownloadError, match="could not download") as err:
        download_file((tmp_path / "missing.bin").as_uri(), dest, None, progress=False)
    assert "by hand" in str(err.value)
    assert not dest.exists() and list(tmp_path.iterdir()) == []
