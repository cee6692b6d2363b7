"""Memorisation on constructed sets: copies of train images are flagged with distance 0,
images like unseen ones are not; the verdict's rules on hand-made numbers; the pairs PNG."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from meddistill.data.dataset import Normalization
from meddistill.privacy.attack import AttackStats
from meddistill.privacy.memorisation import copies_8bit, memorisation
from meddistill.privacy.nearest import nearest
from meddistill.privacy.pairs import save_pairs
from meddistill.privacy.verdict import verdict

NORM = Normalization((0.5,), (0.25,))


def draws(n: int, seed: int) -> torch.Tensor:
    """n images [1, 8, 8] of one distribution (normalised values)."""
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_nearest_is_exact_and_agrees_with_brute_force():
    queries, refs = draws(40, 1), draws(300, 2)
    dist, index = nearest(queries, refs, chunk=7)
    brute = torch.cdist(queries.flatten(1).double(), refs.flatten(1).double())
    assert torch.equal(index, brute.argmin(dim=1))
    assert torch.allclose(dist, brute.min(dim=1).values, rtol=1e-12, atol=0)
    d0, i0 = nearest(refs[[5, 17]], refs)
    assert d0.tolist() == [0.0, 0.0] and i0.tolist() == [5, 17]


def test_copies_of_three_train_images_are_flagged_with_distance_zero():
    train, heldout = draws(200, 1), draws(100, 2)
    syn = train[[3, 50, 120]].clone()
    rep = memorisation(syn, train, heldout, quantile=0.01, space="pixel")
    assert rep.count == 3 and rep.fraction == 1.0
    assert rep.d_train.tolist() == [0.0, 0.0, 0.0]
    assert rep.train_index.tolist() == [3, 50, 120]
    assert (rep.ratio == 0).all() and rep.threshold > 0
    assert rep.excess_p < 1e-5  # three of three at q = 1 %: far beyond chance
    assert copies_8bit(syn, train, rep.train_index, NORM).all()
    data = rep.to_dict()
    assert data["near_copies"] == 3 and data["images"][1]["train_index"] == 50


def test_images_like_unseen_ones_are_not_flagged():
    train, heldout, fresh = draws(200, 1), draws(100, 2), draws(10, 3)
    rep = memorisation(fresh, train, heldout, quantile=0.01, space="pixel")
    assert rep.count == 0 and rep.excess_p == 1.0
    assert (rep.d_train > rep.threshold).all()
    assert 0.5 < float(np.median(rep.ratio)) < 2.0  # as near the held-out images as the train ones
    assert not copies_8bit(fresh, train, rep.train_index, NORM).any()


def test_an_almost_copy_is_a_copy_in_8_bits():
    train = draws(20, 1)
    moved = train[[4]] + 0.2 / 255 / 0.25  # a fifth of a grey level
    rep = memorisation(moved, train, draws(20, 2), quantile=0.01, space="pixel")
    assert rep.train_index.tolist() == [4] and rep.d_train[0] > 0
    assert copies_8bit(moved, train, rep.train_index, NORM).all()


def test_training_images_with_texture_added_sit_nearer_their_patients():
    # 20 training images plus noise of 1.5x their own scale: none is a near copy by the 1 %
    # tail, yet each is nearer its patient than unseen images are to theirs
    train, heldout = draws(200, 1), draws(100, 2)
    moved = memorisation(train[:20] + 1.5 * draws(20, 5), train, heldout, quantile=0.01,
                         space="pixel")  # fmt: skip
    assert moved.count == 0
    assert np.median(moved.ratio) < 0.9 < np.median(moved.heldout_ratio)
    assert moved.shift_p < 1e-6
    fresh = memorisation(draws(20, 3), train, heldout, quantile=0.01, space="pixel")
    assert fresh.shift_p > 0.1  # unseen-like images: no shift
    chance = attack(0.5, (0.47, 0.53))
    amber = verdict(moved, fresh, chance)
    assert amber.light == "amber" and amber.fired == ["A4"]
    assert "sit nearer to training patients than unseen patients' images do" in amber.paragraph
    assert amber.numbers["shift_p_pixel"] < 1e-6
    assert verdict(fresh, fresh, chance).light == "green"
    assert moved.to_dict()["heldout_median_ratio"] > 0.9


def test_nearest_other_row_skips_itself():
    refs = draws(30, 4)
    dist, index = nearest(refs, refs, chunk=7, skip_self=True)
    brute = torch.cdist(refs.flatten(1).double(), refs.flatten(1).double())
    brute.fill_diagonal_(float("inf"))
    assert torch.equal(index, brute.argmin(dim=1))
    assert torch.allclose(dist, brute.min(dim=1).values, rtol=1e-12, atol=0)


def attack(auc: float, ci: tuple[float, float], tpr_ci=(0.0, 0.02), n=1000) -> AttackStats:
    return AttackStats(auc, ci, {0.01: 0.01, 0.001: 0.0}, {0.01: tpr_ci, 0.001: (0.0, 0.0)},
                       n, n, 200)  # fmt: skip


def test_verdict_rules():
    train, heldout = draws(200, 1), draws(100, 2)
    copies = memorisation(train[[3, 4]], train, heldout, quantile=0.01, space="pixel")
    copies.copies = np.array([True, True])
    fresh = memorisation(draws(10, 3), train, heldout, quantile=0.01, space="pixel")
    chance = attack(0.5, (0.47, 0.53))
    red = verdict(copies, fresh, chance)
    assert red.light == "red" and red.fired[:2] == ["R1", "R2"]
    assert "do not share" in red.paragraph and "2 of its 2 images are copies" in red.paragraph
    green = verdict(fresh, fresh, chance)
    assert green.light == "green" and green.fired == []
    assert "None of its 10 images" in green.paragraph and "AUC 0.50" in green.paragraph
    amber = verdict(fresh, fresh, attack(0.53, (0.51, 0.55)))
    assert amber.light == "amber" and amber.fired == ["A3"]
    assert verdict(fresh, fresh, attack(0.6, (0.57, 0.63))).fired == ["R3"]
    assert verdict(fresh, fresh, attack(0.5, (0.47, 0.53), (0.04, 0.08))).light == "red"
    # 99 non-members: 1 % FPR allows no false alarm, so the TPR rules do not apply
    assert verdict(fresh, fresh, attack(0.5, (0.47, 0.53), (0.04, 0.08), n=99)).light == "green"
    assert red.to_dict()["numbers"]["copies_8bit"] == 2


def test_verdict_reads_lira_too_when_the_audit_ran_shadows():
    train, heldout = draws(200, 1), draws(100, 2)
    fresh = memorisation(draws(10, 3), train, heldout, quantile=0.01, space="pixel")
    chance = attack(0.5, (0.47, 0.53))
    green = verdict(fresh, fresh, chance, chance)
    assert green.light == "green" and "LiRA" in green.paragraph
    assert green.numbers["lira_auc"] == 0.5
    red = verdict(fresh, fresh, chance, attack(0.7, (0.62, 0.78)))
    assert red.light == "red" and red.fired == ["R3"]
    assert "A shadow-model attack (LiRA) on models trained on it reaches AUC 0.70" in red.paragraph
    amber = verdict(fresh, fresh, chance, attack(0.53, (0.51, 0.55)))
    assert amber.fired == ["A3"] and "(LiRA)" in amber.paragraph
    both = verdict(fresh, fresh, attack(0.53, (0.51, 0.55)), attack(0.7, (0.62, 0.78)))
    assert both.fired == ["R3"]  # the red rule of one attack outranks the amber of the other


def test_pairs_png_puts_each_image_beside_its_nearest_train_image(tmp_path):
    train = draws(30, 1).clamp(-2, 2)
    syn = train[[7, 2]]
    rep = memorisation(syn, train, draws(30, 2), quantile=0.01, space="pixel")
    path = save_pairs(syn, train, rep.closest(2), rep.train_index, NORM, tmp_path / "p.png")
    img = np.asarray(Image.open(path))
    assert img.shape == (2 * (8 + 2) * 12 + 2 * 12, 2 * (8 + 2) * 12 + 2 * 12)
    scale = 12
    left = img[2 * scale : 10 * scale : scale, 2 * scale : 10 * scale : scale]
    right = img[2 * scale : 10 * scale : scale, 12 * scale : 20 * scale : scale]
    assert np.array_equal(left, right)  # a copy: both tiles hold the same pixels
