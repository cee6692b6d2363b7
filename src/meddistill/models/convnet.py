"""ConvNet of the dataset-distillation literature, in 2D and (new here) 3D.

depth x [conv3x3 (width, pad 1) -> norm -> act -> pool2] -> linear. Unlike the references, 28 px
inputs are not padded up to 32 px: the map goes 28 -> 14 -> 7 -> 3 at depth 3 (floor pooling).
"""

from __future__ import annotations

import torch
from torch import nn

from meddistill.errors import ConfigError
from meddistill.models import layers


class ConvNet(nn.Module):
    """Parameter names (`features.*`, `classifier.*`) and order follow the reference ConvNet."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        *,
        depth: int = 3,
        width: int = 128,
        norm: str = "instancenorm",
        act: str = "relu",
        pooling: str = "avgpooling",
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ConfigError(f"ConvNet supports spatial_dims 2 or 3, got {spatial_dims}")
        conv = layers.conv_cls(spatial_dims)
        shape = [image_size] * spatial_dims
        mods: list[nn.Module] = []
        channels = in_channels
        for d in range(depth):
            mods.append(conv(channels, width, kernel_size=3, padding=1))
            channels = width
            norm_layer = layers.norm(norm, width, tuple(shape))
            if norm_layer is not None:
                mods.append(norm_layer)
            mods.append(layers.activation(act))
            pool_layer = layers.pool(pooling, spatial_dims)
            if pool_layer is not None:
                mods.append(pool_layer)
                shape = [s // 2 for s in shape]
                if min(shape) == 0:
                    raise ConfigError(
                        f"ConvNet depth {depth} pools a {image_size}px input to nothing at layer "
                        f"{d + 1}; use model.depth <= {d} or a larger image_size"
                    )
        self.features = nn.Sequential(*mods)
        self.feature_shape = (width, *shape)
        numel = width
        for s in shape:
            numel *= s
        self.classifier = nn.Linear(numel, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened features before the classifier (the embedding DM matches)."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def build(spec, in_channels: int, num_classes: int, image_size: int, spatial_dims: int) -> ConvNet:
    return ConvNet(
        in_channels,
        num_classes,
        image_size,
        depth=spec.depth,
        width=spec.width,
        norm=spec.norm,
        act=spec.act,
        pooling=spec.pooling,
        spatial_dims=spatial_dims,
    )
