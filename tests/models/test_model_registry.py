"""Networks: shapes at every resolution of the field, parameter counts, seeded init, errors."""

from __future__ import annotations

import math

import pytest
import torch

from meddistill.config import from_dict
from meddistill.errors import ConfigError
from meddistill.models import (
    ModelSpec,
    available_models,
    build_model,
    count_params,
    flatten_params,
    frozen_mask,
    frozen_param_names,
)

SIZES = (28, 32, 64, 112, 128, 224)


def test_available_models_lists_every_architecture() -> None:
    assert available_models() == ["alexnet", "convnet", "convnet3d", "lenet", "resnet18", "vgg11"]


def test_convnet3_width128_32px_has_reference_parameter_count() -> None:
    model = build_model(ModelSpec(), in_channels=3, num_classes=9, image_size=32, seed=0)
    # conv 3->128: 3456+128, GN: 256, 2 x (conv 128->128: 147456+128, GN: 256), fc 2048*9+9
    assert count_params(model) == 317_961


def test_convnet_28px_pools_28_14_7_3() -> None:
    model = build_model(ModelSpec(), in_channels=3, num_classes=9, image_size=28, seed=0)
    assert model.classifier.in_features == 128 * 3 * 3
    assert count_params(model) == 3584 + 256 + 2 * (147_584 + 256) + 128 * 9 * 9 + 9


_CASES = [(n, s) for n in ("convnet", "lenet", "alexnet") for s in SIZES] + [
    (n, s)
    for n in ("vgg11", "resnet18")
    for s in (28, 64, 224)  # 10M params: fewer sizes
]


@pytest.mark.parametrize("name,size", _CASES)
def test_every_2d_model_runs_at_every_size(name: str, size: int) -> None:
    depth = 3 if size <= 32 else 4 if size == 64 else 5
    channels = 1 if size in (28, 128) else 3
    spec = ModelSpec(name=name, depth=depth, width=16)
    model = build_model(spec, in_channels=channels, num_classes=7, image_size=size, seed=1)
    out = model(torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (1, 7)
    assert torch.isfinite(out).all()


def test_vgg_and_resnet_reference_feature_sizes() -> None:
    kw = dict(in_channels=3, num_classes=10, seed=0)
    assert build_model(ModelSpec(name="vgg11"), image_size=32, **kw).classifier.in_features == 512
    assert build_model(ModelSpec(name="vgg11"), image_size=28, **kw).classifier.in_features == 512
    assert build_model(ModelSpec(name="vgg11"), image_size=64, **kw).classifier.in_features == 2048
    assert build_model(ModelSpec(name="lenet"), image_size=28, **kw).fc_1.in_features == 400
    assert build_model(ModelSpec(name="alexnet"), image_size=28, **kw).fc.in_features == 3072


@pytest.mark.parametrize("size,flat", [(28, 128 * 3**3), (64, 128 * 8**3)])
def test_convnet3d_feature_size(size: int, flat: int) -> None:
    model = build_model(
        ModelSpec(name="convnet3d"),
        in_channels=1,
        num_classes=11,
        image_size=size,
        spatial_dims=3,
        seed=0,
    )
    assert isinstance(model.features[0], torch.nn.Conv3d)
    assert model.classifier.in_features == flat


@pytest.mark.parametrize("name", ["convnet", "convnet3d"])
def test_convnet3d_forward(name: str) -> None:
    spec = ModelSpec(name=name, width=8, norm="batchnorm", pooling="maxpooling")
    model = build_model(spec, in_channels=1, num_classes=3, image_size=28, spatial_dims=3, seed=0)
    assert model(torch.zeros(2, 1, 28, 28, 28)).shape == (2, 3)


@pytest.mark.parametrize("norm", ["instancenorm", "batchnorm", "groupnorm", "layernorm", "none"])
@pytest.mark.parametrize("act", ["relu", "leakyrelu", "sigmoid", "gelu"])
def test_convnet_options(norm: str, act: str) -> None:
    spec = ModelSpec(width=8, norm=norm, act=act, pooling="maxpooling", depth=2)
    model = build_model(spec, in_channels=3, num_classes=4, image_size=16, seed=0)
    assert model(torch.zeros(3, 3, 16, 16)).shape == (3, 4)


def test_convnet_without_pooling_keeps_the_map() -> None:
    spec = ModelSpec(width=4, depth=2, pooling="none")
    model = build_model(spec, in_channels=1, num_classes=2, image_size=10, seed=0)
    assert model.classifier.in_features == 4 * 10 * 10


def test_spec_loads_through_config() -> None:
    spec = from_dict(ModelSpec, {"name": "VGG11", "norm": "batchnorm"})
    assert spec.name == "vgg11" and spec.norm == "batchnorm" and spec.width == 128


@pytest.mark.parametrize(
    "data,needle",
    [
        ({"name": "resnet50"}, "alexnet, convnet, convnet3d, lenet, resnet18, vgg11"),
        ({"norm": "instance"}, "instancenorm, batchnorm"),
        ({"act": "tanh"}, "relu, leakyrelu"),
        ({"pooling": "max"}, "avgpooling, maxpooling"),
        ({"depth": 0}, "model.depth"),
        ({"colour": 1}, "unknown option"),
    ],
)
def test_bad_spec_is_a_config_error_naming_valid_choices(data: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        from_dict(ModelSpec, data)


def test_impossible_builds_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="depth"):
        build_model(ModelSpec(depth=5), in_channels=1, num_classes=2, image_size=28, seed=0)
    with pytest.raises(ConfigError, match="convnet3d"):
        build_model(
            ModelSpec(name="convnet3d"), in_channels=1, num_classes=2, image_size=28, seed=0
        )
    with pytest.raises(ConfigError, match="2D only"):
        build_model(
            ModelSpec(name="lenet"),
            in_channels=1,
            num_classes=2,
            image_size=28,
            spatial_dims=3,
            seed=0,
        )
    with pytest.raises(ConfigError, match="image_size"):
        build_model(ModelSpec(), in_channels=1, num_classes=2, image_size=0, seed=0)
    with pytest.raises(ConfigError, match="groupnorm"):
        build_model(
            ModelSpec(width=6, norm="groupnorm"), in_channels=1, num_classes=2, image_size=8, seed=0
        )


def test_same_seed_same_parameters_and_global_rng_untouched() -> None:
    state = torch.get_rng_state()
    kw = dict(in_channels=3, num_classes=5, image_size=32)
    a = flatten_params(build_model(ModelSpec(name="resnet18"), seed=7, **kw))
    b = flatten_params(build_model(ModelSpec(name="resnet18"), seed=7, **kw))
    c = flatten_params(build_model(ModelSpec(name="resnet18"), seed=8, **kw))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_init_follows_pytorch_default_distributions() -> None:
    spec = ModelSpec(norm="batchnorm")
    model = build_model(spec, in_channels=3, num_classes=10, image_size=32, seed=3)
    conv = model.features[4]  # conv 128 -> 128, fan_in 1152
    bound = 1 / math.sqrt(128 * 9)
    assert conv.weight.abs().max() <= bound and conv.bias.abs().max() <= bound
    # U(-b, b) has std b / sqrt(3); 147k samples pin it to well under 2 %
    assert abs(conv.weight.std().item() / (bound / math.sqrt(3)) - 1) < 0.02
    assert abs(conv.weight.mean().item()) < 0.02 * bound
    bn = model.features[1]
    assert torch.equal(bn.weight, torch.ones(128)) and torch.equal(bn.bias, torch.zeros(128))
    assert torch.equal(bn.running_mean, torch.zeros(128))
    assert torch.equal(bn.running_var, torch.ones(128))
    assert int(bn.num_batches_tracked) == 0
    fc = model.classifier
    assert fc.weight.abs().max() <= 1 / math.sqrt(2048)


def test_frozen_biases_are_exactly_those_before_a_per_channel_norm() -> None:
    kw = dict(in_channels=3, num_classes=4, image_size=16, seed=0)
    inst = build_model(ModelSpec(width=8), **kw)
    assert frozen_param_names(inst) == ["features.0.bias", "features.4.bias", "features.8.bias"]
    assert frozen_param_names(build_model(ModelSpec(width=8, norm="batchnorm"), **kw)) == [
        "features.0.bias",
        "features.4.bias",
        "features.8.bias",
    ]
    for norm in ("none", "groupnorm", "layernorm"):
        assert frozen_param_names(build_model(ModelSpec(width=8, norm=norm), **kw)) == []
    assert len(frozen_param_names(build_model(ModelSpec(name="vgg11", width=8), **kw))) == 8
    assert frozen_param_names(build_model(ModelSpec(name="resnet18"), **kw)) == []

    mask = frozen_mask(inst)
    assert mask.dtype == torch.bool and int(mask.sum()) == 3 * 8
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    y = torch.arange(6) % 4
    torch.nn.functional.cross_entropy(inst(x), y).backward()
    grads = torch.cat([p.grad.reshape(-1) for p in inst.parameters()])
    assert grads[mask].abs().max() < 1e-6 * grads[~mask].abs().max()
    assert (grads[~mask] != 0).float().mean() > 0.9
