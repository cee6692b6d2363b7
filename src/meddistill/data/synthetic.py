"""The synthetic set: the artifact a user shares. safetensors tensors plus JSON metadata.

Layout of a synthetic-set folder:
  synthetic.safetensors  images (normalised, float32), labels (int64 [N] or float32 soft [N, C]),
                         and, when learned, syn_lr (the student step size, a 0-d tensor); a
                         set learned in a compact parameterisation (dct, latent) also holds
                         its codes as param.<name> (meta.json: `parameterization` says how to
                         decode them, `stored_bytes` what the codes, labels and any decoder take)
  meta.json              dataset name and source_id, normalisation, class names, method,
                         resolved config, seed, buffer id, package version
Images stay in the dataset's normalised space; the normalisation recorded here maps them back
to pixels for export and display.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from meddistill import __version__
from meddistill.data.dataset import MedicalDataset, Normalization
from meddistill.errors import ArtifactError
from meddistill.utils import atomic_path, json_text

TENSORS = "synthetic.safetensors"
CODE_PREFIX = "param."  # a compact parameterisation's tensors in the set file
META = "meta.json"
_REMAKE = "re-create the set with `meddistill distill` (or `meddistill coreset`)"
_SOFT_SUM_TOL = 1e-3  # softmax rows in float32 sum to 1 well within this


@dataclass
class SyntheticSet:
    """Images, labels and the learned step size, with what produced them."""

    images: torch.Tensor
    labels: torch.Tensor
    normalization: Normalization
    class_names: list[str]
    dataset: str
    source_id: str
    syn_lr: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    codes: dict[str, torch.Tensor] = field(default_factory=dict)  # dct / latent codes, if any

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def hard_labels(self) -> torch.Tensor:
        """Class indices, also for soft labels (argmax)."""
        return self.labels if self.labels.dim() == 1 else self.labels.argmax(dim=1)

    def ipc(self) -> int:
        """Images per class (the smallest class count, for balanced sets the IPC)."""
        counts = torch.bincount(self.hard_labels.cpu(), minlength=self.num_classes)
        return int(counts.min())

    def save(self, folder: str | Path) -> Path:
        """Write both files to temporaries first and rename them only when both are complete
        (tensors, then the metadata that marks the set done): a full disk or a kill mid-write
        leaves the previous set, or none, never tensors without their metadata."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {
            "images": self.images.detach().to("cpu", torch.float32).contiguous(),
            "labels": self.labels.detach().cpu().contiguous(),
        }
        if self.syn_lr is not None:
            tensors["syn_lr"] = torch.tensor(float(self.syn_lr), dtype=torch.float32)
        for name, code in self.codes.items():
            tensors[f"{CODE_PREFIX}{name}"] = code.detach().to("cpu", torch.float32).contiguous()
        with atomic_path(out / META) as meta_tmp, atomic_path(out / TENSORS) as tensors_tmp:
            save_file(tensors, str(tensors_tmp))
            meta_tmp.write_text(json_text(self._meta(), indent=2, sort_keys=True) + "\n")
        return out

    def stored_bytes(self) -> int:
        """What sharing the set takes: its codes (or images), labels and any decoder the codes
        need (a latent set's), as float32 / int64."""
        kept = list(self.codes.values()) or [self.images.to(torch.float32)]
        decoder = int((self.meta.get("parameterization") or {}).get("decoder_bytes", 0))
        labels = self.labels.numel() * self.labels.element_size()
        return sum(t.numel() * 4 for t in kept) + labels + decoder

    def _meta(self) -> dict[str, Any]:
        """meta.json: what produced the set and how to read it back."""
        return {
            **self.meta,
            "dataset": self.dataset,
            "source_id": self.source_id,
            "class_names": list(self.class_names),
            "normalization": self.normalization.to_dict(),
            "num_images": int(self.images.shape[0]),
            "image_shape": list(self.images.shape[1:]),
            "soft_labels": self.labels.dim() == 2,
            "syn_lr": self.syn_lr,
            "stored_bytes": self.stored_bytes(),
            "meddistill_version": __version__,
        }

    @classmethod
    def load(cls, path: str | Path) -> SyntheticSet:
        """Read a folder (or its synthetic.safetensors), checked by validate_synthetic so a
        damaged or hand-edited set is refused here, not misread later."""
        p = Path(path)
        folder = p.parent if p.suffix == ".safetensors" else p
        tensors, meta = _read_files(folder)
        validate_synthetic(tensors, meta, folder)
        syn_lr = float(tensors["syn_lr"]) if "syn_lr" in tensors else meta.get("syn_lr")
        return cls(
            images=tensors["images"],
            labels=tensors["labels"],
            normalization=Normalization.from_dict(meta["normalization"]),
            class_names=list(meta["class_names"]),
            dataset=str(meta["dataset"]),
            source_id=str(meta["source_id"]),
            syn_lr=syn_lr,
            meta=meta,
            codes={
                k[len(CODE_PREFIX) :]: v for k, v in tensors.items() if k.startswith(CODE_PREFIX)
            },
        )

    def check_compatible(self, dataset: MedicalDataset, where: str = "") -> None:
        """Refuse to evaluate a set against a dataset it was not made from."""
        if (
            self.source_id != dataset.source_id
            or tuple(self.images.shape[1:]) != dataset.image_shape
        ):
            raise ArtifactError(
                f"synthetic set {where} was made from {self.dataset} (source {self.source_id}, "
                f"images {tuple(self.images.shape[1:])}), not {dataset.name} (source "
                f"{dataset.source_id}, images {dataset.image_shape}); evaluate it with --dataset "
                f"{self.dataset} and the same preprocessing"
            )
        if self.num_classes != dataset.num_classes:
            raise ArtifactError(
                f"synthetic set {where} names {self.num_classes} classes but {dataset.name} has "
                f"{dataset.num_classes}; re-create the set from {dataset.name} with `meddistill "
                "distill`"
            )

    def to_uint8(self) -> np.ndarray:
        """Pixels in MedMNIST layout: [N, H, W] gray, [N, H, W, 3] RGB, [N, D, H, W] volumes."""
        images = self.images.detach().cpu().float()
        bad = int((~torch.isfinite(images)).sum())
        if bad:  # clamp would turn NaN into black pixels without a word
            raise ArtifactError(
                f"synthetic set of {self.dataset} holds {bad} non-finite image value(s) (NaN or "
                f"inf), which have no pixel value; {_REMAKE}"
            )
        pixels = self.normalization.invert(images).clamp(0, 1)
        arr = (pixels * 255.0).round().to(torch.uint8).numpy()
        if arr.shape[1] == 1:
            return arr[:, 0]
        if arr.ndim == 4:
            return np.transpose(arr, (0, 2, 3, 1))
        return arr

    def export_npz(self, path: str | Path) -> Path:
        """A MedMNIST-style npz (train_images/train_labels, uint8) for use without this package."""
        target = Path(path)
        labels = self.hard_labels.cpu().numpy().astype(np.int64).reshape(-1, 1)
        pixels = self.to_uint8()  # before the target's folder is made: a refusal leaves nothing
        with atomic_path(target) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, train_images=pixels, train_labels=labels)
        return target


# Reading and validation ----------------------------------------------------------------------


def _read_files(folder: Path) -> tuple[dict[str, torch.Tensor], Any]:
    """The two files of a set folder, parsed; not yet checked."""
    tensor_file, meta_file = folder / TENSORS, folder / META
    for f in (tensor_file, meta_file):
        if not f.is_file():
            raise ArtifactError(
                f"synthetic set file missing: {f}; give the folder written by "
                "`meddistill distill` (it holds synthetic.safetensors and meta.json)"
            )
    try:
        tensors = load_file(str(tensor_file))
        meta = json.loads(meta_file.read_text())
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise ArtifactError(
            f"synthetic set at {folder} is unreadable ({reason}); {_REMAKE}"
        ) from exc
    return tensors, meta


def validate_synthetic(tensors: dict[str, torch.Tensor], meta: Any, folder: str | Path) -> None:
    """Refuse a synthetic set that a reader would misread or crash on (a hand-edited meta.json,
    tensors of another dtype or rank, labels that disagree with the class names): one
    ArtifactError naming the file, the defect and the fix."""
    folder = Path(folder)
    tensor_file, meta_file = folder / TENSORS, folder / META
    _check_meta(meta, meta_file)
    channels, num_classes = len(meta["normalization"]["mean"]), len(meta["class_names"])
    images = _check_images(tensors.get("images"), tensor_file, channels)
    labels = tensors.get("labels")
    if labels is None:
        _fail(tensor_file, "lacks the tensor 'labels'")
    if labels.dim() == 1:
        _check_hard_labels(labels, tensor_file, images.shape[0], num_classes)
    elif labels.dim() == 2:
        _check_soft_labels(labels, tensor_file, images.shape[0], num_classes)
    else:
        _fail(
            tensor_file,
            f"holds labels of shape {list(labels.shape)}, expected int64 [N] class indices "
            "or float32 [N, C] soft labels",
        )
    _check_syn_lr(tensors.get("syn_lr"), tensor_file)
    recorded = {
        "num_images": int(images.shape[0]),
        "image_shape": list(images.shape[1:]),
        "soft_labels": labels.dim() == 2,
    }
    for key, actual in recorded.items():
        if key in meta and (meta[key] != actual or type(meta[key]) is not type(actual)):
            _fail(meta_file, f"records {key} = {_show(meta[key])} but {TENSORS} holds {actual}")


def _fail(file: Path, defect: str) -> NoReturn:
    raise ArtifactError(f"synthetic set file {file} {defect}; {_REMAKE}")


def _show(value: Any) -> str:
    """A value from a JSON file, short and on one line."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_finite_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _field(meta: dict[str, Any], key: str, expected: str) -> str:
    if key not in meta:
        return f"lacks '{key}' ({expected})"
    return f"has {key} = {_show(meta[key])}, expected {expected}"


def _check_meta(meta: Any, file: Path) -> None:
    """What the reader takes from meta.json: names, class names, normalisation, syn_lr."""
    if not isinstance(meta, dict):
        _fail(file, f"holds {_show(meta)}, not a JSON object")
    for key in ("dataset", "source_id"):
        if not isinstance(meta.get(key), str) or not meta[key]:
            _fail(file, _field(meta, key, "a non-empty string"))
    names = meta.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        _fail(file, _field(meta, "class_names", "a non-empty list of strings"))
    _check_normalization(meta, file)
    lr = meta.get("syn_lr")
    if lr is not None and not (_is_finite_number(lr) and lr > 0):
        _fail(file, _field(meta, "syn_lr", "a finite number > 0 or null"))


def _check_normalization(meta: dict[str, Any], file: Path) -> None:
    """One finite mean and one positive std per channel (export divides nothing, but inverts)."""
    norm = meta.get("normalization")
    if not isinstance(norm, dict):
        _fail(file, _field(meta, "normalization", "an object with 'mean' and 'std' lists"))
    for key in ("mean", "std"):
        values = norm.get(key)
        if not isinstance(values, list) or not values or not all(map(_is_finite_number, values)):
            _fail(
                file,
                f"has normalization.{key} = {_show(values)}, expected a non-empty list of "
                "finite numbers (one per channel)",
            )
    if len(norm["mean"]) != len(norm["std"]):
        _fail(
            file,
            f"has {len(norm['mean'])} normalization mean(s) but {len(norm['std'])} std(s), "
            "expected one of each per channel",
        )
    if any(v <= 0 for v in norm["std"]):
        _fail(file, f"has normalization.std = {_show(norm['std'])}; every std must be > 0")


def _check_images(images: torch.Tensor | None, file: Path, channels: int) -> torch.Tensor:
    """float32 [N, C, H, W] or [N, C, D, H, W], N >= 1, C as the normalisation, all finite."""
    if images is None:
        _fail(file, "lacks the tensor 'images'")
    if images.dtype != torch.float32:
        _fail(file, f"stores images as {_dtype(images)}, expected float32")
    if images.dim() not in (4, 5) or 0 in images.shape:
        _fail(
            file,
            f"holds images of shape {list(images.shape)}, expected [N, C, H, W] or "
            "[N, C, D, H, W] with no empty dimension",
        )
    if images.shape[1] != channels:
        _fail(
            file.with_name(META),
            f"has a normalization of {channels} channel(s) but the images in {TENSORS} have "
            f"{images.shape[1]}",
        )
    bad = int((~torch.isfinite(images)).sum())
    if bad:
        _fail(file, f"holds {bad} non-finite image value(s) (NaN or inf)")
    return images


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _check_hard_labels(labels: torch.Tensor, file: Path, n: int, num_classes: int) -> None:
    """int64 class indices, one per image, covering exactly the classes meta.json names."""
    if labels.dtype != torch.int64:
        _fail(file, f"stores hard labels as {_dtype(labels)}, expected int64 class indices")
    if labels.shape[0] != n:
        _fail(file, f"holds {n} images but {labels.shape[0]} labels")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        _fail(
            file,
            f"holds class indices {lo}..{hi}, outside 0..{num_classes - 1} of the "
            f"{num_classes} classes {META} names",
        )
    missing = sorted(set(range(num_classes)) - set(labels.unique().tolist()))
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        _fail(
            file,
            f"has no image of class(es) {shown} of the {num_classes} classes {META} names "
            "(labels and class names disagree)",
        )


def _check_soft_labels(labels: torch.Tensor, file: Path, n: int, num_classes: int) -> None:
    """float32 [N, C] probabilities (the softmax the engine shares), C as meta.json names."""
    if labels.dtype != torch.float32:
        _fail(file, f"stores soft labels as {_dtype(labels)}, expected float32")
    if labels.shape[0] != n:
        _fail(file, f"holds {n} images but {labels.shape[0]} labels")
    if labels.shape[1] != num_classes:
        _fail(
            file,
            f"holds soft labels over {labels.shape[1]} classes but {META} names {num_classes}",
        )
    if not bool(torch.isfinite(labels).all()):
        _fail(file, "holds non-finite soft labels (NaN or inf)")
    off = float((labels.sum(dim=1) - 1).abs().max())
    if float(labels.min()) < 0 or float(labels.max()) > 1 or off > _SOFT_SUM_TOL:
        _fail(file, "holds soft labels that are not probabilities (rows in [0, 1] summing to 1)")


def _check_syn_lr(lr: torch.Tensor | None, file: Path) -> None:
    """One finite positive step size (a 0-d float32 tensor as written), or none."""
    if lr is None:
        return
    if not lr.is_floating_point() or lr.dim() > 1 or lr.numel() != 1:
        _fail(
            file,
            f"holds syn_lr as a {_dtype(lr)} tensor of shape {list(lr.shape)}, expected one "
            "float number (a 0-d tensor)",
        )
    value = float(lr.reshape(()))
    if not (math.isfinite(value) and value > 0):
        _fail(file, f"holds syn_lr = {value:.4g}, expected a finite step size > 0")
