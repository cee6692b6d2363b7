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

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from meddistill.errors import ArtifactError
from meddistill.utils import atomic_path

SNAPSHOT_DIR = "snapshots"
_NAME = re.compile(r"^iter_(\d+)\.safetensors$")


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
    """(iteration, images, labels) of every snapshot, by iteration; [] when there are none."""
    folder = Path(run_dir) / SNAPSHOT_DIR
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.iterdir()):
        match = _NAME.match(path.name)
        if not match:
            continue
        try:
            with safe_open(str(path), framework="pt") as fh:
                header = fh.metadata() or {}
            tensors = load_file(str(path))
            iteration = int(header.get("iteration", match.group(1)))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ArtifactError(f"snapshot {path} is unreadable ({exc}); delete it") from exc
        if "images" not in tensors or "labels" not in tensors:
            raise ArtifactError(f"snapshot {path} lacks 'images' or 'labels'; delete it")
        out.append((iteration, tensors["images"], tensors["labels"]))
    return sorted(out, key=lambda s: s[0])
