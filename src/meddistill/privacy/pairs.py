"""The closest (synthetic, train) pairs side by side, so a person can see what "near copy"
means for this set: one row per pair, the synthetic image left, its nearest training image
right, nearest pair first (pixels de-normalised with the set's normalisation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from meddistill.data.dataset import Normalization
from meddistill.data.grids import grid, save_png, to_pixels

SIDE = 96  # pixels a tile is enlarged towards (nearest neighbour), so 28 px images are legible


def save_pairs(
    syn: torch.Tensor,
    train: torch.Tensor,
    order: np.ndarray,
    train_index: np.ndarray,
    norm: Normalization,
    path: str | Path,
) -> Path:
    """Write the pairs (syn[i], train[train_index[i]]) for i in `order` as one PNG."""
    pick = torch.as_tensor(np.asarray(order), dtype=torch.long)
    left = to_pixels(syn[pick.to(syn.device)], norm)
    right = to_pixels(train[torch.as_tensor(train_index[order]).to(train.device)], norm)
    tiles = np.stack([left, right], axis=1).reshape(-1, *left.shape[1:])
    scale = max(1, SIDE // int(syn.shape[-1]))
    return save_png(grid(tiles, columns=2), path, scale=scale)
