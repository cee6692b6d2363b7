"""Layer factories shared by the architectures: one place maps option names to modules."""

from __future__ import annotations

import math

import torch
from torch import nn

from meddistill.errors import ConfigError

# The references design their small nets for 32 px and pad 28 px inputs up to it in the first conv.
DESIGN_SIZE = 32


def conv_cls(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]


def pool(kind: str, spatial_dims: int) -> nn.Module | None:
    """A 2x downsampling layer, or None for 'none'."""
    if kind == "avgpooling":
        return (nn.AvgPool2d if spatial_dims == 2 else nn.AvgPool3d)(kernel_size=2, stride=2)
    if kind == "maxpooling":
        return (nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d)(kernel_size=2, stride=2)
    if kind == "none":
        return None
    raise ConfigError(f"unknown pooling '{kind}'; choose avgpooling, maxpooling or none")


def activation(kind: str) -> nn.Module:
    """Out-of-place activations: in-place ones break functional (torch.func) differentiation."""
    if kind == "relu":
        return nn.ReLU()
    if kind == "leakyrelu":
        return nn.LeakyReLU(negative_slope=0.01)
    if kind == "sigmoid":
        return nn.Sigmoid()
    if kind == "gelu":
        return nn.GELU()
    raise ConfigError(f"unknown activation '{kind}'; choose relu, leakyrelu, sigmoid or gelu")


def norm(kind: str, channels: int, spatial_shape: tuple[int, ...]) -> nn.Module | None:
    """The reference's norm options: 'instancenorm' is GroupNorm(C, C) (affine), not InstanceNorm."""
    spatial_dims = len(spatial_shape)
    if kind == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "groupnorm":
        if channels % 4:
            raise ConfigError(
                f"norm 'groupnorm' uses 4 groups but a layer has {channels} channels; "
                "use a width divisible by 4 or another norm"
            )
        return nn.GroupNorm(4, channels, affine=True)
    if kind == "batchnorm":
        return (nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d)(channels, affine=True)
    if kind == "layernorm":
        return nn.LayerNorm([channels, *spatial_shape], elementwise_affine=True)
    if kind == "none":
        return None
    raise ConfigError(
        f"unknown norm '{kind}'; choose instancenorm, batchnorm, groupnorm, layernorm or none"
    )


def small_input_padding(image_size: int) -> int:
    """Extra first-conv padding that lifts inputs below 32 px to the 32-px design size.

    Generalises the references' rule (LeNet pad 2, AlexNet pad 4, VGG pad 3 for 28 px MNIST).
    """
    return max(0, math.ceil((DESIGN_SIZE - image_size) / 2))


def traced_numel(features: nn.Module, in_shape: tuple[int, ...], model_name: str) -> int:
    """Flattened feature size, found by running `features` once on a dummy input.

    Under build_model the layers live on the meta device, so this costs no compute.
    """
    param = next(features.parameters(), None)
    device = param.device if param is not None else torch.device("meta")
    was_training = features.training
    features.eval()  # batch norm cannot normalise a single 1x1 sample in training mode
    try:
        with torch.no_grad():
            out = features(torch.zeros((1, *in_shape), device=device))
    except RuntimeError as exc:
        raise ConfigError(
            f"model '{model_name}' cannot take inputs of shape {tuple(in_shape)}: "
            f"{str(exc).splitlines()[0]}; use a larger image_size or another model"
        ) from exc
    finally:
        features.train(was_training)
    if out.numel() == 0:
        raise ConfigError(
            f"model '{model_name}' shrinks inputs of shape {tuple(in_shape)} to an empty map; "
            "use a larger image_size or another model"
        )
    return int(out.numel())
