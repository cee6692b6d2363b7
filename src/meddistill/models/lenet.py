"""LeNet-5 as in the DC/MTT references (no norm layers, ReLU, max pooling)."""

from __future__ import annotations

import torch
from torch import nn

from meddistill.errors import ConfigError
from meddistill.models import layers


class LeNet(nn.Module):
    """conv5(6) -> pool -> conv5(16) -> pool -> fc 120 -> fc 84 -> fc classes.

    The references pad the first conv by 2 for 28 px MNIST; here any input below 32 px gets the
    padding that lifts it to 32 px, and the classifier input size is traced, so every size works.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        pad = layers.small_input_padding(image_size)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=pad),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        numel = layers.traced_numel(self.features, (in_channels, image_size, image_size), "lenet")
        self.fc_1 = nn.Linear(numel, 120)
        self.fc_2 = nn.Linear(120, 84)
        self.fc_3 = nn.Linear(84, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).flatten(1)
        return torch.relu(self.fc_2(torch.relu(self.fc_1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_3(self.embed(x))


def build(spec, in_channels: int, num_classes: int, image_size: int, spatial_dims: int) -> LeNet:
    if spatial_dims != 2:
        raise ConfigError("model 'lenet' is 2D only; use model.name=convnet for 3D volumes")
    return LeNet(in_channels, num_classes, image_size)
