"""Fixtures of the fault-injection suite; the harness itself is tests/faulthelpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _in_workdir(workdir: Path) -> Path:
    """Every test of this module runs in its own folder (tests/conftest.py `workdir`)."""
    return workdir
