"""The adjoint (recomputation) gradient equals the unrolled-graph gradient."""

import pytest
import torch

from meddistill.augment.dsa import DSA
from meddistill.matching import losses
from meddistill.matching.student import StudentProblem, plan_steps, student_gradients
from meddistill.models import ModelSpec, build_model, flatten_params


@pytest.fixture(scope="module")
def setup():
    model = build_model(
        ModelSpec(depth=2, width=4), in_channels=2, num_classes=3, image_size=8, seed=3
    ).double()
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(9, 2, 8, 8, generator=gen, dtype=torch.float64)
    hard = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    soft = torch.randn(9, 3, generator=gen, dtype=torch.float64)
    w0 = flatten_params(model).double()
    target = w0 + 0.02 * torch.randn(w0.shape, generator=gen, dtype=torch.float64)
    mid = w0 + 0.01 * torch.randn(w0.shape, generator=gen, dtype=torch.float64)
    return model, images, hard, soft, w0, mid, target


def _grads(setup, mode, labels_kind, loss_kind, steps=8):
    model, images, hard, soft, w0, mid, target = setup
    dsa = DSA("color_crop_cutout_flip_scale_rotate")
    problem = StudentProblem(model, dsa)
    plans = plan_steps(9, steps, 4, torch.Generator().manual_seed(1), dsa, "cpu")
    labels = hard if labels_kind == "hard" else soft
    lr = torch.tensor(0.05, dtype=torch.float64)
    chosen = {}

    def select(states):
        k = losses.argmin_step(states, target) if loss_kind == "att" else len(states) - 1
        chosen["k"] = k
        return sorted({k, max(1, k // 2)})

    def loss_of(states):
        k = chosen["k"]
        total = losses.normalized_param_loss(states[k], w0, target)
        if loss_kind == "hoptm":
            total = total + 0.5 * losses.shape_potential_code(
                (w0, mid, target), (w0, states[k // 2], states[k])
            )
            mask = losses.per_element_loss(states[k].detach(), target) < 1e-4
            total = total + losses.masked_param_loss(states[k], w0, target, mask)
        return total

    loss, grads, states = student_gradients(
        problem, w0, images, labels, lr, plans, select, loss_of, mode=mode
    )
    return loss, grads, chosen["k"]


def _rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("loss_kind", ["mtt", "hoptm", "att"])
@pytest.mark.parametrize("labels_kind", ["hard", "soft"])
def test_adjoint_equals_unroll_float64(setup, loss_kind, labels_kind):
    l_u, g_u, k_u = _grads(setup, "unroll", labels_kind, loss_kind)
    l_a, g_a, k_a = _grads(setup, "adjoint", labels_kind, loss_kind)
    assert k_u == k_a
    assert l_a.item() == pytest.approx(l_u.item(), rel=1e-10)
    assert g_u.images.abs().sum() > 0
    assert _rel(g_a.images, g_u.images) <= 1e-4
    assert abs(g_a.syn_lr.item() - g_u.syn_lr.item()) <= 1e-4 * abs(g_u.syn_lr.item())
    if labels_kind == "soft":
        assert g_u.labels.abs().sum() > 0
        assert _rel(g_a.labels, g_u.labels) <= 1e-4
    else:
        assert g_a.labels is None and g_u.labels is None


def test_att_argmin_before_last_step_stops_the_adjoint_early(setup):
    """When ATT matches at step k < N, later steps contribute nothing (both modes agree)."""
    model, images, hard, soft, w0, mid, target = setup
    # a target equal to the state after 3 steps makes the argmin step 3 (distance 0)
    problem = StudentProblem(model, None)
    plans = plan_steps(9, 8, 9, torch.Generator().manual_seed(2), None, "cpu")
    lr = torch.tensor(0.05, dtype=torch.float64)
    from meddistill.matching.student import unroll_states

    states = unroll_states(problem, w0, images, hard, 0.05, plans)
    tgt = states[3] + 1e-6

    def select(st):
        return [losses.argmin_step(st, tgt)]

    def loss_of(st):
        (k,) = st
        return losses.normalized_param_loss(st[k], w0, tgt)

    out = {
        m: student_gradients(problem, w0, images, hard, lr, plans, select, loss_of, mode=m)
        for m in ("unroll", "adjoint")
    }
    assert _rel(out["adjoint"][1].images, out["unroll"][1].images) <= 1e-6
