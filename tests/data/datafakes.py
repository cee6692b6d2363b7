"""Small generated files in the official formats: MedMNIST npz files and image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from meddistill.utils import md5_file


def fake_medmnist(
    folder: Path,
    name: str = "pathmnist",
    *,
    size: int = 28,
    channels: int = 3,
    n_classes: int = 9,
    counts: tuple[int, int, int] = (6, 3, 4),
    d3: bool = False,
    dtype: str = "uint8",
    seed: int = 0,
    label_cols: int = 1,
) -> tuple[Path, str]:
    """Write `{name}.npz` (or `{name}_{size}.npz`) with random images; return (path, md5)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in zip(("train", "val", "test"), counts, strict=True):
        if d3:
            shape: tuple[int, ...] = (n, size, size, size)
        elif channels == 1:
            shape = (n, size, size)
        else:
            shape = (n, size, size, channels)
        if dtype == "uint8":
            img = rng.integers(0, 256, size=shape, dtype=np.uint8)
        else:
            img = rng.random(shape).astype(dtype)
        arrays[f"{split}_images"] = img
        labels = np.arange(n * label_cols).reshape(n, label_cols) % n_classes
        arrays[f"{split}_labels"] = labels.astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (f"{name}.npz" if size == 28 else f"{name}_{size}.npz")
    np.savez(path, **arrays)
    return path, md5_file(path)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return md5_file(path)


def png(path: Path, value: int | tuple[int, int, int], size: int = 8, mode: str = "RGB") -> Path:
    """A solid image of one value (an 8-bit grey level or an RGB triple)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), value).save(path)
    return path


def class_folders(root: Path, counts: dict[str, int], size: int = 8) -> Path:
    """root/<class>/<class>_<i>.png, image i of class k filled with grey level 10*k + i."""
    for k, (cls, n) in enumerate(sorted(counts.items())):
        for i in range(n):
            png(root / cls / f"{cls}_{i}.png", (10 * k + i,) * 3, size)
    return root
