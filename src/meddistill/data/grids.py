"""PNG grids of images per class, so a person can look at what a synthetic set holds.

Volumes are shown as a row of evenly spaced axial slices per image. all.png has one row per
class, named in a left margin, so it can be read without the per-class files. Pillow only
(no matplotlib): these are written after every distillation.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

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


LABEL_MAX = 160  # widest class-name column of all.png, in pixels (longer names wrap)
LABEL_PAD = 6
FONT_SIZE = 13


def to_image(array: np.ndarray, scale: int = 1) -> Image.Image:
    """An [H, W, C] uint8 array as a Pillow image (gray for one channel), enlarged `scale`
    times with nearest-neighbour so pixels stay sharp."""
    img = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return img


def save_png(array: np.ndarray, path: str | Path, scale: int = 1) -> Path:
    """Write an [H, W, C] uint8 array as PNG (gray for one channel), enlarged `scale` times."""
    return _save(to_image(array, scale), path)


def _save(img: Image.Image, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)


def label_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's own default font (no font file needed), at a readable size where supported."""
    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: object, width: int, lines: int) -> list[str]:
    """`text` in at most `lines` lines of at most `width` pixels; what does not fit ends '...'."""
    out: list[str] = []
    words = text.split() or [text]
    while words and len(out) < lines:
        line = words.pop(0)
        while words and draw.textlength(f"{line} {words[0]}", font=font) <= width:
            line = f"{line} {words.pop(0)}"
        out.append(line)
    if words or any(draw.textlength(t, font=font) > width for t in out):
        last = out[-1]
        while last and draw.textlength(last + "...", font=font) > width:
            last = last[:-1]
        out[-1] = last + "..."
    return out


def label_rows(img: Image.Image, names: list[str], heights: list[int]) -> Image.Image:
    """`img` with a white left margin naming each row (row r is heights[r] pixels tall)."""
    font = label_font()
    probe = ImageDraw.Draw(img)
    text_w = min(LABEL_MAX, max(int(probe.textlength(n, font=font)) for n in names) + 1)
    line_h = FONT_SIZE + 3
    out = Image.new(img.mode, (img.width + text_w + 2 * LABEL_PAD, img.height), "white")
    out.paste(img, (text_w + 2 * LABEL_PAD, 0))
    draw = ImageDraw.Draw(out)
    top = 0
    for name, height in zip(names, heights, strict=True):
        lines = _wrap(draw, name, font, text_w, max(1, height // line_h))
        y = top + (height - line_h * len(lines)) // 2
        for i, line in enumerate(lines):
            draw.text((LABEL_PAD, y + i * line_h), line, fill="black", font=font)
        top += height
    return out


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
    """One PNG per class (class_<index>_<name>.png) plus all.png with one row per class, each
    row named in a left margin."""
    out = Path(folder)
    hard = labels if labels.dim() == 1 else labels.argmax(dim=1)
    pixels = to_pixels(images, normalization)
    side = images.shape[-1]
    scale = scale or max(1, 112 // side)
    written = []
    rows, names = [], []
    for c, name in enumerate(class_names):
        idx = torch.nonzero(hard.cpu() == c).flatten().numpy()
        if idx.size == 0:
            continue
        g = grid(pixels[idx])
        rows.append(grid(pixels[idx], columns=max(10, idx.size)))
        names.append(str(name))
        written.append(save_png(g, out / f"class_{c:02d}_{safe_name(name)}.png", scale))
    if rows:
        width = max(r.shape[1] for r in rows)
        padded = [
            np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows
        ]
        img = to_image(np.concatenate(padded, axis=0), scale)
        img = label_rows(img, names, [r.shape[0] * scale for r in rows])
        written.append(_save(img, out / "all.png"))
    return written
