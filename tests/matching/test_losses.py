"""Loss terms against hand-computed values."""

import math

import pytest
import torch
import torch.nn.functional as F

from meddistill.matching import losses


def test_normalized_param_loss_hand_value():
    start = torch.tensor([0.0, 0.0])
    target = torch.tensor([3.0, 4.0])  # ||target - start||^2 = 25
    w = torch.tensor([3.0, 2.0])  # ||w - target||^2 = 4
    assert losses.normalized_param_loss(w, start, target).item() == pytest.approx(4 / 25)


def test_kappa_schedule_eq7():
    assert losses.kappa_schedule(0, 2.0, 1.5, 500) == 2.0
    assert losses.kappa_schedule(499, 2.0, 1.5, 500) == 2.0
    assert losses.kappa_schedule(500, 2.0, 1.5, 500) == pytest.approx(3.0)
    assert losses.kappa_schedule(1234, 2.0, 1.5, 500) == pytest.approx(2.0 * 1.5**2)


def test_easy_to_complex_mask_cumulative_and_per_iteration():
    l1 = torch.tensor([0.1, 0.5, 0.9, 0.2])
    m1 = losses.easy_to_complex_mask(l1, 0.3)
    assert m1.tolist() == [True, False, False, True]
    l2 = torch.tensor([0.8, 0.1, 0.9, 0.9])
    assert losses.easy_to_complex_mask(l2, 0.3, m1, cumulative=True).tolist() == [
        True,
        True,
        False,
        True,
    ]
    assert losses.easy_to_complex_mask(l2, 0.3, m1, cumulative=False).tolist() == [
        False,
        True,
        False,
        False,
    ]
    exclude = torch.tensor([False, True, False, False])
    assert losses.easy_to_complex_mask(l2, 0.3, m1, exclude=exclude).tolist() == [
        True,
        False,
        False,
        True,
    ]


def test_masked_param_loss_hand_value_and_empty_mask():
    start = torch.tensor([0.0, 0.0, 0.0])
    target = torch.tensor([1.0, 2.0, 3.0])
    w = torch.tensor([0.5, 0.0, 0.0], requires_grad=True)
    mask = torch.tensor([True, True, False])
    # numerator: 0.25 + 4 ; denominator: 1 + 4
    value = losses.masked_param_loss(w, start, target, mask)
    assert value.item() == pytest.approx(4.25 / 5)
    empty = losses.masked_param_loss(w, start, target, torch.zeros(3, dtype=torch.bool))
    assert empty.item() == 0.0
    (g,) = torch.autograd.grad(empty, w)
    assert torch.equal(g, torch.zeros(3)) and not torch.isnan(g).any()


def test_angle_cosine_eq3_right_angle_and_straight_line():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])
    assert losses.angle_cosine(a, b, torch.tensor([0.0, 2.0])).item() == pytest.approx(
        0.0, abs=1e-7
    )
    assert losses.angle_cosine(a, b, torch.tensor([-3.0, 0.0])).item() == pytest.approx(-1.0)


def test_shape_potential_paper_form_smooth_l1_of_middle_angle():
    t = (torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.0]))  # cos = -1
    s = (torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]))  # cos = 0
    # smooth-L1 with beta 1: |d| = 1 -> 0.5 * 1^2 = 0.5
    assert losses.shape_potential_paper(t, s).item() == pytest.approx(0.5)
    assert losses.shape_potential_paper(t, t).item() == pytest.approx(0.0, abs=1e-7)


def test_shape_potential_code_form_matches_reference_construction():
    gen = torch.Generator().manual_seed(0)
    t = tuple(torch.randn(7, generator=gen) for _ in range(3))
    s = tuple(torch.randn(7, generator=gen) for _ in range(3))

    def ref(points):  # the reference: pairwise differences, normalised, batched Gram
        p = torch.stack(points)
        d = F.normalize(p.unsqueeze(0) - p.unsqueeze(1), p=2, dim=2)
        return torch.bmm(d, d.transpose(1, 2)).view(-1)

    expected = F.smooth_l1_loss(ref(s), ref(t))
    assert losses.shape_potential_code(t, s).item() == pytest.approx(expected.item(), rel=1e-6)


def test_overlap_loss_eq4_hand_value():
    # One class, foundation {a}, complement {b}; 1-D images; sigma = 1.
    images = torch.tensor([[0.0], [1.0]])
    labels = torch.tensor([0, 0])
    foundation = torch.tensor([True, False])
    k_ab = math.exp(-0.5)
    # 2 k(f, c) - k(c, c) - k(f, f) = 2 e^{-1/2} - 1 - 1
    value = losses.overlap_loss(images, labels, foundation, sigma=1.0)
    assert value.item() == pytest.approx(2 * k_ab - 2)


def test_overlap_loss_ignores_other_classes_and_pushes_apart():
    images = torch.tensor([[0.0], [0.5], [0.0], [0.5]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    foundation = torch.tensor([True, False, True, False])
    value = losses.overlap_loss(images, labels, foundation, sigma=1.0)
    per_class = 2 * math.exp(-0.125) - 2
    assert value.item() == pytest.approx(2 * per_class)
    (g,) = torch.autograd.grad(value, images)
    # descending the loss moves the foundation image away from the complement one
    assert g[0, 0] > 0 and g[1, 0] < 0


def test_overlap_loss_empty_complement_is_zero():
    images = torch.randn(2, 3, requires_grad=True)
    value = losses.overlap_loss(images, torch.tensor([0, 1]), torch.tensor([True, True]), 1.0)
    assert value.item() == 0.0


def test_argmin_step_picks_closest_state_in_l1():
    target = torch.tensor([1.0, 1.0])
    states = [
        torch.zeros(2),
        torch.tensor([3.0, 0.0]),
        torch.tensor([1.0, 0.5]),
        torch.tensor([2.0, 2.0]),
    ]
    assert losses.argmin_step(states, target) == 2


def test_median_sigma_uses_same_class_pairs_only():
    images = torch.tensor([[0.0], [3.0], [10.0], [14.0], [100.0]])
    labels = torch.tensor([0, 0, 1, 1, 2])
    # same-class distances: 3 and 4 -> median of [3, 4] (torch picks the lower middle) = 3
    assert losses.median_sigma(images, labels) == pytest.approx(3.0)
    alone = torch.randn(3, 16)
    assert losses.median_sigma(alone, torch.tensor([0, 1, 2])) == pytest.approx(4.0)
