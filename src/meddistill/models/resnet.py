"""ResNet18 as in the DC/MTT references (CIFAR stem, instance norm by default), any resolution.

The reference ends with avg_pool2d(4), which only works at 32 px; adaptive average pooling to
1x1 gives the same network at 32 px and a working one at every other size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from meddistill.errors import ConfigError
from meddistill.models import layers


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "layernorm":
        raise ConfigError(
            "model 'resnet18' does not support norm 'layernorm' (its map size varies); "
            "use instancenorm, batchnorm, groupnorm or none"
        )
    layer = layers.norm(kind, channels, (1, 1))
    return nn.Identity() if layer is None else layer


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = _norm(norm, planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), _norm(norm, planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(
        self,
        num_blocks: tuple[int, int, int, int],
        in_channels: int,
        num_classes: int,
        *,
        norm: str = "instancenorm",
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = _norm(norm, 64)
        planes_in = 64
        stages = []
        for planes, blocks, stride in zip(
            (64, 128, 256, 512), num_blocks, (1, 2, 2, 2), strict=True
        ):
            stage = []
            for s in [stride] + [1] * (blocks - 1):
                stage.append(BasicBlock(planes_in, planes, s, norm))
                planes_in = planes
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.classifier = nn.Linear(512 * BasicBlock.expansion, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def build_resnet18(
    spec, in_channels: int, num_classes: int, image_size: int, spatial_dims: int
) -> ResNet:
    if spatial_dims != 2:
        raise ConfigError("model 'resnet18' is 2D only; use model.name=convnet for 3D volumes")
    return ResNet((2, 2, 2, 2), in_channels, num_classes, norm=spec.norm)
