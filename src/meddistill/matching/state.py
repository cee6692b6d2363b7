"""Everything a distillation needs to resume exactly, saved as ONE safetensors file.

Tensors (images, step size, labels, momentum buffers, HoP-TM mask, EMA, PTM snapshots, the
generator state) and the small scalars (iteration, kappa base) travel in one file, written
atomically, so a crash can never pair new images with an old iteration count.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from meddistill.errors import ArtifactError, ConfigError
from meddistill.utils import atomic_path


@dataclass
class DistillState:
    """The mutable state of a distillation between two iterations."""

    iteration: int
    images: torch.Tensor
    lr_param: torch.Tensor  # the step size (linear) or its log (log parameterisation)
    labels: torch.Tensor  # int64 [N] hard labels or float [N, C] logits
    momentum_images: torch.Tensor
    momentum_lr: torch.Tensor
    momentum_labels: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    ema: torch.Tensor | None = None
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)
    generator_state: torch.Tensor | None = None
    kappa_base: float | None = None
    extra: dict[str, float] = field(default_factory=dict)
    # An image parameterisation's leaves (HaBa) and their momentum, by name
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    momentum_params: dict[str, torch.Tensor] = field(default_factory=dict)

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {
            "images": self.images,
            "lr_param": self.lr_param.reshape(1),
            "labels": self.labels,
            "momentum_images": self.momentum_images,
            "momentum_lr": self.momentum_lr.reshape(1),
        }
        for name in ("momentum_labels", "mask", "ema", "generator_state"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value.to(torch.uint8) if name == "mask" else value
        for it, snap in self.snapshots.items():
            out[f"snapshot_{it}"] = snap
        for name, value in self.params.items():
            out[f"param.{name}"] = value
            out[f"momentum_param.{name}"] = self.momentum_params[name]
        return {k: v.detach().to("cpu").contiguous() for k, v in out.items()}

    def save(self, path: str | Path, meta: dict[str, object]) -> None:
        """Write atomically; `meta` (config, ids) is stored in the file's header."""
        header = {
            "iteration": str(self.iteration),
            "kappa_base": json.dumps(self.kappa_base),
            "extra": json.dumps(self.extra),
            "meta": json.dumps(meta, default=str),
        }
        with atomic_path(path) as tmp:
            save_file(self.tensors(), str(tmp), metadata=header)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str) -> tuple[DistillState, dict]:
        """Read a checkpoint back onto `device`; returns (state, stored meta)."""
        try:
            with safe_open(str(path), framework="pt") as fh:
                header = fh.metadata() or {}
            t = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise ArtifactError(
                f"checkpoint {path} is unreadable ({exc}); delete it to restart the run"
            ) from exc

        def dev(name: str) -> torch.Tensor | None:
            return t[name].to(device) if name in t else None

        snapshots = {
            int(k.split("_", 1)[1]): v.to(device) for k, v in t.items() if k.startswith("snapshot_")
        }
        mask = dev("mask")

        def prefixed(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix) :]: v.to(device) for k, v in t.items() if k.startswith(prefix)}

        state = cls(
            iteration=int(header["iteration"]),
            images=t["images"].to(device),
            lr_param=t["lr_param"].reshape(()).to(device),
            labels=t["labels"].to(device),
            momentum_images=t["momentum_images"].to(device),
            momentum_lr=t["momentum_lr"].reshape(()).to(device),
            momentum_labels=dev("momentum_labels"),
            mask=mask.to(torch.bool) if mask is not None else None,
            ema=dev("ema"),
            snapshots=snapshots,
            generator_state=t.get("generator_state"),
            kappa_base=json.loads(header.get("kappa_base", "null")),
            extra=json.loads(header.get("extra", "{}")),
            params=prefixed("param."),
            momentum_params=prefixed("momentum_param."),
        )
        return state, json.loads(header.get("meta", "{}"))


S = TypeVar("S")


def resume_state(
    ckpt: Path,
    load: Callable[[Path], tuple[S, dict]],
    expected_meta: dict[str, Any],
    generator: torch.Generator,
    what: str,
) -> S | None:
    """The state in `ckpt` with `generator` set to its saved draws, or None when there is no
    checkpoint. A checkpoint whose metadata differs from `expected_meta` (compared as JSON,
    as it was stored) is refused: resuming it would mix two runs; `what` names what differs."""
    if not ckpt.is_file():
        return None
    state, meta = load(ckpt)
    if meta != json.loads(json.dumps(expected_meta, default=str)):
        raise ConfigError(
            f"checkpoint {ckpt} belongs to another {what}; use another --out folder, or delete "
            "it to start over"
        )
    saved = getattr(state, "generator_state", None)
    if saved is not None:
        generator.set_state(saved)
    return state
