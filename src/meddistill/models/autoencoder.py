"""A small convolutional autoencoder: the decoder of the `latent` image parameterisation.

Encoder: conv 3x3 (C -> w), then one stride-2 conv 3x3 per halving, then conv 1x1 (w -> c_z);
decoder: conv 3x3 (c_z -> w), one (2x nearest upsampling, conv 3x3) per doubling, conv 3x3
(w -> C). ReLU between; no norm layers, so a decoded image depends on its own code only.
2-D or 3-D by the image shape; built on the meta device and filled from a seeded generator.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from meddistill.errors import ConfigError
from meddistill.models.init import init_parameters_
from meddistill.models.layers import conv_cls


def halvings(downsample: int) -> int:
    """log2 of the downsampling factor (a power of 2, >= 1)."""
    if downsample < 1 or downsample & (downsample - 1):
        raise ConfigError(
            f"match.latent.downsample = {downsample} must be a power of 2 (1, 2, 4, ...)"
        )
    return int(math.log2(downsample))


class ConvAutoencoder(nn.Module):
    """Images [N, C, *S] <-> codes [N, c_z, *S / downsample]."""

    def __init__(
        self, image_shape: tuple[int, ...], latent_channels: int, downsample: int, width: int
    ) -> None:
        super().__init__()
        channels, sides = int(image_shape[0]), tuple(int(s) for s in image_shape[1:])
        conv, steps = conv_cls(len(sides)), halvings(downsample)
        if any(s % downsample for s in sides):
            raise ConfigError(
                f"match.latent.downsample = {downsample} does not divide the image sides "
                f"{'x'.join(map(str, sides))}; choose a factor that does (1, 2, ...)"
            )
        self.image_shape = (channels, *sides)
        self.code_shape = (latent_channels, *(s // downsample for s in sides))
        enc: list[nn.Module] = [conv(channels, width, 3, padding=1), nn.ReLU()]
        for _ in range(steps):
            enc += [conv(width, width, 3, stride=2, padding=1), nn.ReLU()]
        self.encoder = nn.Sequential(*enc, conv(width, latent_channels, 1))
        dec: list[nn.Module] = [conv(latent_channels, width, 3, padding=1), nn.ReLU()]
        for _ in range(steps):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), conv(width, width, 3, padding=1)]
            dec += [nn.ReLU()]
        self.decoder = nn.Sequential(*dec, conv(width, channels, 3, padding=1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(images))


def build_autoencoder(
    image_shape: tuple[int, ...],
    latent_channels: int,
    downsample: int,
    width: int,
    generator: torch.Generator,
) -> ConvAutoencoder:
    """The autoencoder with seeded initial weights (PyTorch's default distributions)."""
    with torch.device("meta"):
        model = ConvAutoencoder(image_shape, latent_channels, downsample, width)
    model = model.to_empty(device="cpu")
    return init_parameters_(model, generator)
