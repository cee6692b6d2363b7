"""Tensor preprocessing shared by every loader: pixel scaling, resizing, channels, normalising.

All functions work on [N, C, H, W] or [N, C, D, H, W] tensors and keep the device of their
input. Large datasets are processed in chunks of images so that a float copy of the whole set
is never made twice.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from meddistill.data.dataset import Normalization, Split
from meddistill.errors import ConfigError

MODES_2D = ("nearest", "nearest-exact", "bilinear", "bicubic", "area")
MODES_3D = ("nearest", "nearest-exact", "trilinear", "area")
_CHUNK_ELEMENTS = 1 << 24


def _chunk_rows(x: torch.Tensor) -> int:
    per = max(1, int(np.prod(x.shape[1:])))
    return max(1, _CHUNK_ELEMENTS // per)


def unit_range_scale(lo: float, hi: float) -> float | None:
    """Divisor mapping pixel values with range [lo, hi] to [0, 1], or None when none fits.

    Values already in [0, 1] are kept (divisor 1); values up to 255 are 8-bit pixels stored as
    numbers (divisor 255). Negative or larger values are not pixels this package understands.
    """
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0:
        return None
    if hi <= 1.0:
        return 1.0
    if hi <= 255.0:
        return 255.0
    return None


def to_float01(array: np.ndarray, divisor: float) -> torch.Tensor:
    """float32 tensor = array / divisor, converted chunk-wise (no float64 copy of the whole)."""
    src = torch.from_numpy(np.ascontiguousarray(array))
    out = torch.empty(src.shape, dtype=torch.float32)
    step = _chunk_rows(src) if src.dim() > 0 else 1
    for i in range(0, max(1, src.shape[0]), step):
        chunk = src[i : i + step].to(torch.float32)
        out[i : i + step] = chunk / divisor if divisor != 1.0 else chunk
    return out


def resize_images(x: torch.Tensor, size: int, mode: str | None = None) -> torch.Tensor:
    """Resize [N, C, H, W] (or [N, C, D, H, W]) images in [0, 1] to a side of `size`.

    Default mode: bicubic for 2D (what HoP-TM uses for 28 -> 32), trilinear for 3D. Bilinear and
    bicubic downsizing use antialiasing (as Pillow does); results are clamped to [0, 1] because
    bicubic overshoots and pixels cannot.
    """
    spatial = x.dim() - 2
    if spatial not in (2, 3):
        raise ConfigError(f"resize expects [N, C, H, W] or [N, C, D, H, W], got {tuple(x.shape)}")
    modes = MODES_2D if spatial == 2 else MODES_3D
    mode = mode or ("bicubic" if spatial == 2 else "trilinear")
    if mode not in modes:
        raise ConfigError(
            f"resize mode '{mode}' is not valid for {spatial}D images; use one of {', '.join(modes)}"
        )
    if size < 1:
        raise ConfigError(f"resize size must be positive, got {size}")
    target = (int(size),) * spatial
    if tuple(x.shape[2:]) == target:
        return x
    down = any(t < s for t, s in zip(target, x.shape[2:], strict=True))
    kwargs: dict[str, object] = {}
    if mode in ("bilinear", "bicubic", "trilinear"):
        kwargs["align_corners"] = False
    if mode in ("bilinear", "bicubic") and down:
        kwargs["antialias"] = True
    out = torch.empty((x.shape[0], x.shape[1], *target), dtype=x.dtype, device=x.device)
    step = max(1, _chunk_rows(out))
    for i in range(0, x.shape[0], step):
        out[i : i + step] = F.interpolate(x[i : i + step], size=target, mode=mode, **kwargs)
    return out.clamp_(0.0, 1.0)


def convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey -> RGB by repetition; RGB -> grey with ITU-R 601-2 luma (as Pillow's 'L')."""
    have = x.shape[1]
    if channels == have:
        return x
    if have == 1 and channels == 3:
        return x.expand(-1, 3, *x.shape[2:]).contiguous()
    if have == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
        return (x * w.view(1, 3, *([1] * (x.dim() - 2)))).sum(dim=1, keepdim=True)
    raise ConfigError(f"cannot convert {have}-channel images to {channels} channels; use 1 or 3")


def normalize_inplace(x: torch.Tensor, norm: Normalization) -> torch.Tensor:
    """Same arithmetic as Normalization.apply, done in place to spare a copy of the dataset."""
    if len(norm.mean) != x.shape[1] or len(norm.std) != x.shape[1]:
        raise ConfigError(
            f"normalisation has {len(norm.mean)} channels but the images have {x.shape[1]}; "
            "give one mean/std per channel"
        )
    shape = (1, x.shape[1]) + (1,) * (x.dim() - 2)
    mean = torch.tensor(norm.mean, dtype=x.dtype, device=x.device).view(shape)
    std = torch.tensor(norm.std, dtype=x.dtype, device=x.device).view(shape)
    step = _chunk_rows(x)
    for i in range(0, x.shape[0], step):
        x[i : i + step].sub_(mean).div_(std)
    return x


def build_splits(
    images01: dict[str, torch.Tensor],
    labels: dict[str, torch.Tensor],
    normalization: Normalization | None,
) -> tuple[dict[str, Split], Normalization]:
    """Normalise every split with `normalization`, or with the train split's statistics."""
    norm = normalization or Normalization.from_images(images01["train"])
    splits = {}
    for name, x in images01.items():
        splits[name] = Split(normalize_inplace(x, norm), labels[name])
    return splits, norm


def stratified_split(
    labels: torch.Tensor,
    test_fraction: float,
    val_fraction: float,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Per-class random split into train / val / test index tensors (each ascending).

    Each class is permuted with `generator` (classes in ascending order) and cut so that
    round(n_c * fraction) samples go to test and val; a class with at least two samples keeps
    at least one in train and (if test_fraction > 0) one in test. Same generator state ->
    same split.
    """
    if not 0.0 <= test_fraction < 1.0 or not 0.0 <= val_fraction < 1.0:
        raise ConfigError(
            f"split fractions must lie in [0, 1): test_fraction={test_fraction}, "
            f"val_fraction={val_fraction}"
        )
    if test_fraction + val_fraction >= 1.0:
        raise ConfigError(
            f"test_fraction + val_fraction = {test_fraction + val_fraction} leaves no train data; "
            "make them sum to less than 1"
        )
    parts: dict[str, list[torch.Tensor]] = {"train": [], "val": [], "test": []}
    labels = labels.cpu()
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c, as_tuple=False).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=generator)]
        n = idx.numel()
        n_test = round(n * test_fraction)
        n_val = round(n * val_fraction)
        if n >= 2 and test_fraction > 0:
            n_test = max(1, n_test)
        n_test = min(n_test, max(0, n - 1))
        n_val = min(n_val, max(0, n - 1 - n_test))
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test : n_test + n_val])
        parts["train"].append(idx[n_test + n_val :])
    out = {}
    for name, chunks in parts.items():
        cat = torch.cat(chunks) if chunks else torch.empty(0, dtype=torch.long)
        out[name] = torch.sort(cat).values
    return out
