"""The one in-memory dataset type every loader produces and every stage consumes.

Images are float32 tensors, already normalised with statistics computed from the train split,
shaped [N, C, H, W] (2D) or [N, C, D, H, W] (3D). The normalisation travels with the dataset
and with everything derived from it (buffers, synthetic sets), so images can be mapped back to
pixels for export and display.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from meddistill.errors import ConfigError, DatasetCorruptError


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std applied as (x - mean) / std to images in [0, 1]."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        # A std of 0 divides by zero and a negative one flips the images: refuse both here,
        # whatever built the normalisation (a config, a saved set, a buffer).
        ok = 1 <= len(self.mean) == len(self.std)
        ok = ok and all(math.isfinite(m) for m in self.mean)
        if not (ok and all(math.isfinite(s) and s > 0 for s in self.std)):
            raise ConfigError(
                f"normalisation mean {list(self.mean)} / std {list(self.std)} is unusable: it "
                "needs one finite mean and one finite std > 0 per channel"
            )

    def _shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return (1, len(self.mean)) + (1,) * (x.dim() - 2)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise images in [0, 1] laid out [N, C, ...]."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(self._shape(x))
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(self._shape(x))
        return (x - mean) / std

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """Map normalised images back to [0, 1] pixel scale (not clamped)."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(self._shape(x))
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(self._shape(x))
        return x * std + mean

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, list[float]]) -> Normalization:
        return cls(tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]))

    @classmethod
    def from_images(cls, images01: torch.Tensor) -> Normalization:
        """Per-channel statistics of [N, C, ...] images in [0, 1] (std unbiased, as torch.std).

        Two passes over chunks of images: each image's per-channel sum (and sum of squared
        deviations) is taken in float32 by torch's cascade summation, and those partial sums
        are accumulated in float64. This is as accurate as a float64 pass to about 1e-7
        relative, several times faster, never copies the whole set (PathMNIST-224 in float64
        would need 100 GB), and does not depend on the memory format of the input.
        """
        n, c = images01.shape[0], images01.shape[1]
        per_channel = max(1, images01[0, 0].numel()) if n else 1
        step = max(1, (1 << 22) // (c * per_channel))
        count = n * per_channel
        total = torch.zeros(c, dtype=torch.float64, device=images01.device)
        for i in range(0, n, step):
            chunk = images01[i : i + step].float().contiguous().view(-1, c, per_channel)
            total += chunk.sum(dim=2).double().sum(dim=0)
        mean = total / max(count, 1)
        mean32 = mean.float().view(1, c, 1)
        sq = torch.zeros(c, dtype=torch.float64, device=images01.device)
        for i in range(0, n, step):
            dev = images01[i : i + step].float().contiguous().view(-1, c, per_channel) - mean32
            sq += dev.mul_(dev).sum(dim=2).double().sum(dim=0)
        std = (sq / max(count - 1, 1)).sqrt().clamp_min(1e-6)
        return cls(tuple(mean.tolist()), tuple(std.tolist()))


@dataclass
class Split:
    """One split: normalised images and int64 class indices."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.shape[0] != self.labels.shape[0]:
            raise ConfigError(
                f"split has {self.images.shape[0]} images but {self.labels.shape[0]} labels"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclass
class MedicalDataset:
    """A classification dataset held as tensors, with the facts every later stage needs.

    `source_id` identifies the exact bytes the dataset came from (md5 of the npz, or a hash of
    the image folder listing plus the preprocessing); buffers and synthetic sets record it, and
    loading them checks it.
    """

    name: str
    splits: dict[str, Split]
    class_names: list[str]
    normalization: Normalization
    source_id: str
    task: str = "multi-class"
    info: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if "train" not in self.splits or "test" not in self.splits:
            raise ConfigError(f"dataset '{self.name}' needs a train and a test split")
        for split in ("train", "test"):
            if len(self.splits[split]) == 0:
                raise DatasetCorruptError(
                    f"dataset '{self.name}' has an empty {split} split (0 images); nothing can "
                    f"be {'trained' if split == 'train' else 'evaluated'}: use a dataset file or "
                    f"folder whose {split} split holds images"
                )
        self._check_classes()

    def _check_classes(self) -> None:
        """Classification needs two classes with training images; one class would train a
        network that cannot be wrong and give an undefined AUC."""
        labels = self.train.labels
        if labels.dim() != 1:  # not class indices: nothing to count
            return
        present = torch.unique(labels).tolist()
        if len(present) >= 2 and len(self.class_names) >= 2:
            return
        names = [self.class_names[c] for c in present if 0 <= c < len(self.class_names)]
        raise DatasetCorruptError(
            f"dataset '{self.name}' has training images of {len(present)} class(es) "
            f"({', '.join(map(repr, names)) or 'none'}) of {len(self.class_names)}; "
            "classification needs at least 2: add images of another class"
        )

    # Shapes -----------------------------------------------------------------------------
    @property
    def train(self) -> Split:
        return self.splits["train"]

    @property
    def test(self) -> Split:
        return self.splits["test"]

    @property
    def val(self) -> Split | None:
        return self.splits.get("val")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def spatial_dims(self) -> int:
        """2 for images, 3 for volumes."""
        return int(self.train.images.dim() - 2)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """[C, H, W] or [C, D, H, W]."""
        return tuple(int(s) for s in self.train.images.shape[1:])

    @property
    def image_size(self) -> int:
        """Side length (images are square or cubic in this field)."""
        return int(self.train.images.shape[-1])

    # Class structure -------------------------------------------------------------------
    def class_indices(self, split: str = "train") -> list[torch.Tensor]:
        """For each class, the indices of its samples in `split` (ascending)."""
        labels = self.splits[split].labels
        return [
            torch.nonzero(labels == c, as_tuple=False).flatten() for c in range(self.num_classes)
        ]

    def class_counts(self, split: str = "train") -> list[int]:
        labels = self.splits[split].labels
        return torch.bincount(labels, minlength=self.num_classes).tolist()

    def to(self, device: torch.device | str) -> MedicalDataset:
        """A copy whose tensors live on `device` (batches then never leave it)."""
        return MedicalDataset(
            name=self.name,
            splits={k: v.to(device) for k, v in self.splits.items()},
            class_names=list(self.class_names),
            normalization=self.normalization,
            source_id=self.source_id,
            task=self.task,
            info=dict(self.info),
        )

    def describe(self) -> dict[str, object]:
        """The facts `meddistill info` prints and artifacts record."""
        return {
            "name": self.name,
            "task": self.task,
            "source_id": self.source_id,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "image_shape": list(self.image_shape),
            "spatial_dims": self.spatial_dims,
            "splits": {k: len(v) for k, v in self.splits.items()},
            "class_counts": {k: self.class_counts(k) for k in self.splits},
            "normalization": self.normalization.to_dict(),
            **({"info": self.info} if self.info else {}),
        }
