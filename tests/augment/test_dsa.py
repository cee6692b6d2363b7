"""DSA: each operation against hand-computed values, siamese draws, seeding, gradients, 3D."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from meddistill.augment import DSA, DSADraw, DSAParams
from meddistill.augment.dsa import crop_shifts
from meddistill.config import from_dict
from meddistill.errors import ConfigError

ALL_OPS = ("brightness", "saturation", "contrast", "crop", "cutout", "flip", "scale", "rotate")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def draw(op: str, *rows: list[float], shared: bool = False) -> DSADraw:
    return DSADraw((op,), (op,), (torch.tensor(rows, dtype=torch.float32),), shared)


def test_flip_mirrors_the_last_axis_where_u_below_half() -> None:
    x = torch.arange(6.0).reshape(1, 1, 2, 3).repeat(2, 1, 1, 1)
    out = DSA("flip").apply(x, draw("flip", [0.2], [0.7]))
    assert torch.equal(out[0, 0], torch.tensor([[2.0, 1.0, 0.0], [5.0, 4.0, 3.0]]))
    assert torch.equal(out[1], x[1])


def test_brightness_with_known_draw() -> None:
    x = torch.zeros(2, 3, 4, 4)
    out = DSA("brightness").apply(x, draw("brightness", [0.75], [0.1]))
    assert torch.allclose(out[0], torch.full((3, 4, 4), 0.25))
    assert torch.allclose(out[1], torch.full((3, 4, 4), -0.4))


def test_saturation_scales_distance_to_channel_mean() -> None:
    x = torch.tensor([1.0, 3.0]).reshape(1, 2, 1, 1).expand(1, 2, 2, 2).contiguous()
    out = DSA("saturation").apply(x, draw("saturation", [0.25]))  # factor 0.25 * 2 = 0.5
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([1.5, 2.5]))
    gray = torch.randn(3, 1, 5, 5, generator=gen())
    assert torch.equal(DSA("saturation")(gray, gen(1)), gray)  # one channel: identity


def test_contrast_keeps_each_sample_mean_and_scales_deviation() -> None:
    x = torch.randn(3, 2, 6, 6, generator=gen())
    out = DSA("contrast").apply(x, draw("contrast", [0.0], [0.5], [0.9]))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(out.mean(dim=(1, 2, 3), keepdim=True), mean, atol=1e-6)
    factors = torch.tensor([0.5, 1.0, 1.4]).reshape(3, 1, 1, 1)
    assert torch.allclose(out - mean, (x - mean) * factors, atol=1e-6)


def test_cutout_zeroes_a_half_by_half_square() -> None:
    x = torch.ones(1, 2, 8, 8)
    out = DSA("cutout").apply(x, draw("cutout", [0.5, 0.5]))  # centre 4 of 9 choices -> rows 2..5
    assert (out == 0).float().mean().item() == 0.25
    assert (out[:, :, 2:6, 2:6] == 0).all()
    corner = DSA("cutout").apply(x, draw("cutout", [0.0, 0.0]))  # centre 0: box hangs off
    assert int((corner[0, 0] == 0).sum()) == 4 and (corner[0, 0, :2, :2] == 0).all()


def test_cutout_fraction_over_random_draws_is_at_most_a_quarter() -> None:
    out = DSA("cutout")(torch.ones(64, 1, 16, 16), gen(3))
    frac = (out == 0).float().mean(dim=(1, 2, 3))
    assert (frac <= 0.25).all() and (frac == 0.25).any() and (frac > 0).all()


def test_crop_moves_a_one_hot_pixel_by_the_drawn_shift() -> None:
    x = torch.zeros(2, 1, 8, 8)
    x[:, 0, 3, 4] = 1.0
    d = draw("crop", [0.9, 0.1], [0.5, 0.99])  # max shift int(8 * 0.125 + .5) = 1
    shifts = crop_shifts(d.uniforms[0], (8, 8), DSAParams())
    assert shifts.tolist() == [[1, -1], [0, 1]]
    out = DSA("crop").apply(x, d)
    for b, (dh, dw) in enumerate(shifts.tolist()):
        expect = torch.zeros(8, 8)
        expect[3 + dh, 4 + dw] = 1.0
        assert torch.equal(out[b, 0], expect)
    edge = torch.zeros(1, 1, 8, 8)
    edge[0, 0, 0, 0] = 1.0
    assert DSA("crop").apply(edge, draw("crop", [0.0, 0.0])).sum() == 0  # zero fill


def test_crop_shifts_cover_the_integer_range_uniformly() -> None:
    u = torch.rand(9000, 1, generator=gen())
    counts = Counter(crop_shifts(u, (32,), DSAParams())[:, 0].tolist())  # s = 4
    assert sorted(counts) == list(range(-4, 5))
    assert all(800 < c < 1200 for c in counts.values())


def test_rotate_zero_and_scale_one_are_identity() -> None:
    x = torch.randn(2, 3, 9, 7, generator=gen())
    assert torch.allclose(DSA("rotate").apply(x, draw("rotate", [0.5], [0.5])), x, atol=1e-6)
    params = DSAParams(ratio_scale=2.0)  # u = 1/3 -> s = 1/3 * 1.5 + 0.5 = 1
    one = draw("scale", [1 / 3, 1 / 3], [1 / 3, 1 / 3])
    assert torch.allclose(DSA("scale", params).apply(x, one), x, atol=1e-6)


def test_rotate_90_degrees_by_hand() -> None:
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    out = DSA("rotate", DSAParams(ratio_rotate=90.0)).apply(x, draw("rotate", [1.0]))
    expect = torch.tensor([[2.0, 5.0, 8.0], [1.0, 4.0, 7.0], [0.0, 3.0, 6.0]])
    assert torch.allclose(out[0, 0], expect, atol=1e-5)


def test_scale_two_samples_every_other_pixel() -> None:
    x = torch.arange(25.0).reshape(1, 1, 5, 5)
    out = DSA("scale", DSAParams(ratio_scale=2.0)).apply(x, draw("scale", [1.0, 1.0]))
    expect = torch.zeros(5, 5)
    expect[1:4, 1:4] = x[0, 0, ::2, ::2]
    assert torch.allclose(out[0, 0], expect, atol=1e-5)


def test_rotation_magnitude_stays_within_15_degrees() -> None:
    from meddistill.augment.dsa import rotation_angle

    u = torch.tensor([[0.0], [1.0]])
    assert torch.allclose(rotation_angle(u, DSAParams()), torch.tensor([-1.0, 1.0]) * math.pi / 12)


@pytest.mark.parametrize("op", ALL_OPS)
def test_shared_draw_applies_identically_to_batches_of_any_size(op: str) -> None:
    dsa = DSA(op)
    d = dsa.sample(batch_size=999, generator=gen(4), shared=True)
    assert all(u.shape[0] == 1 for u in d.uniforms)
    real = torch.randn(5, 3, 12, 12, generator=gen(5))
    syn = real[:2].clone()
    out_real, out_syn = dsa.apply(real, d), dsa.apply(syn, d)
    assert torch.equal(out_real[:2], out_syn)
    same = real[:1].expand(4, -1, -1, -1)
    out_same = dsa.apply(same, d)
    assert torch.equal(out_same[0], out_same[3])


def test_per_sample_draws_differ_between_samples() -> None:
    x = torch.randn(1, 3, 12, 12, generator=gen()).expand(16, -1, -1, -1)
    out = DSA("color_crop_scale_rotate", mode="M")(x, gen(1))
    assert not torch.allclose(out[0], out[1])


def test_same_seed_same_output_and_no_global_rng_use() -> None:
    state = torch.get_rng_state()
    x = torch.randn(8, 3, 16, 16, generator=gen())
    dsa = DSA("color_crop_cutout_flip_scale_rotate", mode="M")
    a, b, c = dsa(x, gen(11)), dsa(x, gen(11)), dsa(x, gen(12))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)


def test_mode_s_picks_groups_uniformly() -> None:
    dsa = DSA("color_crop_cutout_flip_scale_rotate")
    g = gen(2)
    counts = Counter(dsa.sample(4, g, shared=False).groups for _ in range(1800))
    assert set(counts) == {(n,) for n in ("color", "crop", "cutout", "flip", "scale", "rotate")}
    assert all(240 < c < 360 for c in counts.values())  # expected 300 each


def test_mode_m_applies_every_op_in_order() -> None:
    d = DSA("color_crop_cutout_flip_scale_rotate", mode="M").sample(3, gen(), shared=False)
    assert d.ops == ALL_OPS
    widths = [u.shape[1] for u in d.uniforms]  # per-axis draws for crop, cutout, scale
    assert widths == [1, 1, 1, 2, 2, 1, 2, 1] and all(u.shape[0] == 3 for u in d.uniforms)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_gradient_flows_to_images(spatial_dims: int) -> None:
    dsa = DSA("color_crop_cutout_flip_scale_rotate", mode="M", spatial_dims=spatial_dims)
    d = dsa.sample(2, gen(6), shared=False)
    shape = (2, 2, 5, 5) if spatial_dims == 2 else (2, 1, 3, 4, 4)  # few elements: fast
    x = torch.randn(shape, generator=gen(7), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: dsa.apply(t, d), (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("op", ALL_OPS)
@pytest.mark.parametrize("shared", [False, True])
def test_3d_preserves_shape(op: str, shared: bool) -> None:
    x = torch.randn(3, 1, 6, 8, 10, generator=gen())
    out = DSA(op, spatial_dims=3)(x, gen(1), shared=shared)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_3d_ops_by_hand() -> None:
    vol = torch.randn(1, 1, 4, 6, 6, generator=gen())
    dsa3 = DSA("flip", spatial_dims=3)
    assert torch.equal(dsa3.apply(vol, draw("flip", [0.0])), vol.flip(-1))
    # rotation about the depth axis turns every axial slice like the 2D op
    rot3 = DSA("rotate", spatial_dims=3).apply(vol, draw("rotate", [0.9]))
    rot2 = DSA("rotate").apply(vol[0].transpose(0, 1), draw("rotate", [0.9], shared=True))
    assert torch.allclose(rot3[0, 0], rot2[:, 0], atol=1e-5)
    one_hot = torch.zeros(1, 1, 8, 8, 8)
    one_hot[0, 0, 2, 3, 4] = 1.0
    moved = DSA("crop", spatial_dims=3).apply(one_hot, draw("crop", [0.9, 0.1, 0.5]))
    assert moved[0, 0, 3, 2, 4] == 1.0 and moved.sum() == 1.0
    cube = DSA("cutout", spatial_dims=3).apply(torch.ones(1, 1, 8, 8, 8), draw("cutout", [0.5] * 3))
    assert (cube == 0).float().mean().item() == 0.125 and (cube[0, 0, 2:6, 2:6, 2:6] == 0).all()


def test_none_strategy_is_identity() -> None:
    x = torch.randn(2, 1, 4, 4, generator=gen())
    for strategy in ("", "none", "None"):
        dsa = DSA(strategy)
        assert dsa.is_identity and dsa(x, gen()) is x


def test_bad_inputs_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="'blur'.*valid: color, crop"):
        DSA("color_blur")
    with pytest.raises(ConfigError, match="mode"):
        DSA("flip", mode="X")
    with pytest.raises(ConfigError, match="prob_flip"):
        from_dict(DSAParams, {"prob_flip": 2})
    dsa = DSA("flip")
    with pytest.raises(ConfigError, match="cannot augment a batch of 4"):
        dsa.apply(torch.zeros(4, 1, 4, 4), dsa.sample(3, gen(), shared=False))
    with pytest.raises(ConfigError, match="spatial_dims=2"):
        dsa(torch.zeros(2, 1, 4, 4, 4), gen())
