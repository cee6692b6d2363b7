from __future__ import annotations

import numpy as np
import pytest
import torch

from meddistill.data.dataset import Normalization
from meddistill.data.preprocess import (
    convert_channels,
    normalize_inplace,
    resize_images,
    stratified_split,
    to_float01,
    unit_range_scale,
)
from meddistill.errors import ConfigError
from meddistill.utils import make_generator


def test_unit_range_scale() -> None:
    assert unit_range_scale(0.0, 1.0) == 1.0
    assert unit_range_scale(0.0, 200.0) == 255.0
    assert unit_range_scale(-0.1, 1.0) is None
    assert unit_range_scale(0.0, 256.0) is None
    assert unit_range_scale(0.0, float("nan")) is None


def test_to_float01() -> None:
    a = np.array([[0, 51, 255]], np.uint8)
    assert to_float01(a, 255.0)[0].tolist() == pytest.approx([0.0, 0.2, 1.0])
    assert to_float01(np.array([0.25]), 1.0).dtype == torch.float32


def test_resize_upsample_downsample_and_clamp() -> None:
    x = torch.zeros(2, 1, 4, 4)
    x[:, :, ::2, ::2] = 1.0  # a checkerboard makes bicubic overshoot
    up = resize_images(x, 8)
    assert up.shape == (2, 1, 8, 8)
    assert float(up.min()) >= 0.0 and float(up.max()) <= 1.0
    down = resize_images(torch.ones(1, 3, 8, 8) * 0.5, 4, "bilinear")
    assert torch.allclose(down, torch.full((1, 3, 4, 4), 0.5))
    same = torch.rand(1, 1, 4, 4, generator=make_generator(0))
    assert resize_images(same, 4) is same
    vol = resize_images(torch.ones(1, 1, 4, 4, 4), 2)
    assert vol.shape == (1, 1, 2, 2, 2) and torch.allclose(vol, torch.ones_like(vol))
    with pytest.raises(ConfigError, match="not valid for 3D"):
        resize_images(torch.ones(1, 1, 4, 4, 4), 2, "bicubic")


def test_convert_channels_luma_and_repeat() -> None:
    rgb = torch.tensor([1.0, 0.5, 0.0]).view(1, 3, 1, 1)
    grey = convert_channels(rgb, 1)
    assert grey.item() == pytest.approx(0.299 + 0.5 * 0.587)
    assert convert_channels(grey, 3).flatten().tolist() == pytest.approx([grey.item()] * 3)
    with pytest.raises(ConfigError):
        convert_channels(rgb, 2)


def test_normalize_inplace_matches_apply() -> None:
    x = torch.rand(5, 3, 4, 4, generator=make_generator(1))
    norm = Normalization((0.1, 0.2, 0.3), (0.5, 0.6, 0.7))
    want = norm.apply(x)
    got = normalize_inplace(x.clone(), norm)
    assert torch.equal(got, want)
    with pytest.raises(ConfigError, match="3 channels but the images have 1"):
        normalize_inplace(torch.zeros(1, 1, 2, 2), norm)


def test_normalization_from_images_hand_computed() -> None:
    # channel 0: values 0 and 1 (4 each); channel 1: constant 0.5 -> std clamped to 1e-6
    x = torch.zeros(2, 2, 2, 2)
    x[1, 0] = 1.0
    x[:, 1] = 0.5
    norm = Normalization.from_images(x)
    assert norm.mean == pytest.approx((0.5, 0.5))
    assert norm.std[0] == pytest.approx((0.25 * 8 / 7) ** 0.5)
    assert norm.std[1] == pytest.approx(1e-6)


def test_stratified_split_is_stratified_and_deterministic() -> None:
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 2)
    a = stratified_split(labels, 0.2, 0.2, make_generator(0))
    b = stratified_split(labels, 0.2, 0.2, make_generator(0))
    assert all(torch.equal(a[k], b[k]) for k in a)
    counts = {k: torch.bincount(labels[v], minlength=3).tolist() for k, v in a.items()}
    assert counts["test"] == [2, 1, 1]  # round(10*.2), round(5*.2), at least 1 of 2
    assert counts["val"] == [2, 1, 0]
    assert counts["train"] == [6, 3, 1]
    every = torch.sort(torch.cat(list(a.values()))).values
    assert torch.equal(every, torch.arange(17))
    assert all(torch.equal(v, torch.sort(v).values) for v in a.values())
    seeds = {
        tuple(stratified_split(labels, 0.2, 0.0, make_generator(s))["test"].tolist())
        for s in range(5)
    }
    assert len(seeds) > 1
    with pytest.raises(ConfigError):
        stratified_split(labels, 0.6, 0.5, make_generator(0))
