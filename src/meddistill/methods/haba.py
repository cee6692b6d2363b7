"""HaBa: Liu, Wang, Yang, Wang, "Dataset Distillation via Factorization", NeurIPS 2022
(code: Huage001/DatasetFactorization, built on MTT).

The synthetic set is factorised into B bases per class and H small "hallucinator" networks;
the images are every hallucinator applied to every base, so B x H images per class are stored
as B images plus H tiny networks. Both factors are learned by trajectory matching through the
composed images (the gradient of the match loss w.r.t. the images is pulled back through the
hallucinators).

Hallucinator (the code's StyleTranslator): enc = conv k x k (no padding) -> f' = scale * f +
shift -> dec = transposed conv k x k, so the output has the input's size. In the code, scale and
shift hold one value per channel AND position of the encoded map (`affine="pixel"`, default);
`affine="channel"` keeps one per channel (the paper's wording of an affine transform). Bases
are initialised from real images of each class, hallucinators with scale 1, shift 0 and
PyTorch's default conv initialisation drawn from an explicit generator.

Not implemented: the code's adversarial contrastive term (an auxiliary feature extractor,
trained alongside, whose embedding similarity between two hallucinations of one base is
penalised with weight 0.1). Only the factorisation and the trajectory-matching term are here.
The code also applies ONE random hallucinator to a whole minibatch of bases per inner step;
the engine instead draws minibatches of (base, hallucinator) pairs uniformly from all B x H
images (same distribution per image, different grouping). Set batch_syn = C x B to match the
code's per-step batch size.

`ipc` of a HaBa run counts bases per class (the code's --ipc); the set holds ipc x H images per
class, and `HaBaParam.num_stored_values()` gives its real storage for budget comparisons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call

from meddistill.data.dataset import MedicalDataset
from meddistill.data.draws import check_ipc, real_per_class
from meddistill.errors import ConfigError
from meddistill.matching.config import SECTION, TrajectoryConfig
from meddistill.matching.engine import TrajectoryParts
from meddistill.matching.loop import DistillRun
from meddistill.methods.trajectory import random_windows, trajectory_method
from meddistill.utils import Options, derive_seed, make_generator

Affine = Literal["pixel", "channel"]


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ConfigError(f"option {name} must be a positive integer, got {value!r}")


@torch.no_grad()
def _init_conv_(module: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default conv init (kaiming_uniform a=sqrt(5), bias U(+-1/sqrt(fan_in))) from
    `generator`; fan_in is computed as torch does, also for transposed convs."""
    weight = module.weight
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    if module.bias is not None:
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(weight)
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        nn.init.uniform_(module.bias, -bound, bound, generator=generator)


class Hallucinator(nn.Module):
    """dec(scale * enc(x) + shift): a k x k conv encoder, a learnable affine map, a transposed
    conv decoder back to the input size (2D images or 3D volumes)."""

    def __init__(
        self,
        image_shape: tuple[int, ...],
        *,
        kernel_size: int = 3,
        mid_channels: int | None = None,
        affine: Affine = "pixel",
    ) -> None:
        super().__init__()
        channels, *spatial = (int(s) for s in image_shape)
        if len(spatial) not in (2, 3):
            raise ConfigError(
                f"HaBa needs images [C, H, W] or volumes [C, D, H, W], got shape {image_shape}"
            )
        if any(s < kernel_size for s in spatial):
            raise ConfigError(
                f"hallucinator kernel {kernel_size} is larger than the images {image_shape}; "
                "use a smaller haba kernel"
            )
        if affine not in ("pixel", "channel"):
            raise ConfigError(f"HaBa affine must be 'pixel' or 'channel', got {affine!r}")
        mid = int(mid_channels or channels)
        conv, deconv = (
            (nn.Conv2d, nn.ConvTranspose2d)
            if len(spatial) == 2
            else (nn.Conv3d, nn.ConvTranspose3d)
        )
        self.enc = conv(channels, mid, kernel_size)
        inner = [s - kernel_size + 1 for s in spatial] if affine == "pixel" else [1] * len(spatial)
        self.scale = nn.Parameter(torch.ones(1, mid, *inner))
        self.shift = nn.Parameter(torch.zeros(1, mid, *inner))
        self.dec = deconv(mid, channels, kernel_size)

    def reset_parameters_(self, generator: torch.Generator) -> None:
        """Seeded init: enc then dec from `generator`, scale 1, shift 0."""
        _init_conv_(self.enc, generator)
        _init_conv_(self.dec, generator)
        with torch.no_grad():
            self.scale.fill_(1.0)
            self.shift.fill_(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.scale * self.enc(x) + self.shift)


class HaBaParam(nn.Module):
    """B bases per class x H hallucinators -> C x B x H images, differentiable in both factors.

    `images()` is [C * B * H, *image_shape], class by class; within a class, image b * H + h is
    hallucinator h applied to base b. Everything random is drawn from `generator` (bases from
    N(0, 1) unless `bases` [C, B, *image_shape] is given, then the hallucinators in order).

    The engine-facing protocol (see the report to the lead): `initial_tensors()`,
    `render(tensors)`, `learning_rates(lr_img)`, `images_per_class`, `hard_labels()`.
    """

    def __init__(
        self,
        num_bases_per_class: int,
        num_hallucinators: int,
        image_shape: tuple[int, ...],
        *,
        num_classes: int,
        generator: torch.Generator,
        bases: torch.Tensor | None = None,
        kernel_size: int = 3,
        mid_channels: int | None = None,
        affine: Affine = "pixel",
        lr_hallucinator: float | None = None,
    ) -> None:
        super().__init__()
        _check_positive("haba bases per class (ipc)", num_bases_per_class)
        _check_positive("haba_hallucinators", num_hallucinators)
        _check_positive("num_classes", num_classes)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.num_classes = int(num_classes)
        self.num_bases = int(num_bases_per_class)
        self.num_hallucinators = int(num_hallucinators)
        self.lr_hallucinator = lr_hallucinator
        shape = (self.num_classes, self.num_bases, *self.image_shape)
        if bases is None:
            bases = torch.randn(shape, generator=generator)
        elif tuple(bases.shape) != shape:
            raise ConfigError(f"HaBa bases must have shape {shape}, got {tuple(bases.shape)}")
        # built on the CPU (the generator's device); move the module with .to(device)
        self.bases = nn.Parameter(bases.detach().to("cpu", torch.float32).clone())
        with torch.device("meta"):
            layers = [
                Hallucinator(
                    self.image_shape,
                    kernel_size=kernel_size,
                    mid_channels=mid_channels,
                    affine=affine,
                )
                for _ in range(self.num_hallucinators)
            ]
        self.hallucinators = nn.ModuleList(layers).to_empty(device=self.bases.device)
        for layer in self.hallucinators:
            layer.reset_parameters_(generator)
        self.config = {
            "bases_per_class": self.num_bases,
            "hallucinators": self.num_hallucinators,
            "kernel_size": int(kernel_size),
            "mid_channels": int(mid_channels or self.image_shape[0]),
            "affine": affine,
        }

    @classmethod
    def from_real(
        cls,
        dataset: MedicalDataset,
        num_bases_per_class: int,
        num_hallucinators: int,
        *,
        generator: torch.Generator,
        **kwargs,
    ) -> HaBaParam:
        """Bases = `num_bases_per_class` distinct random real training images of each class
        (drawn first, with `generator`), then the hallucinators from the same generator."""
        _check_positive("haba bases per class (ipc)", num_bases_per_class)
        check_ipc(dataset, num_bases_per_class)
        images, _ = real_per_class(dataset, num_bases_per_class, generator)
        bases = images.to("cpu", torch.float32)
        return cls(
            num_bases_per_class,
            num_hallucinators,
            dataset.image_shape,
            num_classes=dataset.num_classes,
            generator=generator,
            bases=bases.view(dataset.num_classes, num_bases_per_class, *dataset.image_shape),
            **kwargs,
        )

    @property
    def images_per_class(self) -> int:
        return self.num_bases * self.num_hallucinators

    def forward(self) -> torch.Tensor:
        flat = self.bases.flatten(0, 1)  # [C * B, ...], class by class
        composed = torch.stack([h(flat) for h in self.hallucinators], dim=1)  # [C * B, H, ...]
        return composed.flatten(0, 1)

    def images(self) -> torch.Tensor:
        """All C x B x H composed images (differentiable in bases and hallucinators)."""
        return self()

    def hard_labels(self) -> torch.Tensor:
        """Class indices of `images()`: class c for its B x H images."""
        return torch.arange(self.num_classes, device=self.bases.device).repeat_interleave(
            self.images_per_class
        )

    # The engine-facing protocol --------------------------------------------------------
    def initial_tensors(self) -> dict[str, torch.Tensor]:
        """The leaves the engine optimises, by name (detached copies)."""
        return {name: p.detach().clone() for name, p in self.named_parameters()}

    def render(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """`images()` computed from the given leaves instead of the module's own parameters."""
        return functional_call(self, tensors, ())

    def learning_rates(self, lr_img: float) -> dict[str, float]:
        """Bases use lr_img; hallucinator tensors lr_hallucinator (lr_img when unset)."""
        lr_hal = lr_img if self.lr_hallucinator is None else float(self.lr_hallucinator)
        return {
            name: (float(lr_img) if name == "bases" else lr_hal)
            for name, _ in self.named_parameters()
        }

    def num_stored_values(self) -> int:
        """Numbers a user must store to rebuild the set: bases plus hallucinator parameters."""
        return sum(p.numel() for p in self.parameters())

    def describe(self) -> dict[str, object]:
        """Metadata for the synthetic set: the factorisation and its storage."""
        return {
            **self.config,
            "images_per_class": self.images_per_class,
            "stored_values": self.num_stored_values(),
        }


@dataclass
class HaBaConfig(TrajectoryConfig):
    """MTT's knobs (ipc counts bases per class) plus the hallucinators and their step size;
    defaults: the code's CIFAR-10 run."""

    syn_steps: int = 30
    max_start: int = 20
    lr_img: float = 100.0
    momentum_img: float = 0.95
    momentum_lr: float = 0.9
    syn_lr_init: float = 0.001
    haba_hallucinators: int = 5
    lr_hallucinator: float = 100.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check = Options(SECTION, self)
        check.counts("haba_hallucinators")
        check.positive("lr_hallucinator")
        if self.soft_labels:  # the rendered images are not the ones an expert would label
            check.fail("soft_labels", "false for haba (its rendered images keep hard labels)")
        if self.parameterization != "pixel":  # its images are bases x hallucinators already
            check.fail("parameterization", "pixel for haba (it factorises its images itself)")


def parts(cfg: HaBaConfig, dataset: MedicalDataset, run: DistillRun) -> TrajectoryParts:
    """MTT's parts on images rendered as hallucinators x bases (bases from real images)."""
    param = HaBaParam.from_real(
        dataset,
        cfg.ipc,
        cfg.haba_hallucinators,
        generator=make_generator(derive_seed(run.seed, "haba")),
        lr_hallucinator=cfg.lr_hallucinator,
    )
    return TrajectoryParts(windows=random_windows(cfg), parameterization=param)


METHOD = replace(
    trajectory_method("haba", "Liu, Wang, Yang, Wang, NeurIPS 2022", HaBaConfig, parts),
    reads_real="initialises its bases from real training images (whatever match.init says)",
)
