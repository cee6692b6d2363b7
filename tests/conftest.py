"""Fixtures shared by every test folder (add yours; do not remove others')."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real datasets in ../shared/data (relative to the repo); skip when absent."""
    path = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
    if not path.is_dir():
        pytest.skip(f"real data folder {path} is absent")
    return path
