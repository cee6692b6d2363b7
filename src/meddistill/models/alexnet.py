"""AlexNet as in the DC/MTT references (a 32 px variant: 5 convs, 3 max pools, one linear)."""

from __future__ import annotations

import torch
from torch import nn

from meddistill.errors import ConfigError
from meddistill.models import layers


class AlexNet(nn.Module):
    """The references pad the first conv by 4 (instead of 2) for 28 px inputs; here inputs below
    32 px get the padding that lifts them to 32 px, and the linear input size is traced.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        pad = 2 + layers.small_input_padding(image_size)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 128, kernel_size=5, stride=1, padding=pad),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(128, 192, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(192, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 192, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(192, 192, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        numel = layers.traced_numel(self.features, (in_channels, image_size, image_size), "alexnet")
        self.fc = nn.Linear(numel, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))


def build(spec, in_channels: int, num_classes: int, image_size: int, spatial_dims: int) -> AlexNet:
    if spatial_dims != 2:
        raise ConfigError("model 'alexnet' is 2D only; use model.name=convnet for 3D volumes")
    return AlexNet(in_channels, num_classes, image_size)
