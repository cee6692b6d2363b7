"""Differentiable Siamese Augmentation (DSA, Zhao & Bilen 2021), 2D and 3D.

Same operations and magnitudes as the reference code, restructured kornia-style: `sample` draws
the random parameters from an explicit generator into a `DSADraw`, and `apply` is a pure,
differentiable function of (images, draw). Siamese augmentation = one shared draw applied to the
real and the synthetic batch.

Draws hold raw uniforms U[0, 1), one row per sample (or a single row when shared, which then
applies to a batch of any size); `apply` maps them to magnitudes with `DSAParams` and the image
size. Integer amounts (crop shifts, cutout positions) are therefore resolved at apply time, as
floor(u * number_of_choices), exactly uniform over the reference's integer ranges.

Randomness is drawn on the CPU from a CPU generator even when the images are on CUDA; the few
numbers are then moved to the images' device. The same seed gives the same augmentation on every
device.

Differences from the reference worth knowing:
- crop: out[i] = x[i - t] (content moves by +t); the reference gathers x[i + t]. The shift is
  symmetric in distribution, so results are equivalent.
- 3D volumes (N, C, D, H, W): flip mirrors the last axis (W, left-right) only, because mirroring
  the cranio-caudal axis makes anatomically impossible volumes; scale draws one factor per axis;
  rotate turns each axial slice about the depth axis by the same angle; crop shifts along all
  three axes; cutout zeroes a cube of side 0.5 x size per axis.
- saturation mixes each pixel with its mean over channels: for 1-channel images (most medical
  data) it is exactly the identity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from meddistill.errors import ConfigError

GROUPS: dict[str, tuple[str, ...]] = {
    "color": ("brightness", "saturation", "contrast"),
    "crop": ("crop",),
    "cutout": ("cutout",),
    "flip": ("flip",),
    "scale": ("scale",),
    "rotate": ("rotate",),
    "brightness": ("brightness",),
    "saturation": ("saturation",),
    "contrast": ("contrast",),
}
MODES = ("S", "M")
DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"


@dataclass
class DSAParams:
    """Magnitudes of the reference `ParamDiffAug` (defaults identical)."""

    prob_flip: float = 0.5
    ratio_scale: float = 1.2
    ratio_rotate: float = 15.0
    ratio_crop_pad: float = 0.125
    ratio_cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.prob_flip <= 1.0:
            raise ConfigError(f"option dsa.prob_flip must lie in [0, 1], got {self.prob_flip}")
        if self.ratio_scale < 1.0:
            raise ConfigError(f"option dsa.ratio_scale must be >= 1, got {self.ratio_scale}")
        if not 0.0 <= self.ratio_crop_pad < 0.5:
            raise ConfigError(
                f"option dsa.ratio_crop_pad must lie in [0, 0.5), got {self.ratio_crop_pad}"
            )
        if not 0.0 <= self.ratio_cutout <= 1.0:
            raise ConfigError(
                f"option dsa.ratio_cutout must lie in [0, 1], got {self.ratio_cutout}"
            )


# Number of uniforms each op draws per sample (per spatial axis where it says so).
def _width(op: str, spatial_dims: int) -> int:
    return spatial_dims if op in ("scale", "crop", "cutout") else 1


@dataclass
class DSADraw:
    """One draw: the ops to apply, in order, and a (n, k) tensor of uniforms for each.

    n == 1 when `shared` (the row applies to every sample of any batch), else the batch size.
    """

    ops: tuple[str, ...]
    groups: tuple[str, ...]
    uniforms: tuple[torch.Tensor, ...]
    shared: bool

    def to(self, device: torch.device | str) -> DSADraw:
        return DSADraw(
            self.ops, self.groups, tuple(u.to(device) for u in self.uniforms), self.shared
        )


class DSA:
    """DSA for a strategy such as 'color_crop_cutout_flip_scale_rotate' ('' or 'none': no-op).

    mode 'S' (default, as in every reference) applies ONE group per call, chosen uniformly;
    mode 'M' applies every group in the order written.
    """

    def __init__(
        self,
        strategy: str = DEFAULT_STRATEGY,
        params: DSAParams | None = None,
        mode: str = "S",
        spatial_dims: int = 2,
    ) -> None:
        self.strategy = strategy
        self.params = params if params is not None else DSAParams()
        if mode not in MODES:
            raise ConfigError(
                f"option dsa.mode={mode!r} is not valid; choose S (one group) or M (all)"
            )
        if spatial_dims not in (2, 3):
            raise ConfigError(f"DSA supports spatial_dims 2 or 3, got {spatial_dims!r}")
        self.mode = mode
        self.spatial_dims = spatial_dims
        self.groups = parse_strategy(strategy)

    def __repr__(self) -> str:
        return (
            f"DSA(strategy={self.strategy!r}, mode={self.mode!r}, spatial_dims={self.spatial_dims})"
        )

    @property
    def is_identity(self) -> bool:
        return not self.groups

    def sample(
        self,
        batch_size: int,
        generator: torch.Generator,
        shared: bool,
        device: torch.device | str | None = None,
    ) -> DSADraw:
        """Draw parameters from `generator` (a CPU generator); shared -> one row for all."""
        if generator.device.type != "cpu":
            raise ConfigError(
                "DSA draws from a CPU generator so results do not depend on the device; "
                "pass torch.Generator() (CPU) even for CUDA images"
            )
        if not shared and batch_size < 1:
            raise ConfigError(f"DSA.sample: batch_size must be >= 1, got {batch_size}")
        if not self.groups:
            return DSADraw((), (), (), shared)
        if self.mode == "S":
            pick = int(torch.randint(len(self.groups), (1,), generator=generator).item())
            groups: tuple[str, ...] = (self.groups[pick],)
        else:
            groups = self.groups
        ops = tuple(op for g in groups for op in GROUPS[g])
        n = 1 if shared else int(batch_size)
        uniforms = tuple(
            torch.rand(n, _width(op, self.spatial_dims), generator=generator) for op in ops
        )
        draw = DSADraw(ops, groups, uniforms, shared)
        return draw.to(device) if device is not None else draw

    def apply(self, x: torch.Tensor, draw: DSADraw) -> torch.Tensor:
        """Augment `x` (N, C, *spatial) with `draw`; differentiable in x."""
        if not draw.ops:
            return x
        if x.dim() != self.spatial_dims + 2 or not x.is_floating_point():
            raise ConfigError(
                f"DSA(spatial_dims={self.spatial_dims}) needs float images of shape "
                f"(N, C{', D' if self.spatial_dims == 3 else ''}, H, W), got {tuple(x.shape)} "
                f"{x.dtype}"
            )
        for op, u in zip(draw.ops, draw.uniforms, strict=True):
            if u.shape[0] not in (1, x.shape[0]) or (not draw.shared and u.shape[0] != x.shape[0]):
                raise ConfigError(
                    f"DSA draw made for {u.shape[0]} samples cannot augment a batch of "
                    f"{x.shape[0]}; sample per batch or use shared=True for siamese draws"
                )
            x = _OPS[op](x, u.to(device=x.device, dtype=x.dtype), self.params)
        return x

    def __call__(
        self, x: torch.Tensor, generator: torch.Generator, shared: bool = False
    ) -> torch.Tensor:
        """Sample a draw for this batch and apply it."""
        if not self.groups:
            return x
        return self.apply(x, self.sample(x.shape[0], generator, shared, x.device))


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """'color_crop_flip' -> ('color', 'crop', 'flip'); '' or 'none' -> ()."""
    text = (strategy or "").strip()
    if text.lower() in ("", "none"):
        return ()
    groups = tuple(text.split("_"))
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ConfigError(
            f"unknown DSA operation(s) {', '.join(map(repr, unknown))} in strategy '{strategy}'; "
            f"valid: {', '.join(GROUPS)} joined by '_', or 'none'"
        )
    return groups


def _col(u: torch.Tensor, x: torch.Tensor, k: int = 0) -> torch.Tensor:
    """Column k of the draw, shaped (n, 1, 1, ...) to broadcast over x."""
    return u[:, k].reshape(-1, *([1] * (x.dim() - 1)))


def brightness(x: torch.Tensor, u: torch.Tensor, p: DSAParams) -> torch.Tensor:
    """x + (u - 0.5) * brightness."""
    return x + (_col(u, x) - 0.5) * p.brightness


def saturation(x: torch.Tensor, u: torch.Tensor, p: DSAParams) -> torch.Tensor:
    """(x - mean over channels) * (u * saturation) + mean; identity for one channel."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_col(u, x) * p.saturation) + mean


def contrast(x: torch.Tensor, u: torch.Tensor, p: DSAParams) -> torch.Tensor:
    """(x - per-sample mean) * (u + contrast) + mean: the mean is kept."""
    mean = x.mean(dim=tuple(range(1, x.dim())), keepdim=True)
    return (x - mean) * (_col(u, x) + p.contrast) + mean


def flip(x: torch.Tensor, u: torch.Tensor, p: DSAParams) -> torch.Tensor:
    """Mirror the last axis where u < prob_flip."""
    return torch.where(_col(u, x) < p.prob_flip, x.flip(-1), x)


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample x through the affine map theta (n, d, d+1), n == 1 broadcasting to the batch."""
    theta = theta.expand(x.shape[0], *theta.shape[1:])
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)


def scale(x: torch.Tensor, u: torch.Tensor, p: DSAParams) -> torch.Tensor:
    """Per-axis scaling of the sampling grid by s ~ U[1/r, r] (s > 1 zooms out)."""
    r = p.ratio_scale
    s = u * (r - 1.0 / r) + 1.0 / r  # (n, dims) in grid order x (W), y (H), z (D)
    theta = torch.cat([torch.diag_embed(s), torch.zeros_like(s).unsqueeze(-1)], dim=-1)
    return _warp(x, theta)


def rotation_angle(u: torch.Tensor, p: DSAParams) -> torch.Tensor:
    """Angle in radians, uniform in [-ratio_rotate, ratio_rotate] degrees."""
    return (u[:, 0] - 0.5) * 2.0 * p.ratio_rotate / 180.0 * math.pi


def rotate(x: torch.Tensor, u: torch.Tensor, p: DSAParams) -> torch.Tensor:
    """Rotate in the (H, W) plane; for volumes every axial slice turns about the depth axis."""
    a = rotation_angle(u, p)
    c, s, z = torch.cos(a), torch.sin(a), torch.zeros_like(a)
    rows = [torch.stack([c, -s, z], -1), torch.stack([s, c, z], -1)]
    if x.dim() == 5:
        o = torch.ones_like(a)
        rows = [torch.cat([r, z[:, None]], -1) for r in rows]
        rows.append(torch.stack([z, z, o, z], -1))
    return _warp(x, torch.stack(rows, dim=1))


def crop_max_shift(size: int, p: DSAParams) -> int:
    """Largest shift in pixels along an axis of `size` (reference: int(size * ratio + 0.5))."""
    return int(size * p.ratio_crop_pad + 0.5)


def crop_shifts(u: torch.Tensor, sizes: tuple[int, ...], p: DSAParams) -> torch.Tensor:
    """Integer shifts (n, dims), uniform in [-s, s] per axis; column k is spatial axis k (D/H/W)."""
    cols = []
    for k, size in enumerate(sizes):
        s = crop_max_shift(size, p)
        t = torch.floor(u[:, k] * (2 * s + 1)).long().clamp(0, 2 * s) - s
        cols.append(t)
    return torch.stack(cols, dim=1)


def crop(x: torch.Tensor, u: torch.Tensor, p: DSAParams) -> torch.Tensor:
    """Translate by the drawn integer shifts, filling with zeros: out[i] = x[i - t]."""
    sizes = tuple(x.shape[2:])
    shifts = crop_shifts(u, sizes, p).to(x.device)
    batch = x.shape[0]
    for k, size in enumerate(sizes):
        s = crop_max_shift(size, p)
        if s == 0:
            continue
        axis = 2 + k
        pad = [0, 0] * x.dim()
        pad[2 * (x.dim() - 1 - axis)] = s
        pad[2 * (x.dim() - 1 - axis) + 1] = s
        x_pad = F.pad(x, pad[: 2 * (x.dim() - 2)])
        idx = torch.arange(size, device=x.device)[None, :] - shifts[:, k : k + 1] + s  # (n, size)
        view = [idx.shape[0]] + [1] * (x.dim() - 1)
        view[axis] = size
        target = list(x.shape)
        target[0] = batch
        x = torch.gather(x_pad, axis, idx.reshape(view).expand(target))
    return x


def cutout_size(size: int, p: DSAParams) -> int:
    return int(size * p.ratio_cutout + 0.5)


def cutout_mask(u: torch.Tensor, sizes: tuple[int, ...], p: DSAParams) -> torch.Tensor:
    """(n, 1, *sizes) mask, 0 inside the drawn box and 1 elsewhere (box may hang off the edge).

    Box centre per axis is uniform on the reference's range [0, size + 1 - cs % 2).
    """
    inside = None
    for k, size in enumerate(sizes):
        cs = cutout_size(size, p)
        choices = size + (1 - cs % 2)
        centre = torch.floor(u[:, k] * choices).long().clamp(0, choices - 1)
        lo = (centre - cs // 2)[:, None]
        pos = torch.arange(size, device=u.device)[None, :]
        axis_in = (pos >= lo) & (pos < lo + cs)  # (n, size)
        shape = [u.shape[0]] + [1] * len(sizes)
        shape[1 + k] = size
        axis_in = axis_in.reshape(shape)
        inside = axis_in if inside is None else inside & axis_in
    assert inside is not None
    return (~inside).unsqueeze(1)


def cutout(x: torch.Tensor, u: torch.Tensor, p: DSAParams) -> torch.Tensor:
    """Zero a box of ratio_cutout x size per axis (all channels)."""
    return x * cutout_mask(u, tuple(x.shape[2:]), p).to(x.dtype)


_OPS = {
    "brightness": brightness,
    "saturation": saturation,
    "contrast": contrast,
    "flip": flip,
    "scale": scale,
    "rotate": rotate,
    "crop": crop,
    "cutout": cutout,
}
