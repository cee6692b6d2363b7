"""PNG grids of images per class, so a person can look at what a synthetic set holds.

Volumes are shown as a row of evenly spaced axial slices per image. Pillow only (no
matplotlib): these are written after every distillation.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from meddistill.data.dataset import Normalization
from meddistill.utils import atomic_path


def to_pixels(images: torch.Tensor, normalization: Normalization) -> np.ndarray:
    """Normalised [N, C, ...] images -> uint8 in [0, 255], same layout."""
    pixels = normalization.invert(images.detach().cpu().float()).clamp(0, 1)
    return (pixels * 255.0).round().to(torch.uint8).numpy()


def _tile(image: np.ndarray, slices: int) -> np.ndarray:
    """[C, H, W] -> [H, W, C]; [C, D, H, W] -> slices side by side [H, slices*W, C]."""
    if image.ndim == 4:
        depth = image.shape[1]
        picks = np.linspace(0, depth - 1, num=min(slices, depth)).round().astype(int)
        image = np.concatenate([image[:, d] for d in picks], axis=2)
    return np.transpose(image, (1, 2, 0))


def grid(images: np.ndarray, columns: int = 10, pad: int = 2, slices: int = 5) -> np.ndarray:
    """Tile uint8 images [N, C, ...] into one [H, W, C] array with white padding."""
    tiles = [_tile(im, slices) for im in images]
    h, w, c = tiles[0].shape
    cols = max(1, min(columns, len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, q = divmod(i, cols)
        out[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + q * (w + pad) : pad + q * (w + pad) + w,
        ] = tile
    return out


def save_png(array: np.ndarray, path: str | Path, scale: int = 1) -> Path:
    """Write an [H, W, C] uint8 array as PNG (gray for one channel), enlarged `scale` times."""
    img = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "class"


def save_class_grids(
    images: torch.Tensor,
    labels: torch.Tensor,
    class_names: list[str],
    normalization: Normalization,
    folder: str | Path,
    scale: int = 0,
) -> list[Path]:
    """One PNG per class (class_<index>_<name>.png) plus all.png with one row per class."""
    out = Path(folder)
    hard = labels if labels.dim() == 1 else labels.argmax(dim=1)
    pixels = to_pixels(images, normalization)
    side = images.shape[-1]
    scale = scale or max(1, 112 // side)
    written = []
    rows = []
    for c, name in enumerate(class_names):
        idx = torch.nonzero(hard.cpu() == c).flatten().numpy()
        if idx.size == 0:
            continue
        g = grid(pixels[idx])
        rows.append(grid(pixels[idx], columns=max(10, idx.size)))
        written.append(save_png(g, out / f"class_{c:02d}_{safe_name(name)}.png", scale))
    if rows:
        width = max(r.shape[1] for r in rows)
        padded = [
            np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows
        ]
        written.append(save_png(np.concatenate(padded, axis=0), out / "all.png", scale))
    return written
