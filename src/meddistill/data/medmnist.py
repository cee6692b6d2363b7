"""MedMNIST (v2 and MedMNIST+) npz files: every 2D and 3D subset at every published size.

Facts (tasks, classes, split sizes, URLs, md5s) come from resources/medmnist_info.json. A file
is `{name}.npz` at size 28 and `{name}_{size}.npz` otherwise, as the medmnist package names
them, so a folder the medmnist package filled can be used as is.

Root resolution (first match wins, no fall-through): the explicit `root` (CLI --data-root), else
$MEDDISTILL_DATA, else ~/.medmnist (medmnist's own default). Within the chosen root the file is
looked for in `root/` and then `root/medmnist/` (so one data root can hold MedMNIST next to
image-folder datasets); a download goes to `root/`.

The md5 is checked on first load and remembered in the cache dir (see data/cache.py), so a
later load of an unchanged file skips hashing even when the data folder is read-only.
"""

from __future__ import annotations

import functools
import json
import os
import zipfile
import zlib
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from meddistill.data import cache
from meddistill.data.dataset import MedicalDataset, Normalization
from meddistill.data.download import download_file
from meddistill.data.preprocess import (
    build_splits,
    convert_channels,
    resize_images,
    to_float01,
    unit_range_scale,
)
from meddistill.errors import ConfigError, DatasetCorruptError, DatasetNotFoundError

DATA_ENV = "MEDDISTILL_DATA"
SPLITS = ("train", "val", "test")
SUPPORTED_TASKS = ("multi-class", "binary-class", "ordinal-regression")


@functools.lru_cache(maxsize=1)
def _info() -> dict[str, Any]:
    text = resources.files("meddistill").joinpath("resources/medmnist_info.json").read_text()
    return json.loads(text)


def medmnist_info(name: str) -> dict[str, Any]:
    """The json facts of one subset (a deep copy: callers may mutate it)."""
    info = _info()
    key = name.lower()
    if key not in info:
        raise ConfigError(
            f"unknown MedMNIST subset '{name}'; valid names: {', '.join(medmnist_names())}"
        )
    return json.loads(json.dumps(info[key]))


def medmnist_names() -> list[str]:
    """Every subset in the json, 2D first then 3D, in the json's order."""
    names = list(_info())
    return [n for n in names if not is_3d(n)] + [n for n in names if is_3d(n)]


def is_3d(name: str) -> bool:
    return name.lower().endswith("3d")


def medmnist_sizes(name: str) -> list[int]:
    return sorted(int(s) for s in medmnist_info(name)["files"])


def file_name(name: str, size: int) -> str:
    """`pathmnist.npz` at 28 px, `pathmnist_64.npz` otherwise (medmnist's convention)."""
    return f"{name.lower()}.npz" if int(size) == 28 else f"{name.lower()}_{int(size)}.npz"


def file_facts(name: str, size: int) -> dict[str, str]:
    """{'url': ..., 'md5': ...} of the official file of `name` at `size`."""
    files = medmnist_info(name)["files"]
    if str(int(size)) not in files:
        raise ConfigError(
            f"{name} is not published at size {size}; available sizes: "
            f"{', '.join(map(str, medmnist_sizes(name)))}"
        )
    return dict(files[str(int(size))])


def search_dirs(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The folders searched for npz files, in order (see the module docstring)."""
    if root is not None:
        base = Path(root).expanduser()
    elif os.environ.get(DATA_ENV):
        base = Path(os.environ[DATA_ENV]).expanduser()
    else:
        return [Path.home() / ".medmnist"]
    return [base, base / "medmnist"]


def locate(name: str, size: int, root: str | os.PathLike[str] | None = None) -> Path | None:
    """The npz path of `name` at `size` if it exists in the search folders, else None."""
    fname = file_name(name, size)
    for d in search_dirs(root):
        if (d / fname).is_file():
            return (d / fname).resolve()
    return None


def check_supported(name: str) -> None:
    """Refuse tasks this package cannot train on (ChestMNIST is multi-label)."""
    task = medmnist_info(name)["task"]
    if task not in SUPPORTED_TASKS:
        raise ConfigError(
            f"{name} is a '{task}' task (several labels per image); meddistill supports "
            f"single-label classification only ({', '.join(SUPPORTED_TASKS)}); choose another "
            "dataset"
        )


def _not_found(name: str, size: int, root: str | os.PathLike[str] | None) -> DatasetNotFoundError:
    dirs = search_dirs(root)
    url = file_facts(name, size)["url"]
    return DatasetNotFoundError(
        f"{file_name(name, size)} not found in {' or '.join(map(str, dirs))}; point at the "
        f"folder holding it with --data-root DIR, dataset.root=DIR in a config (root= in "
        f"Python) or ${DATA_ENV} (default ~/.medmnist), or rerun with --download "
        f"(download=True) to fetch it into {dirs[0]}, or download {url} there by hand"
    )


def _verify(path: Path, expected: str | None, fname: str) -> tuple[str, bool]:
    """(md5, remembered) of `path`; DatasetCorruptError when it differs from `expected`."""
    md5, remembered = cache.file_md5(path)
    if expected is not None and md5 != expected:
        raise DatasetCorruptError(
            f"{path} has md5 {md5} but {fname} should have {expected}; the file is damaged or "
            "not the official one: delete it and rerun with --download (or pass "
            "dataset.verify_md5=false to use it anyway)"
        )
    return md5, remembered


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    keys = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels")]
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise DatasetCorruptError(
                    f"{path} lacks the keys {', '.join(missing)} (has {', '.join(npz.files)}); "
                    "it is not a MedMNIST npz: delete it and rerun with --download"
                )
            return {k: npz[k] for k in keys}
    except DatasetCorruptError:
        raise
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError) as exc:
        raise DatasetCorruptError(
            f"{path} cannot be read as an npz ({type(exc).__name__}: {exc}); the file is "
            "truncated or corrupt: delete it and rerun with --download"
        ) from exc


def _check_images(path: Path, split: str, arr: np.ndarray, size: int, chans: int, d3: bool) -> None:
    if d3:
        want, shape_text = (size, size, size), f"(N, {size}, {size}, {size})"
        ok = arr.ndim == 4 and tuple(arr.shape[1:]) == want
    elif chans == 1:
        shape_text = f"(N, {size}, {size})"
        ok = arr.ndim == 3 and tuple(arr.shape[1:]) == (size, size)
    else:
        shape_text = f"(N, {size}, {size}, {chans})"
        ok = arr.ndim == 4 and tuple(arr.shape[1:]) == (size, size, chans)
    if not ok:
        raise DatasetCorruptError(
            f"{path}: {split}_images has shape {arr.shape}, expected {shape_text}; the file does "
            "not match its name: delete it and rerun with --download"
        )
    if not (arr.dtype == np.uint8 or np.issubdtype(arr.dtype, np.floating)):
        raise DatasetCorruptError(
            f"{path}: {split}_images has dtype {arr.dtype}, expected uint8 or float; "
            "delete it and rerun with --download"
        )


def _labels(path: Path, split: str, arr: np.ndarray, n: int, n_classes: int) -> torch.Tensor:
    if arr.ndim == 2 and arr.shape[1] > 1:
        raise DatasetCorruptError(
            f"{path}: {split}_labels has shape {arr.shape} (several labels per image, a "
            "multi-label file) but this subset is single-label; the file does not match its name"
        )
    flat = arr.reshape(-1) if arr.ndim in (1, 2) else None
    if flat is None or flat.shape[0] != n:
        raise DatasetCorruptError(
            f"{path}: {split}_labels has shape {arr.shape}, expected ({n}, 1) to match "
            f"{n} images; delete it and rerun with --download"
        )
    if np.issubdtype(flat.dtype, np.floating) and not np.all(np.mod(flat, 1) == 0):
        raise DatasetCorruptError(f"{path}: {split}_labels are not whole numbers")
    if flat.size and (flat.min() < 0 or flat.max() >= n_classes):
        raise DatasetCorruptError(
            f"{path}: {split}_labels range over [{flat.min()}, {flat.max()}] but the subset has "
            f"{n_classes} classes (0..{n_classes - 1}); delete it and rerun with --download"
        )
    return torch.from_numpy(flat.astype(np.int64))


def _to_nchw(x: torch.Tensor, d3: bool, chans: int) -> torch.Tensor:
    if d3 or chans == 1:
        return x.unsqueeze(1)
    return x.permute(0, 3, 1, 2).contiguous()


def _find_or_fetch(
    key: str,
    size: int,
    root: str | os.PathLike[str] | None,
    official: dict[str, str],
    expected: str | None,
    *,
    download: bool,
    verify_md5: bool | str,
) -> tuple[Path, str, bool]:
    """(path, md5, md5 remembered) of the npz to read: an intact local file, else a download."""
    fname = file_name(key, size)
    path = locate(key, size, root)
    if path is not None:
        try:
            md5, remembered = _verify(path, expected, fname)
        except DatasetCorruptError:
            if not (download and verify_md5 is True):
                raise
            # fall through: re-fetch over the damaged file
        else:
            return path, md5, remembered
    if not download:
        raise _not_found(key, size, root)
    path = (search_dirs(root)[0] / fname).resolve()
    if verify_md5 is not True:
        raise ConfigError(
            f"download=True fetches the official {fname}; it cannot be combined with "
            f"verify_md5={verify_md5!r}"
        )
    md5 = download_file(official["url"], path, official["md5"])
    cache.remember_md5(path, md5)
    return path, md5, False


def _read_splits(
    path: Path, size: int, chans: int, d3: bool, n_classes: int
) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor], float]:
    """Validate every split of the npz: (raw images, int64 labels, divisor to [0, 1])."""
    arrays = _read_npz(path)
    raw: dict[str, np.ndarray] = {}
    labels: dict[str, torch.Tensor] = {}
    lo, hi = np.inf, -np.inf
    for split in SPLITS:
        img = arrays[f"{split}_images"]
        _check_images(path, split, img, size, chans, d3)
        labels[split] = _labels(path, split, arrays[f"{split}_labels"], img.shape[0], n_classes)
        if img.dtype != np.uint8 and img.size:
            if not np.all(np.isfinite(img)):
                raise DatasetCorruptError(f"{path}: {split}_images hold NaN or inf values")
            lo, hi = min(lo, float(img.min())), max(hi, float(img.max()))
        raw[split] = img
    return raw, labels, _float_divisor(path, raw, lo, hi)


def _float_divisor(path: Path, raw: dict[str, np.ndarray], lo: float, hi: float) -> float:
    """Float files may store [0, 1] or [0, 255] pixels; one divisor must fit every split."""
    divisor = 255.0
    if any(a.dtype != np.uint8 for a in raw.values()) and np.isfinite(hi):
        scale = unit_range_scale(lo, hi)
        if scale is None:
            raise DatasetCorruptError(
                f"{path}: float images range over [{lo}, {hi}], neither [0, 1] nor [0, 255]; "
                "delete the file and rerun with --download"
            )
        divisor = scale
    return divisor


def _to_images01(
    raw: dict[str, np.ndarray],
    divisor: float,
    d3: bool,
    chans: int,
    resize_to: int | None,
    resize_mode: str | None,
    channels: int | None,
) -> dict[str, torch.Tensor]:
    """Float NC(D)HW images in [0, 1], resized and channel-converted; empties `raw` as it goes."""
    images01: dict[str, torch.Tensor] = {}
    for split in SPLITS:
        arr = raw.pop(split)
        x = _to_nchw(to_float01(arr, 255.0 if arr.dtype == np.uint8 else divisor), d3, chans)
        del arr
        if resize_to is not None:
            x = resize_images(x, int(resize_to), resize_mode)
        if channels is not None:
            x = convert_channels(x, int(channels))
        images01[split] = x
    return images01


def _load_info(
    *,
    size: int,
    path: Path,
    md5: str,
    expected: str | None,
    remembered: bool,
    resize_to: int | None,
    resize_mode: str | None,
    d3: bool,
    channels: int | None,
    normalization: Normalization | None,
) -> dict[str, Any]:
    """The dataset's info record: which file, how it was checked and how it was preprocessed."""
    return {
        "format": "medmnist",
        "size": size,
        "path": str(path),
        "md5": md5,
        "md5_checked": expected is not None,
        "md5_remembered": remembered,
        "resize_to": resize_to,
        "resize_mode": (resize_mode or ("trilinear" if d3 else "bicubic"))
        if resize_to is not None
        else None,
        "channels": channels,
        "trained_as": "multi-class",
        "normalization_source": "explicit" if normalization is not None else "train split",
    }


def load_medmnist(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    size: int | None = None,
    resize_to: int | None = None,
    resize_mode: str | None = None,
    channels: int | None = None,
    download: bool = False,
    normalization: Normalization | None = None,
    verify_md5: bool | str = True,
) -> MedicalDataset:
    """Load one MedMNIST subset as a MedicalDataset with its official train/val/test splits.

    `size` picks the file (28 default; 64/128/224 for MedMNIST+, 28/64 for 3D). `resize_to`
    resizes after loading (bicubic for 2D, trilinear for 3D unless `resize_mode`), `channels`
    converts grey <-> RGB. Images are normalised with the train split's per-channel statistics
    unless `normalization` is given. `verify_md5`: True checks the official md5, a string checks
    that md5 instead (for files you generated or re-packed), False skips the comparison (the md5
    is still computed, once, because it is the dataset's source_id).
    """
    key = name.lower()
    facts = medmnist_info(key)
    check_supported(key)
    size = 28 if size is None else int(size)
    official = file_facts(key, size)
    expected = official["md5"] if verify_md5 is True else (verify_md5 or None)
    path, md5, remembered = _find_or_fetch(
        key, size, root, official, expected, download=download, verify_md5=verify_md5
    )

    d3 = is_3d(key)
    chans = int(facts["n_channels"])
    n_classes = int(facts["n_classes"])
    raw, labels, divisor = _read_splits(path, size, chans, d3, n_classes)
    images01 = _to_images01(raw, divisor, d3, chans, resize_to, resize_mode, channels)
    splits, norm = build_splits(images01, labels, normalization)

    return MedicalDataset(
        name=key,
        splits=splits,
        class_names=[facts["label"][str(i)] for i in range(n_classes)],
        normalization=norm,
        source_id=md5,
        task=facts["task"],
        info=_load_info(
            size=size,
            path=path,
            md5=md5,
            expected=expected,
            remembered=remembered,
            resize_to=resize_to,
            resize_mode=resize_mode,
            d3=d3,
            channels=channels,
            normalization=normalization,
        ),
    )
