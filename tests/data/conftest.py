"""Every data test gets its own cache dir and no MEDDISTILL_DATA, so nothing leaks between tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("MEDDISTILL_CACHE", str(cache))
    monkeypatch.delenv("MEDDISTILL_DATA", raising=False)
    return cache
