"""Flat-parameter helpers: exact agreement with the module, first and second derivatives."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from meddistill.errors import ConfigError
from meddistill.models import (
    ModelSpec,
    ParamLayout,
    build_model,
    count_params,
    flatten_params,
    functional_forward,
    load_flat_,
    param_names_and_slices,
    unflatten,
)


def _small(seed: int = 0, dtype: torch.dtype = torch.float32, **spec) -> torch.nn.Module:
    spec = {"width": 8, "depth": 2, **spec}
    model = build_model(ModelSpec(**spec), in_channels=2, num_classes=3, image_size=8, seed=seed)
    return model.to(dtype)


def _batch(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(4, 2, 8, 8, generator=g, dtype=dtype), torch.tensor([0, 1, 2, 1])


def test_layout_matches_named_parameters() -> None:
    model = _small()
    layout = ParamLayout.from_model(model)
    names = [n for n, _ in model.named_parameters()]
    assert list(layout.names) == names
    assert layout.total == count_params(model) == flatten_params(model).numel()
    slices = param_names_and_slices(model)
    assert slices[0][1].start == 0 and slices[-1][1].stop == layout.total
    for (_, a), (_, b) in zip(slices, slices[1:], strict=False):
        assert a.stop == b.start
    assert ParamLayout.from_dict(layout.to_dict()) == layout


def test_flatten_unflatten_roundtrip_and_views() -> None:
    model = _small()
    flat = flatten_params(model)
    parts = unflatten(flat, ParamLayout.from_model(model))
    for name, p in model.named_parameters():
        assert torch.equal(parts[name], p)
        assert parts[name].untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()
    with pytest.raises(ConfigError, match="another architecture"):
        unflatten(flat[:-1], ParamLayout.from_model(model))


def test_functional_forward_equals_module() -> None:
    model = _small()
    x, _ = _batch()
    assert torch.allclose(functional_forward(model, flatten_params(model), x), model(x), atol=1e-6)


def test_load_flat_copies_into_module() -> None:
    a, b = _small(seed=1), _small(seed=2)
    x, _ = _batch()
    assert not torch.allclose(a(x), b(x))
    load_flat_(b, flatten_params(a))
    assert torch.equal(flatten_params(a), flatten_params(b))
    assert torch.allclose(a(x), b(x), atol=1e-6)


def test_gradients_wrt_flat_and_x_match_module() -> None:
    model = _small()
    x, y = _batch()
    x_mod = x.clone().requires_grad_(True)
    F.cross_entropy(model(x_mod), y).backward()
    module_grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])

    flat = flatten_params(model).requires_grad_(True)
    x_fun = x.clone().requires_grad_(True)
    loss = F.cross_entropy(functional_forward(model, flat, x_fun), y)
    g_flat, g_x = torch.autograd.grad(loss, (flat, x_fun))
    assert torch.allclose(g_flat, module_grad, atol=1e-6)
    assert torch.allclose(g_x, x_mod.grad, atol=1e-7)


def test_second_order_hvp_matches_finite_differences() -> None:
    model = _small(dtype=torch.float64, act="gelu")  # smooth, so finite differences are exact-ish
    x, y = _batch(torch.float64)
    w = flatten_params(model)
    v = torch.randn(w.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)

    def grad_at(flat: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        loss = F.cross_entropy(functional_forward(model, flat, x), y)
        return torch.autograd.grad(loss, flat, create_graph=create_graph)[0]

    flat = w.clone().requires_grad_(True)
    g = grad_at(flat, create_graph=True)
    (hvp,) = torch.autograd.grad(g @ v, flat)
    eps = 1e-5
    fd = (grad_at((w + eps * v).requires_grad_()) - grad_at((w - eps * v).requires_grad_())) / (
        2 * eps
    )
    assert torch.allclose(hvp, fd, rtol=1e-4, atol=1e-7)


def test_grad_of_grad_norm_reaches_images() -> None:
    """What gradient matching (DC) needs: d ||dL/dw||^2 / dx through the functional call."""
    model = _small()
    x, y = _batch()
    x = x.requires_grad_(True)
    flat = flatten_params(model).requires_grad_(True)
    loss = F.cross_entropy(functional_forward(model, flat, x), y)
    (g,) = torch.autograd.grad(loss, flat, create_graph=True)
    gx, gw = torch.autograd.grad(g.pow(2).sum(), (x, flat))
    assert torch.isfinite(gx).all() and gx.abs().sum() > 0
    assert torch.isfinite(gw).all() and gw.abs().sum() > 0


def test_batchnorm_buffers_pass_through() -> None:
    model = _small(norm="batchnorm").eval()
    x, _ = _batch()
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    buffers = {n: (b + 1.0 if n.endswith("running_mean") else b) for n, b in buffers.items()}
    shifted = functional_forward(model, flatten_params(model), x, buffers)
    assert not torch.allclose(shifted, model(x))
    assert torch.allclose(functional_forward(model, flatten_params(model), x), model(x), atol=1e-6)
