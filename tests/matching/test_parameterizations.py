"""The dct image parameterisation (FreD): the transform's values, its gradient, and the engine
learning, resuming and exporting sets in it."""

import math

import pytest
import torch
from test_engine import _cfg, _distiller

from meddistill.data.synthetic import SyntheticSet
from meddistill.errors import ConfigError
from meddistill.matching.loop import CHECKPOINT
from meddistill.matching.parameterizations import (
    DCTParam,
    build_parameterization,
    dct_matrix,
    default_keep,
)


def test_dct_matrix_values_by_hand():
    # n = 2: rows sqrt(1/2) * [1, 1] and sqrt(2/2) * [cos(pi/4), cos(3pi/4)]
    b = dct_matrix(2, 2, dtype=torch.float64)
    r = math.sqrt(0.5)
    assert torch.allclose(b, torch.tensor([[r, r], [r, -r]], dtype=torch.float64))
    full = dct_matrix(8, 8, dtype=torch.float64)
    assert torch.allclose(full @ full.T, torch.eye(8, dtype=torch.float64), atol=1e-12)


def test_constant_image_is_one_dc_coefficient():
    # a constant image v of n x n pixels: DC coefficient v * n (orthonormal), nothing else
    param = DCTParam((1, 4, 4), keep=2, images_per_class=1)
    code = param.encode(torch.full((1, 1, 4, 4), 3.0))["codes"]
    assert torch.allclose(code, torch.tensor([[[[12.0, 0.0], [0.0, 0.0]]]]), atol=1e-5)
    assert torch.allclose(param.render({"codes": code}), torch.full((1, 1, 4, 4), 3.0))


def test_render_projects_onto_low_frequencies():
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(3, 2, 8, 8, generator=gen, dtype=torch.float64)
    full = DCTParam((2, 8, 8), keep=8, images_per_class=1)
    full._bases = {8: dct_matrix(8, 8, dtype=torch.float64)}
    assert torch.allclose(full.render(full.encode(images)), images, atol=1e-10)  # invertible
    low = DCTParam((2, 8, 8), keep=3, images_per_class=1)
    low._bases = {8: dct_matrix(8, 3, dtype=torch.float64)}
    once = low.render(low.encode(images))
    assert torch.allclose(low.render(low.encode(once)), once, atol=1e-10)  # a projection
    assert once.norm() < images.norm()


def test_three_dimensional_volumes():
    param = DCTParam((1, 6, 6, 6), keep=2, images_per_class=1)
    code = param.encode(torch.ones(2, 1, 6, 6, 6))["codes"]
    assert code.shape == (2, 1, 2, 2, 2)
    assert math.isclose(float(code[0, 0, 0, 0, 0]), 6**1.5, rel_tol=1e-5)
    assert param.values_per_image() == 8


def test_render_gradient_matches_finite_differences():
    param = DCTParam((1, 5, 5), keep=3, images_per_class=1)
    param._bases = {5: dct_matrix(5, 3, dtype=torch.float64)}
    code = {"codes": torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)}
    weights = torch.randn(2, 1, 5, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda c: (param.render({"codes": c}) * weights).sum(), (code["codes"],)
    )


def test_keep_default_and_bad_values():
    assert default_keep((3, 28, 28)) == 14
    assert default_keep((1, 1, 1)) == 1
    assert build_parameterization("pixel", 0, (1, 8, 8), 2) is None
    assert build_parameterization("dct", 0, (1, 8, 8), 2).keep == 4
    with pytest.raises(ConfigError, match="dct_keep = 9"):
        build_parameterization("dct", 9, (1, 8, 8), 2)
    with pytest.raises(ConfigError, match="parameterization 'wavelet'"):
        build_parameterization("wavelet", 0, (1, 8, 8), 2)
    with pytest.raises(ConfigError, match="dct_keep"):
        _cfg(dct_keep=-1)
    with pytest.raises(ConfigError, match="parameterization"):
        _cfg("haba", parameterization="dct")


@pytest.mark.parametrize("method", ["hoptm", "ptm", "ftd"])
def test_engine_learns_in_dct_and_exports_its_codes(method, toy, toy_buffer, tmp_path):
    cfg = _cfg(method, parameterization="dct", dct_keep=3)
    dist = _distiller(cfg, toy, toy_buffer, tmp_path)
    init = dist.initial_state()
    assert init.params["codes"].shape == (3 * 2, 1, 3, 3)  # 3 classes x ipc 2
    syn = dist.run_all()
    assert not torch.equal(syn.images, init.images)
    low = DCTParam((1, 8, 8), keep=3, images_per_class=2)  # the shared images stay low-pass
    assert torch.allclose(low.render(low.encode(syn.images)), syn.images, atol=1e-4)
    assert torch.allclose(low.render(syn.codes), syn.images, atol=1e-4)
    assert syn.meta["parameterization"]["values_per_image"] == 9
    # stored: 6 images x 9 float32 coefficients + 6 int64 labels
    assert syn.stored_bytes() == 6 * 9 * 4 + 6 * 8
    back = SyntheticSet.load(syn.save(tmp_path / "set"))
    assert torch.equal(back.codes["codes"], syn.codes["codes"])
    assert back.meta["stored_bytes"] == 6 * 9 * 4 + 6 * 8


def test_dct_resume_is_bit_identical(toy, toy_buffer, tmp_path):
    cfg = _cfg("ptm", iterations=6, checkpoint_every=2, parameterization="dct", dct_keep=4)
    full = _distiller(cfg, toy, toy_buffer, tmp_path / "full").run_all()
    part = _distiller(cfg, toy, toy_buffer, tmp_path / "part")
    state, gen = part.start()
    for _ in range(4):
        part.advance(state, gen)
    part.save_state(state, gen, tmp_path / "part" / CHECKPOINT)
    resumed = _distiller(cfg, toy, toy_buffer, tmp_path / "part")
    assert resumed.start()[0].iteration == 4
    result = resumed.run_all()
    assert torch.equal(result.images, full.images)
    assert torch.equal(result.codes["codes"], full.codes["codes"])


def test_retraining_point_resets_coefficients(toy, toy_buffer, tmp_path):
    cfg = _cfg("ptm", ipc=2, iterations=4, retraining_points=1, parameterization="dct")
    dist = _distiller(cfg, toy, toy_buffer, tmp_path)
    state = dist.initial_state()
    gen = torch.Generator().manual_seed(0)
    dist.step(state, gen)  # snapshot of the complement's coefficients
    snap = state.snapshots[2].clone()
    assert snap.shape[1:] == (1, 4, 4)
    dist.step(state, gen)  # restored, and the images rendered from them
    complement = ~dist.foundation
    assert torch.equal(state.params["codes"][complement], snap)
    assert torch.equal(state.images, dist.param.render(state.params))
