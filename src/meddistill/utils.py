"""Small shared helpers: devices, seeded generators, atomic file writes, hashing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from meddistill.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """Map 'auto' | 'cpu' | 'cuda' | 'cuda:N' to a device; 'auto' picks CUDA when present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device '{name}' was asked for but CUDA is not available here; use --device cpu or auto"
            )
        return torch.device(name)
    raise ConfigError(f"unknown device '{name}'; use auto, cpu or cuda[:N]")


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """An explicit seeded generator: the only source of randomness this package uses."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def derive_seed(seed: int, *keys: Any) -> int:
    """A stable 63-bit seed derived from a base seed and any labels (e.g. 'expert', 3)."""
    text = "/".join([str(int(seed)), *map(str, keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target folder; rename it over `path` only on success.

    A crash mid-write leaves the previous file (or none) in place, never a partial one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; artifacts are meant to be shared
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON atomically, pretty-printed for people."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def md5_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """The md5 hex digest of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def stable_hash(obj: Any, length: int = 12) -> str:
    """A short content hash of a JSON-serialisable object (config identities, cache keys)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
