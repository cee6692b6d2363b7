"""Generated image-folder datasets for tests (tests/ is on pytest's pythonpath)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def image_folder(root: Path, counts: dict[str, int], size: int = 8, seed: int = 0) -> Path:
    """root/<class>/<i>.png with random RGB pixels (distinct per image)."""
    rng = np.random.default_rng(seed)
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
    return root
