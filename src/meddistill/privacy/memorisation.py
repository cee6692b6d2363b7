"""Memorisation: is a synthetic image closer to one patient's training image than unseen
patients' images are?

For every synthetic image: its nearest train image (d_tr) and nearest held-out image (d_ho),
and d_tr / d_ho (well below 1: the image sits by a training image rather than among the
data). The yardstick comes from real images no distillation saw: the distance from each
held-out image to its nearest train image. A synthetic image is a "near copy" when d_tr is
below the q-quantile of those distances (q = 1 %: closer to a training image than 99 % of
unseen patients are); an exact copy (d_tr = 0) is always one. Unseen-like images would be
flagged at rate q by chance, so the count is also set against Binomial(N, q) (`excess_p`).
In pixel space an image can also be a copy outright: identical to its nearest train image
once saved as 8-bit pixels (`copies`, every pixel within one grey level).

The 1 % tail misses a set whose every image is a training image with texture added (a short
matching from real images): each sits a little off its patient, but nearer to it than to any
unseen patient. So the whole distribution is compared too: the ratio d_tr / d_ho of the
synthetic images against the same ratio of held-out images (their nearest train image over
their nearest other held-out image, a yardstick with the same set sizes), by a one-sided
Mann-Whitney U test (`shift_p`: small when the synthetic images sit nearer the training
patients than unseen patients do).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
from scipy.stats import binom, mannwhitneyu

from meddistill.data.dataset import Normalization
from meddistill.data.grids import to_pixels
from meddistill.privacy.nearest import nearest

COPY_LEVELS = 1  # grey levels (of 255) within which an 8-bit image counts as a copy


@dataclass
class SpaceReport:
    """The memorisation numbers of one space (pixel or features)."""

    space: str
    quantile: float
    threshold: float
    d_train: np.ndarray
    d_heldout: np.ndarray
    train_index: np.ndarray
    heldout_index: np.ndarray
    calibration: np.ndarray  # each held-out image's distance to its nearest train image
    flagged: np.ndarray  # bool [N]: near copies
    copies: np.ndarray | None = None  # bool [N]: 8-bit copies (pixel space only)
    heldout_ratio: np.ndarray | None = None  # each held-out image's d_tr / d_(other held-out)

    @property
    def count(self) -> int:
        return int(self.flagged.sum())

    @property
    def fraction(self) -> float:
        return self.count / max(1, self.flagged.size)

    @property
    def excess_p(self) -> float:
        """P(Binomial(N, q) >= count): how often unseen-like images would be flagged as much."""
        return float(binom.sf(self.count - 1, self.flagged.size, self.quantile))

    @property
    def ratio(self) -> np.ndarray:
        return _ratios(self.d_train, self.d_heldout)

    @cached_property
    def shift_p(self) -> float:
        """One-sided Mann-Whitney p that the synthetic ratios are smaller than held-out
        images' (1.0 without a yardstick); infinite ratios (a zero denominator) rank last."""
        if self.heldout_ratio is None or self.heldout_ratio.size < 2 or self.flagged.size < 2:
            return 1.0
        big = np.finfo(float).max
        ours, theirs = (np.nan_to_num(r, posinf=big) for r in (self.ratio, self.heldout_ratio))
        return float(mannwhitneyu(ours, theirs, alternative="less").pvalue)

    def closest(self, k: int) -> np.ndarray:
        """Indices of the `k` synthetic images nearest to a train image, nearest first."""
        return np.argsort(self.d_train, kind="stable")[:k]

    def to_dict(self) -> dict[str, Any]:
        copies = self.copies if self.copies is not None else np.zeros_like(self.flagged)
        per_image = [
            {"index": i, "d_train": float(self.d_train[i]), "train_index": int(self.train_index[i]),
             "d_heldout": float(self.d_heldout[i]),
             "heldout_index": int(self.heldout_index[i]), "ratio": float(self.ratio[i]),
             "near_copy": bool(self.flagged[i]), "copy_8bit": bool(copies[i])}
            for i in range(self.flagged.size)
        ]  # fmt: skip
        cal = self.calibration
        return {
            "space": self.space, "quantile": self.quantile, "threshold": self.threshold,
            "near_copies": self.count, "near_copy_fraction": self.fraction,
            "excess_p": self.excess_p,
            "copies_8bit": None if self.copies is None else int(self.copies.sum()),
            "calibration": {"heldout_images": int(cal.size), "min": float(cal.min()),
                            "median": float(np.median(cal)), "max": float(cal.max())},
            "median_ratio": float(np.median(self.ratio)), "shift_p": self.shift_p,
            "heldout_median_ratio": None if self.heldout_ratio is None
            else float(np.median(self.heldout_ratio)),
            "images": per_image,
        }  # fmt: skip


def memorisation(
    syn: torch.Tensor,
    train: torch.Tensor,
    heldout: torch.Tensor,
    *,
    quantile: float,
    space: str,
) -> SpaceReport:
    """Nearest train and held-out neighbours of every row of `syn`, and the near-copy flags
    calibrated on held-out-to-train distances (all [N, ...] in one space)."""
    d_tr, i_tr = nearest(syn, train)
    d_ho, i_ho = nearest(syn, heldout)
    calibration = nearest(heldout, train)[0].numpy()
    among = nearest(heldout, heldout, skip_self=True)[0].numpy() if len(heldout) > 1 else None
    threshold = float(np.quantile(calibration, quantile))
    d_train = d_tr.numpy()
    return SpaceReport(
        space=space, quantile=float(quantile), threshold=threshold, d_train=d_train,
        d_heldout=d_ho.numpy(), train_index=i_tr.numpy(), heldout_index=i_ho.numpy(),
        calibration=calibration, flagged=(d_train < threshold) | (d_train == 0),
        heldout_ratio=None if among is None else _ratios(calibration, among),
    )  # fmt: skip


def _ratios(near: np.ndarray, far: np.ndarray) -> np.ndarray:
    """near / far per image, infinite where far is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(far > 0, near / far, np.inf)


def copies_8bit(
    syn: torch.Tensor, train: torch.Tensor, train_index: np.ndarray, norm: Normalization
) -> np.ndarray:
    """Which synthetic images equal their nearest train image once saved as 8-bit pixels."""
    a = to_pixels(syn, norm).astype(np.int16)
    b = to_pixels(train[torch.as_tensor(train_index, device=train.device)], norm).astype(np.int16)
    return np.abs(a - b).reshape(a.shape[0], -1).max(axis=1) <= COPY_LEVELS
