"""How the engine stores a synthetic image: as pixels (the default), or as the few
low-frequency DCT coefficients that FreD learns (Shin, Shin, Kim, Moon, NeurIPS 2023).

`dct`: per image and channel, the k lowest frequencies along every spatial axis (a k x k block
in 2-D, k x k x k in 3-D) of the orthonormal DCT-II are learned; the image is their inverse
transform, x = B^T c B (B: the first k rows of the n x n DCT-II matrix). Medical images keep
most of their energy there, so a set stores (k/n)^d of the pixels' values per image and more
images fit the same bytes. The transform is orthonormal, so a step of lr on the coefficients
is the pixel step projected on the kept frequencies: lr_img keeps its meaning. The engine
draws the initial images as for pixels (real, real_correct or noise) and encodes them once;
every loss, mask and potential stays in pixel space (the shape-wise potential and the
easy-to-complex mask act on the student's parameters, unchanged).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from meddistill.errors import ConfigError

PARAMETERIZATIONS = ("pixel", "dct", "latent")
BYTES_PER_VALUE = 4  # float32, as the set file stores them
PER_IMAGE = "codes"  # the learned tensor of a dct or latent set, one row per image


def dct_matrix(n: int, keep: int, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """The first `keep` rows of the orthonormal n-point DCT-II matrix, [keep, n]:
    B[u, x] = a(u) cos(pi (2x + 1) u / (2n)), a(0) = sqrt(1/n), a(u > 0) = sqrt(2/n)."""
    x = torch.arange(n, dtype=torch.float64)
    u = torch.arange(keep, dtype=torch.float64).unsqueeze(1)
    basis = torch.cos(math.pi * (2 * x + 1) * u / (2 * n)) * math.sqrt(2.0 / n)
    basis[0] = math.sqrt(1.0 / n)
    return basis.to(dtype=dtype, device=device)


def _along(tensor: torch.Tensor, matrix: torch.Tensor, axis: int) -> torch.Tensor:
    """`matrix` [out, in] applied to `tensor` along `axis` (whose size is `in`)."""
    moved = tensor.movedim(axis, -1)
    return (moved @ matrix.T).movedim(-1, axis)


def default_keep(image_shape: tuple[int, ...]) -> int:
    """Half the smallest spatial side (at least 1): a quarter of the values of a 2-D image,
    so four images fit where one pixel image did."""
    return max(1, min(image_shape[1:]) // 2)


def _check_keep(keep: int, image_shape: tuple[int, ...]) -> None:
    sides = tuple(int(s) for s in image_shape[1:])
    if not 1 <= keep <= min(sides):
        raise ConfigError(
            f"match.dct_keep = {keep} frequencies per axis does not fit images of spatial "
            f"size {'x'.join(map(str, sides))}; use 1..{min(sides)} (0: half the side)"
        )


def dct_values(keep: int, image_shape: tuple[int, ...]) -> int:
    """Values one image stores in dct: its channels x keep per spatial axis (checked)."""
    _check_keep(keep, image_shape)
    return int(image_shape[0]) * keep ** (len(image_shape) - 1)


class DCTParam:
    """Images as their low-frequency DCT coefficients (FreD). `encode` the engine's initial
    images once; `render` is linear, so its gradient is exact and cheap."""

    def __init__(self, image_shape: tuple[int, ...], keep: int, images_per_class: int) -> None:
        _check_keep(keep, image_shape)
        sides = tuple(int(s) for s in image_shape[1:])
        self.image_shape = tuple(int(s) for s in image_shape)
        self.keep = int(keep)
        self.images_per_class = int(images_per_class)
        self._bases = {n: dct_matrix(n, self.keep) for n in set(sides)}

    def _basis(self, n: int, like: torch.Tensor) -> torch.Tensor:
        basis = self._bases[n]
        if basis.device != like.device or basis.dtype != like.dtype:
            basis = self._bases[n] = basis.to(device=like.device, dtype=like.dtype)
        return basis

    def encode(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The kept coefficients of `images` [N, C, *spatial] (their projection)."""
        coefficients = images
        for axis, n in enumerate(self.image_shape[1:], start=2):
            coefficients = _along(coefficients, self._basis(n, images), axis)
        return {PER_IMAGE: coefficients.detach().clone()}

    def render(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Images from coefficients: the inverse transform of the kept block (zeros above)."""
        images = tensors[PER_IMAGE]
        for axis, n in enumerate(self.image_shape[1:], start=2):
            images = _along(images, self._basis(n, images).T, axis)
        return images

    def learning_rates(self, lr_img: float) -> dict[str, float]:
        """lr_img itself: the transform is orthonormal, a coefficient step is a pixel step."""
        return {PER_IMAGE: float(lr_img)}

    def values_per_image(self) -> int:
        return dct_values(self.keep, self.image_shape)

    def describe(self) -> dict[str, Any]:
        """Metadata for the set: the transform and what storing it costs."""
        pixels = math.prod(self.image_shape)
        return {
            "name": "dct",
            "transform": "orthonormal DCT-II, lowest frequencies kept per spatial axis",
            "keep": self.keep,
            "images_per_class": self.images_per_class,
            "values_per_image": self.values_per_image(),
            "pixel_values_per_image": pixels,
        }


def build_parameterization(
    name: str,
    keep: int,
    image_shape: tuple[int, ...],
    images_per_class: int,
    autoencoder: Any = None,
) -> Any:
    """The engine's own parameterisation for `match.parameterization` (None: pixels); `latent`
    takes the trained autoencoder (matching.latent.Autoencoder) the caller made or loaded."""
    if name == "pixel":
        return None
    if name == "dct":
        keep = keep or default_keep(image_shape)
        return DCTParam(image_shape, keep, images_per_class)
    if name == "latent":
        if autoencoder is None:
            raise ConfigError(
                "match.parameterization=latent needs its autoencoder: run it through "
                "`meddistill distill` (which trains or reuses one), or pass autoencoder= "
                "(md.train_autoencoder) to md.distill"
            )
        from meddistill.matching.latent import LatentParam

        return LatentParam(autoencoder, images_per_class)
    raise ConfigError(
        f"match.parameterization '{name}' is unknown; use one of {', '.join(PARAMETERIZATIONS)}"
    )


def stored_values(config: Any, image_shape: tuple[int, ...]) -> tuple[int, int]:
    """(values each image stores, values all images share: a latent set's decoder) in the
    config's parameterisation, from its settings alone (nothing trained); refuses a dct block
    or an autoencoder that does not fit the images."""
    name = getattr(config, "parameterization", "pixel")
    if name == "dct":
        return dct_values(config.dct_keep or default_keep(image_shape), image_shape), 0
    if name == "latent":
        from meddistill.matching.latent import latent_sizes

        return latent_sizes(config.latent, image_shape)
    return math.prod(image_shape), 0


def ipc_for_budget(
    budget_ipc: int,
    values_per_image: int,
    image_shape: tuple[int, ...],
    num_classes: int = 1,
    shared_values: int = 0,
) -> int:
    """Images per class that fit the storage of `budget_ipc` pixel images per class, after
    the values every image shares (a latent set's decoder): at least 1."""
    budget = budget_ipc * math.prod(image_shape) * num_classes - shared_values
    return max(1, budget // (values_per_image * num_classes))
