"""Image snapshots saved during a distillation, for analyses over the run (PTM Fig. 5a).

The engine keeps only the final set and the latest checkpoint; the within-class MMD along a
run needs the images at several iterations. A run folder may hold
snapshots/iter_<iteration, 7 digits>.safetensors, each with tensors "images" (float32,
normalised, as the synthetic set) and "labels" (as the engine stores them) and the iteration
in the header. `meddistill report` draws the MMD curve when two or more are present.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NoReturn

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from meddistill.errors import ArtifactError
from meddistill.utils import atomic_path

SNAPSHOT_DIR = "snapshots"
_NAME = re.compile(r"^iter_(\d+)\.safetensors$")
_FIX = "delete it (a distillation with match.snapshot_every=k writes snapshots again)"


def snapshot_path(run_dir: str | Path, iteration: int) -> Path:
    return Path(run_dir) / SNAPSHOT_DIR / f"iter_{int(iteration):07d}.safetensors"


def save_snapshot(
    run_dir: str | Path, iteration: int, images: torch.Tensor, labels: torch.Tensor
) -> Path:
    """Write the images and labels of `iteration` atomically (a re-run overwrites its own)."""
    target = snapshot_path(run_dir, iteration)
    tensors = {
        "images": images.detach().to("cpu", torch.float32).contiguous(),
        "labels": labels.detach().cpu().contiguous(),
    }
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata={"iteration": str(int(iteration))})
    return target


def load_snapshots(run_dir: str | Path) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """(iteration, images, labels) of every snapshot, by iteration; [] when there are none.
    Each is checked by validate_snapshot, and all must hold the same set's shapes."""
    folder = Path(run_dir) / SNAPSHOT_DIR
    if not folder.is_dir():
        return []
    out: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    for path in sorted(folder.iterdir()):
        match = _NAME.match(path.name)
        if not match:
            continue
        try:
            with safe_open(str(path), framework="pt") as fh:
                header = fh.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise ArtifactError(f"snapshot {path} is unreadable ({reason}); {_FIX}") from exc
        iteration = validate_snapshot(tensors, header.get("iteration", match.group(1)), path)
        if out and tensors["images"].shape != out[0][1].shape:
            raise ArtifactError(
                f"snapshot {path} holds images of shape {list(tensors['images'].shape)}, but the "
                f"run's other snapshots {list(out[0][1].shape)}; {_FIX}"
            )
        out.append((iteration, tensors["images"], tensors["labels"]))
    return sorted(out, key=lambda s: s[0])


def validate_snapshot(tensors: dict[str, torch.Tensor], iteration: str, path: Path) -> int:
    """Refuse a snapshot the MMD analysis would misread: float32 finite images [N, C, ...],
    int64 class indices [N] >= 0, an iteration >= 0. Returns the iteration."""

    def fail(defect: str) -> NoReturn:
        raise ArtifactError(f"snapshot {path} {defect}; {_FIX}")

    if not re.fullmatch(r"[0-9]{1,12}", str(iteration)):
        fail(f"has iteration {str(iteration)[:20]!r} in its header, expected an integer >= 0")
    images, labels = tensors.get("images"), tensors.get("labels")
    if images is None or labels is None:
        fail("lacks 'images' or 'labels'")
    if images.dtype != torch.float32 or images.dim() not in (4, 5) or 0 in images.shape:
        fail(
            f"holds {str(images.dtype).removeprefix('torch.')} images of shape "
            f"{list(images.shape)}, expected float32 [N, C, H, W] or [N, C, D, H, W]"
        )
    if not bool(torch.isfinite(images).all()):
        fail("holds non-finite image values (NaN or inf)")
    if labels.dtype != torch.int64 or list(labels.shape) != [images.shape[0]]:
        fail(
            f"holds {str(labels.dtype).removeprefix('torch.')} labels of shape "
            f"{list(labels.shape)}, expected int64 [{images.shape[0]}] (one class per image)"
        )
    if int(labels.min()) < 0:
        fail("holds negative class indices")
    return int(iteration)
