"""One entry point, `build_model(spec, ...)`, over every architecture (timm-style registry)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn

from meddistill.errors import ConfigError
from meddistill.models import alexnet, convnet, lenet, resnet, vgg
from meddistill.models.init import init_parameters_
from meddistill.utils import make_generator

Builder = Callable[..., nn.Module]

_BUILDERS: dict[str, Builder] = {
    "convnet": convnet.build,
    "convnet3d": convnet.build,
    "lenet": lenet.build,
    "alexnet": alexnet.build,
    "vgg11": vgg.build_vgg11,
    "resnet18": resnet.build_resnet18,
}


class InputShape(Protocol):
    """What a network must know of its data (a MedicalDataset has it)."""

    channels: int
    num_classes: int
    image_size: int
    spatial_dims: int


def available_models() -> list[str]:
    """Names accepted by `ModelSpec.name` / `build_model`."""
    return sorted(_BUILDERS)


def build_model(
    spec,
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    spatial_dims: int = 2,
    seed: int,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Build `spec` for (in_channels, image_size^spatial_dims) inputs, initialised from `seed`.

    The module is built on the meta device, materialised on CPU and filled from a generator
    seeded with `seed` (so the values do not depend on the device), then moved to `device`.
    The global RNG is neither read nor changed.
    """
    name = str(spec.name).lower()
    if name not in _BUILDERS:
        raise ConfigError(
            f"unknown model '{spec.name}' (option model.name); valid: {', '.join(available_models())}"
        )
    for key, value in (
        ("in_channels", in_channels),
        ("num_classes", num_classes),
        ("image_size", image_size),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"build_model: {key} must be a positive integer, got {value!r}")
    if spatial_dims not in (2, 3):
        raise ConfigError(f"build_model: spatial_dims must be 2 or 3, got {spatial_dims!r}")
    if name == "convnet3d" and spatial_dims != 3:
        raise ConfigError(
            "model 'convnet3d' needs 3D volumes (spatial_dims=3); use model.name=convnet for 2D"
        )
    with torch.device("meta"):
        model = _BUILDERS[name](spec, in_channels, num_classes, image_size, spatial_dims)
    model = model.to_empty(device="cpu")
    init_parameters_(model, make_generator(seed))
    if device is not None:
        model = model.to(device)
    return model


def build_model_for(
    spec, data: InputShape, *, seed: int, device: torch.device | str | None = None
) -> nn.Module:
    """`build_model` for the inputs and classes of `data` (e.g. a MedicalDataset)."""
    return build_model(
        spec,
        in_channels=data.channels,
        num_classes=data.num_classes,
        image_size=data.image_size,
        spatial_dims=data.spatial_dims,
        seed=seed,
        device=device,
    )
