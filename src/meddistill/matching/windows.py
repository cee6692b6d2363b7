"""Several expert windows per iteration (match.windows_per_iteration = W), across ranks.

Why: one window per iteration is the papers' loop; W windows average W independent unrolls
into one update (a larger "batch" of trajectories, as NCFM scales its matching), and they are
the unit one job spreads over torchrun's ranks. The result must not depend on how the W
windows were spread: window w draws everything (expert, start, student batches, DSA) from its
own generator derive_seed(seed, "window", iteration, w); each window's gradients, loss and
matching state travel as one float64 row; every rank gathers all W rows and sums them in
window order. So 1 rank x W windows, W ranks x 1 and 2 ranks x W/2 give the same bits.

Matching state written by the parts (HoP-TM's kappa_base and cumulative mask) is read by
every window as it was at the start of the iteration; afterwards kappa_base is window 0's and
the cumulative mask the union of the windows' masks.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch

from meddistill import distributed
from meddistill.errors import ConfigError
from meddistill.matching.state import DistillState
from meddistill.matching.student import StudentGradients

RECORD_KEYS = ("match", "shape", "util", "kappa", "k")


def check_window_count(count: int) -> None:
    """W windows must split evenly over the job's ranks (each rank unrolls W / ranks)."""
    ranks = distributed.world_size()
    if count % ranks:
        raise ConfigError(
            f"match.windows_per_iteration={count} does not split over {ranks} ranks; use a "
            f"multiple of {ranks} (or start {count} ranks, or 1 with all windows)"
        )


@dataclass
class WindowResult:
    """One window's contribution: its loss, gradients, record and the matching state it left."""

    loss: torch.Tensor
    grads: StudentGradients
    record: dict[str, Any]
    view: Any  # the shallow copy of the state the window's parts wrote to


def state_view(state: DistillState) -> Any:
    """A copy of the state whose attributes a window's parts may replace (mask, kappa_base)
    without another window seeing it; the tensors themselves are shared, read only."""
    return copy.copy(state)


def _row(result: WindowResult, device: torch.device) -> torch.Tensor:
    """Everything of one window as one float64 row (the unit that is gathered)."""
    grads, view = result.grads, result.view
    empty = torch.zeros(0, dtype=torch.float64, device=device)
    kappa = math.nan if view.kappa_base is None else float(view.kappa_base)
    parts = [
        grads.images.reshape(-1),
        grads.labels.reshape(-1) if grads.labels is not None else empty,
        grads.syn_lr.reshape(1),
        result.loss.detach().reshape(1),
        torch.tensor([kappa], dtype=torch.float64, device=device),
        view.mask.reshape(-1) if view.mask is not None else empty,
        torch.tensor(
            [float(result.record[k]) for k in RECORD_KEYS], dtype=torch.float64, device=device
        ),
    ]
    return torch.cat([p.to(device, torch.float64) for p in parts])


@dataclass
class Merged:
    """The W windows as one: mean loss and gradients, window 0's record."""

    loss: torch.Tensor
    grads: StudentGradients
    record: dict[str, Any]


def merge(results: list[WindowResult], state: DistillState, count: int) -> Merged:
    """Gather every rank's windows and combine them in window order (see the module doc);
    updates state.kappa_base and state.mask as one window's parts would have."""
    first = results[0]
    device = state.images.device
    rows = distributed.gather_rows(torch.stack([_row(r, device) for r in results]))
    if rows.shape[0] != count:
        raise RuntimeError(f"gathered {rows.shape[0]} windows, expected {count}")
    total = rows[0].clone()
    for row in rows[1:]:
        total += row
    sizes = _sizes(first, state)

    def named(row: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(sizes, row.split(list(sizes.values())), strict=True))

    pieces, window0 = named(total / count), named(rows[0])
    labels = (
        pieces["labels"].view_as(state.labels).to(state.labels.dtype) if sizes["labels"] else None
    )
    grads = StudentGradients(
        images=pieces["images"].view_as(state.images).to(state.images.dtype),
        syn_lr=pieces["syn_lr"].reshape(()).to(state.lr_param.dtype),
        labels=labels,
    )
    if state.kappa_base is None and not math.isnan(float(window0["kappa_base"])):
        state.kappa_base = float(window0["kappa_base"])
    if sizes["mask"]:
        masks = torch.stack([named(row)["mask"] for row in rows]) > 0.5
        state.mask = masks.any(dim=0).view_as(first.view.mask)
    record = dict(zip(RECORD_KEYS, window0["record"].tolist(), strict=True))
    record["k"] = int(record["k"])
    return Merged(loss=pieces["loss"].reshape(()), grads=grads, record=record)


def _sizes(first: WindowResult, state: DistillState) -> dict[str, int]:
    """The row's layout (the same for every window of a method), in _row's order."""
    mask = first.view.mask
    return {
        "images": state.images.numel(),
        "labels": first.grads.labels.numel() if first.grads.labels is not None else 0,
        "syn_lr": 1,
        "loss": 1,
        "kappa_base": 1,
        "mask": mask.numel() if mask is not None else 0,
        "record": len(RECORD_KEYS),
    }
