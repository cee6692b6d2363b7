"""Decode and resize folder images with Pillow, and cache the result as safetensors + JSON.

Decoding thousands of PNG/JPEG files takes seconds to minutes; the decoded, resized uint8
tensor is what every later load needs, so it is kept in the cache dir under a key that hashes
the file listing (paths, sizes, mtimes, labels) and the preprocessing options. Any change to a
file or an option gives a new key, so a stale cache is never read.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from meddistill.data.cache import cache_dir
from meddistill.data.folder_scan import FileEntry, format_paths
from meddistill.errors import ConfigError, DatasetCorruptError
from meddistill.utils import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

CACHE_VERSION = 1
MAX_IMAGE_PIXELS = 64_000_000  # 64 megapixels (8000 x 8000): far above any medical image here
GROUP_CODES = {"all": 0, "train": 1, "val": 2, "test": 3}
RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def check_options(size: int | None, channels: int, resample: str) -> None:
    if channels not in (1, 3):
        raise ConfigError(f"channels={channels} is not supported for image folders; use 1 or 3")
    if resample not in RESAMPLE:
        raise ConfigError(f"resample='{resample}' is unknown; use one of {', '.join(RESAMPLE)}")
    if size is not None and int(size) < 1:
        raise ConfigError(f"image size must be positive, got {size}")


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float grey images scaled to 8 bits (Pillow's convert would clip).

    Values up to 255 are taken as 8-bit already; larger ones as 16-bit (divided by 257, so
    65535 -> 255); float images with values in [0, 1] are multiplied by 255.
    """
    if img.mode not in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return img
    arr = np.asarray(img, dtype=np.float64)
    top = float(arr.max()) if arr.size else 0.0
    if img.mode == "F" and top <= 1.0:
        arr = arr * 255.0
    elif top > 255.0:
        arr = arr / 257.0
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8))


class ImageTooLargeError(Exception):
    """An image whose header promises more pixels than MAX_IMAGE_PIXELS (a decompression bomb:
    a 140 KB PNG can decode to gigabytes); raised before any pixel is decoded."""


def _check_pixels(path: Path, img: Image.Image) -> None:
    width, height = img.size
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageTooLargeError(f"{path} ({width} x {height})")


def decode_image(path: Path, size: int | None, channels: int, resample: str) -> np.ndarray:
    """uint8 array [C, H, W] of one image file, converted and (when `size`) resized."""
    with Image.open(path) as img:
        _check_pixels(path, img)  # Image.open reads only the header
        img.load()
        img = _to_8bit(img)
        img = img.convert("RGB" if channels == 3 else "L")
        if size is not None and img.size != (size, size):
            img = img.resize((size, size), RESAMPLE[resample])
        arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _safe_decode(args: tuple[Path, int | None, int, str]) -> np.ndarray | Exception:
    try:
        return decode_image(*args)
    except Image.DecompressionBombError:  # over twice Pillow's limit: refused in Image.open
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0) // 1_000_000
        return ImageTooLargeError(f"{args[0]} (over {limit} megapixels)")
    except (ImageTooLargeError, UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        return exc


def _decode_jobs(
    jobs: list[tuple[Path, int | None, int, str]], workers: int | None
) -> list[np.ndarray | Exception]:
    """Decode results (arrays or exceptions) in order. Pillow's bomb warning is silenced: its
    limit is above MAX_IMAGE_PIXELS, which _check_pixels enforces, and it would print a line."""
    n_workers = workers or min(8, os.cpu_count() or 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            return list(
                tqdm(
                    pool.map(_safe_decode, jobs),
                    total=len(jobs),
                    desc="decoding images",
                    unit="img",
                    disable=None,
                    leave=False,
                )
            )


def _refuse_failures(entries: list[FileEntry], results: list[np.ndarray | Exception]) -> None:
    """One error for every file that failed: too large first, then unreadable."""
    big = [str(r) for r in results if isinstance(r, ImageTooLargeError)]
    if big:
        shown = "; ".join(big[:2]) + (f" and {len(big) - 2} more" if len(big) > 2 else "")
        raise DatasetCorruptError(
            f"{len(big)} image(s) exceed the limit of {MAX_IMAGE_PIXELS // 1_000_000} megapixels "
            f"per image: {shown}; downscale them or move them out of the dataset"
        )
    bad = [e.path for e, r in zip(entries, results, strict=True) if isinstance(r, Exception)]
    if bad:
        raise DatasetCorruptError(
            f"{len(bad)} file(s) cannot be read as images: {format_paths(bad)}; remove or "
            "replace them"
        )


def decode_all(
    entries: list[FileEntry], size: int | None, channels: int, resample: str, workers: int | None
) -> torch.Tensor:
    """Decode every entry into one uint8 tensor [N, C, S, S]; bad files are reported together."""
    results = _decode_jobs([(e.path, size, channels, resample) for e in entries], workers)
    _refuse_failures(entries, results)
    shapes = sorted({r.shape for r in results})  # type: ignore[union-attr]
    if len(shapes) > 1:
        raise ConfigError(
            f"images have different sizes ({', '.join(str(s[1:]) for s in shapes[:4])}); give a "
            "size (e.g. size=112) so they are resized to one"
        )
    if not results:
        return torch.empty((0, channels, size or 0, size or 0), dtype=torch.uint8)
    return torch.from_numpy(np.stack(results)).contiguous()  # type: ignore[arg-type]


def _cache_paths(key: str) -> tuple[Path, Path]:
    base = cache_dir() / "folders"
    return base / f"{key}.safetensors", base / f"{key}.json"


def load_cached(key: str, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(images uint8, labels int64, groups uint8) from the cache, or None on a miss."""
    tensors_path, meta_path = _cache_paths(key)
    if not (tensors_path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        tensors = load_file(str(tensors_path))
        images, labels, groups = tensors["images"], tensors["labels"], tensors["groups"]
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        log.warning("ignoring unreadable cache %s: %s", tensors_path, exc)
        return None
    if meta.get("key") != key or meta.get("version") != CACHE_VERSION or images.shape[0] != n:
        return None
    return images, labels, groups


def save_cached(
    key: str, images: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, meta: dict
) -> None:
    """Write the cache (tensors first, then the JSON that marks it complete); warn if we cannot."""
    tensors_path, meta_path = _cache_paths(key)
    try:
        tensors_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(tensors_path) as tmp:
            save_file(
                {"images": images.contiguous(), "labels": labels, "groups": groups},
                str(tmp),
                metadata={"key": key, "format": "meddistill-folder-cache"},
            )
        write_json_atomic(meta_path, {**meta, "key": key, "version": CACHE_VERSION})
    except OSError as exc:
        log.warning("could not write the image cache %s: %s", tensors_path, exc)
