"""Fixtures shared by every test folder (add yours; do not remove others')."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real datasets in ../shared/data (relative to the repo); skip when absent."""
    path = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
    if not path.is_dir():
        pytest.skip(f"real data folder {path} is absent")
    return path


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A test's own folder as the working directory, with its own cache; no user data root
    leaks in. Modules that want it for every test add an autouse fixture asking for it."""
    monkeypatch.setenv("MEDDISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MEDDISTILL_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def one_thread():
    """torch at one thread for the test: bit-equality between worker processes (one thread
    each) and the in-process run holds for the one-thread computation."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
