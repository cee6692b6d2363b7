"""Shared helpers: atomic writes keep the old file on failure, seeds are stable."""

import hashlib

import pytest
import torch

from meddistill.errors import ConfigError
from meddistill.utils import (
    atomic_path,
    derive_seed,
    make_generator,
    md5_file,
    resolve_device,
    stable_hash,
)


def test_atomic_path_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]  # no temporary left behind
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_md5_matches_hashlib(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc" * 1000)
    assert md5_file(f, chunk=7) == hashlib.md5(b"abc" * 1000).hexdigest()


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed(0, "expert", 1) == derive_seed(0, "expert", 1)
    assert derive_seed(0, "expert", 1) != derive_seed(0, "expert", 2)
    assert derive_seed(1, "expert", 1) != derive_seed(0, "expert", 1)
    assert 0 <= derive_seed(123, "x") < 2**63


def test_generators_reproduce_and_leave_global_rng_alone():
    state = torch.get_rng_state()
    a = torch.rand(5, generator=make_generator(7))
    b = torch.rand(5, generator=make_generator(7))
    assert torch.equal(a, b)
    assert torch.equal(state, torch.get_rng_state())


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_stable_hash_ignores_key_order():
    assert stable_hash({"a": 1, "b": 2}) == stable_hash({"b": 2, "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
