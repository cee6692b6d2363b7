"""GSAM against a hand computation on a 2-parameter quadratic."""

from __future__ import annotations

import math

import pytest
import torch

from meddistill.training.gsam import GSAM


def loss_fn(w: torch.Tensor) -> torch.Tensor:
    # L(w) = w1^2 + 2 w2^2 + w1 w2, so grad = (2 w1 + w2, 4 w2 + w1)
    return w[0] ** 2 + 2 * w[1] ** 2 + w[0] * w[1]


def grad(w1: float, w2: float) -> tuple[float, float]:
    return 2 * w1 + w2, 4 * w2 + w1


def hand_gsam(w1, w2, rho, alpha, lr, adaptive):
    g1, g2 = grad(w1, w2)
    if adaptive:
        norm = math.sqrt((abs(w1) * g1) ** 2 + (abs(w2) * g2) ** 2)
        e1, e2 = rho * g1 / norm * w1**2, rho * g2 / norm * w2**2
    else:
        norm = math.sqrt(g1**2 + g2**2)
        e1, e2 = rho * g1 / norm, rho * g2 / norm
    h1, h2 = grad(w1 + e1, w2 + e2)
    # g_perp = g - (<g,h>/|h|^2) h
    c = (g1 * h1 + g2 * h2) / (h1**2 + h2**2)
    p1, p2 = g1 - c * h1, g2 - c * h2
    d1, d2 = h1 - alpha * p1, h2 - alpha * p2
    return w1 - lr * d1, w2 - lr * d2


@pytest.mark.parametrize("adaptive", [False, True])
def test_gsam_step_matches_hand_computation(adaptive: bool) -> None:
    w = torch.nn.Parameter(torch.tensor([1.0, 0.5], dtype=torch.float64))
    base = torch.optim.SGD([w], lr=0.1, momentum=0.0, weight_decay=0.0)
    opt = GSAM([w], base, rho=0.2, alpha=0.3, adaptive=adaptive)

    def closure() -> torch.Tensor:
        base.zero_grad()
        loss = loss_fn(w)
        loss.backward()
        return loss.detach()

    loss = opt.step(closure)
    assert loss.item() == pytest.approx(1.0 + 0.5 + 0.5)  # loss at w, not at w + e
    e1, e2 = hand_gsam(1.0, 0.5, rho=0.2, alpha=0.3, lr=0.1, adaptive=adaptive)
    assert w[0].item() == pytest.approx(e1, rel=1e-12)
    assert w[1].item() == pytest.approx(e2, rel=1e-12)
    # and it is not plain SGD: the SGD step would land at (1 - 0.25, 0.5 - 0.3)
    assert abs(w[0].item() - 0.75) > 1e-4


def test_gsam_non_adaptive_literal_values() -> None:
    # Worked by hand: g = (2.5, 3), |g| = sqrt(15.25); e = 0.2 g/|g| = (0.128037, 0.153644);
    # g' = grad(1.128037, 0.653644) = (2.909718, 3.742613);
    # <g,g'> / |g'|^2 = 0.823283;
    # g_perp = g - 0.823283 g' = (0.104480, -0.081229);
    # d = g' - 0.3 g_perp = (2.878374, 3.766982); w - 0.1 d = (0.712163, 0.123302).
    w = torch.nn.Parameter(torch.tensor([1.0, 0.5], dtype=torch.float64))
    base = torch.optim.SGD([w], lr=0.1)
    opt = GSAM([w], base, rho=0.2, alpha=0.3, adaptive=False)

    def closure() -> torch.Tensor:
        base.zero_grad()
        loss = loss_fn(w)
        loss.backward()
        return loss.detach()

    opt.step(closure)
    assert w.detach().tolist() == pytest.approx([0.712163, 0.123302], abs=2e-6)


def test_gsam_with_alpha_zero_is_sam_and_weight_decay_applies_at_w() -> None:
    # alpha = 0: the update direction is g' = grad at w + e; weight decay adds wd * w (unperturbed).
    w = torch.nn.Parameter(torch.tensor([1.0, 0.5], dtype=torch.float64))
    base = torch.optim.SGD([w], lr=0.1, weight_decay=0.5)
    opt = GSAM([w], base, rho=0.2, alpha=0.0, adaptive=False)

    def closure() -> torch.Tensor:
        base.zero_grad()
        loss = loss_fn(w)
        loss.backward()
        return loss.detach()

    opt.step(closure)
    g1, g2 = 2.5, 3.0
    norm = math.sqrt(g1**2 + g2**2)
    h1, h2 = grad(1.0 + 0.2 * g1 / norm, 0.5 + 0.2 * g2 / norm)
    expected = [1.0 - 0.1 * (h1 + 0.5 * 1.0), 0.5 - 0.1 * (h2 + 0.5 * 0.5)]
    assert w.detach().tolist() == pytest.approx(expected, rel=1e-12)
