"""VGG11 as in the DC/MTT references: conv3x3 -> norm -> ReLU blocks, 5 max pools, one linear."""

from __future__ import annotations

import torch
from torch import nn

from meddistill.errors import ConfigError
from meddistill.models import layers

VGG11_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(nn.Module):
    """Five 2x poolings need 32 px: smaller inputs get extra first-conv padding (the references
    use padding 3 for 28 px); larger inputs keep their spatial map and the linear layer grows.
    """

    def __init__(
        self,
        cfg: tuple[int | str, ...],
        in_channels: int,
        num_classes: int,
        image_size: int,
        *,
        norm: str = "instancenorm",
        name: str = "vgg11",
    ) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        channels = in_channels
        size = image_size + 2 * layers.small_input_padding(image_size)
        first = True
        for item in cfg:
            if item == "M":
                mods.append(nn.MaxPool2d(kernel_size=2, stride=2))
                size //= 2
                continue
            pad = 1 + layers.small_input_padding(image_size) if first else 1
            first = False
            mods.append(nn.Conv2d(channels, int(item), kernel_size=3, padding=pad))
            norm_layer = layers.norm(norm, int(item), (size, size))
            if norm_layer is not None:
                mods.append(norm_layer)
            mods.append(nn.ReLU())
            channels = int(item)
        self.features = nn.Sequential(*mods)
        numel = layers.traced_numel(self.features, (in_channels, image_size, image_size), name)
        self.classifier = nn.Linear(numel, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def build_vgg11(
    spec, in_channels: int, num_classes: int, image_size: int, spatial_dims: int
) -> VGG:
    if spatial_dims != 2:
        raise ConfigError("model 'vgg11' is 2D only; use model.name=convnet for 3D volumes")
    return VGG(VGG11_CFG, in_channels, num_classes, image_size, norm=spec.norm, name="vgg11")
