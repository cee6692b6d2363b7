"""The synthetic set: the artifact a user shares. safetensors tensors plus JSON metadata.

Layout of a synthetic-set folder:
  synthetic.safetensors  images (normalised, float32), labels (int64 [N] or float32 soft [N, C]),
                         and, when learned, syn_lr (the student step size, a 0-d tensor)
  meta.json              dataset name and source_id, normalisation, class names, method,
                         resolved config, seed, buffer id, package version
Images stay in the dataset's normalised space; the normalisation recorded here maps them back
to pixels for export and display.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from meddistill import __version__
from meddistill.data.dataset import MedicalDataset, Normalization
from meddistill.errors import ArtifactError
from meddistill.utils import atomic_path, write_json_atomic

TENSORS = "synthetic.safetensors"
META = "meta.json"


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
        """Write the folder atomically file by file (tensors first, metadata last)."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {
            "images": self.images.detach().to("cpu", torch.float32).contiguous(),
            "labels": self.labels.detach().cpu().contiguous(),
        }
        if self.syn_lr is not None:
            tensors["syn_lr"] = torch.tensor(float(self.syn_lr), dtype=torch.float32)
        with atomic_path(out / TENSORS) as tmp:
            save_file(tensors, str(tmp))
        meta = {
            **self.meta,
            "dataset": self.dataset,
            "source_id": self.source_id,
            "class_names": list(self.class_names),
            "normalization": self.normalization.to_dict(),
            "num_images": int(self.images.shape[0]),
            "image_shape": list(self.images.shape[1:]),
            "soft_labels": self.labels.dim() == 2,
            "syn_lr": self.syn_lr,
            "meddistill_version": __version__,
        }
        write_json_atomic(out / META, meta)
        return out

    @classmethod
    def load(cls, path: str | Path) -> SyntheticSet:
        """Read a folder (or its synthetic.safetensors); errors name the file and the fix."""
        p = Path(path)
        folder = p.parent if p.suffix == ".safetensors" else p
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
        except (SafetensorError, OSError, ValueError) as exc:
            raise ArtifactError(
                f"synthetic set at {folder} is unreadable ({exc}); re-create it"
            ) from exc
        if "images" not in tensors or "labels" not in tensors:
            raise ArtifactError(f"{tensor_file} lacks 'images' or 'labels'; re-create it")
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

    def to_uint8(self) -> np.ndarray:
        """Pixels in MedMNIST layout: [N, H, W] gray, [N, H, W, 3] RGB, [N, D, H, W] volumes."""
        pixels = self.normalization.invert(self.images.detach().cpu().float()).clamp(0, 1)
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
        with atomic_path(target) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, train_images=self.to_uint8(), train_labels=labels)
        return target
