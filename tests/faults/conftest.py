"""Fixtures of the fault-injection suite; the harness itself is tests/faulthelpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each case runs in its own folder with its own cache; no user data root leaks in."""
    monkeypatch.setenv("MEDDISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MEDDISTILL_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path
