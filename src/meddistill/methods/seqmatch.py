"""SeqMatch: Du, Shi, Zhou, "Sequential Subset Matching for Dataset Distillation", NeurIPS 2023
(code: shqii1j/seqmatch, built on MTT).

The IPC budget is split into K subsets distilled one after another. Subset j is matched on
the j-th of K consecutive intervals of start epochs, so later subsets learn the later (harder,
higher-level) stretches of the expert trajectories. While subset j is distilled, subsets
0..j-1 are frozen but stay in the student's training set: every student minibatch is drawn
from all images distilled so far, only subset j receives updates.

This driver runs the ordinary engine (matching.engine.Distiller) once per subset. Stage j is a
SeqMatchConfig with ipc = ipc_0 + ... + ipc_j (images laid out class by class: the frozen
images of each class first, then its new ones), the start range narrowed to interval j, and a
`trainable` mask that zeroes the image gradient of the frozen images.

Differences from the reference code, stated so numbers are read correctly:
- The code realises "later stages" by training a NEW expert buffer for every subset, whose
  experts start from a network trained on the previous subsets (its run.sh then uses the start
  range 0-20 of that new buffer). Here the paper's reading is used: one buffer, the start range
  [min_start, max_start) split into K consecutive intervals.
- Each subset runs `cfg.iterations` iterations (as each of the code's stages does), so a run
  costs K x iterations; the step size alpha restarts from syn_lr_init at every subset (as in the
  code) and the set keeps the last subset's learned alpha.
- The code evaluates by training on the subsets cumulatively, each with its own alpha; here the
  final set is one SyntheticSet, evaluated like every other set.
Defaults: the code's CIFAR-10 IPC 50 run (3 subsets, syn_steps 30, expert_epochs 2, lr_img 100,
lr_lr 1e-5, alpha 0.01, start epochs below 20).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from meddistill.data.dataset import MedicalDataset
from meddistill.data.synthetic import SyntheticSet
from meddistill.errors import ConfigError
from meddistill.experts.store import TrajectoryStore
from meddistill.matching.config import SECTION, TrajectoryConfig
from meddistill.matching.engine import Distiller, TrajectoryParts
from meddistill.matching.loop import DistillRun
from meddistill.matching.schedule import WindowSchedule
from meddistill.methods.base import MethodEntry
from meddistill.methods.trajectory import random_windows, require_experts
from meddistill.models import ModelSpec
from meddistill.utils import Options


@dataclass
class SeqMatchConfig(TrajectoryConfig):
    """MTT's knobs plus the number of sequential subsets K (defaults: the code's CIFAR-10
    IPC 50 run)."""

    syn_steps: int = 30
    max_start: int = 20
    lr_img: float = 100.0
    seq_subsets: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        check = Options(SECTION, self)
        check.counts("seq_subsets")
        if self.soft_labels:  # a frozen subset's labels would be relabelled at each stage
            check.fail("soft_labels", "false for seqmatch (its subsets keep hard labels)")


@dataclass(frozen=True)
class SeqStage:
    """Subset `index` adds `ipc` images per class on start epochs [min_start, max_start),
    training the student on the `frozen_ipc` images per class of the earlier subsets too."""

    index: int
    ipc: int
    frozen_ipc: int
    min_start: int
    max_start: int

    @property
    def total_ipc(self) -> int:
        return self.frozen_ipc + self.ipc


def split_ipc(ipc: int, num_subsets: int) -> list[int]:
    """K near-equal subset sizes summing to ipc, larger ones first (50, 3 -> 17, 17, 16, the
    split of the reference run.sh)."""
    if num_subsets < 1:
        raise ConfigError(f"option seq_subsets must be >= 1, got {num_subsets}")
    if num_subsets > ipc:
        raise ConfigError(
            f"cannot split ipc {ipc} into {num_subsets} non-empty subsets; lower "
            f"{SECTION}.seq_subsets to at most {ipc}"
        )
    base, extra = divmod(ipc, num_subsets)
    return [base + (1 if j < extra else 0) for j in range(num_subsets)]


def split_intervals(min_start: int, max_start: int, num_subsets: int) -> list[tuple[int, int]]:
    """K consecutive, non-empty start-epoch intervals [a_j, a_{j+1}) covering [min_start,
    max_start), a_j = min_start + floor(j * L / K) with L = max_start - min_start."""
    span = max_start - min_start
    if num_subsets < 1:
        raise ConfigError(f"option seq_subsets must be >= 1, got {num_subsets}")
    if span < num_subsets:
        raise ConfigError(
            f"the start range [{min_start}, {max_start}) has {max(span, 0)} start epochs, fewer "
            f"than {SECTION}.seq_subsets={num_subsets}; widen {SECTION}.min_start/max_start or "
            "use fewer subsets"
        )
    bounds = [min_start + (j * span) // num_subsets for j in range(num_subsets + 1)]
    return [(bounds[j], bounds[j + 1]) for j in range(num_subsets)]


def seqmatch_plan(cfg: SeqMatchConfig) -> list[SeqStage]:
    """The K stages of a run: subset sizes, frozen images before each, start intervals."""
    sizes = split_ipc(cfg.ipc, cfg.seq_subsets)
    intervals = split_intervals(cfg.min_start, cfg.max_start, cfg.seq_subsets)
    stages, frozen = [], 0
    for j, (size, (low, high)) in enumerate(zip(sizes, intervals, strict=True)):
        stages.append(SeqStage(j, size, frozen, low, high))
        frozen += size
    return stages


def stage_config(cfg: SeqMatchConfig, stage: SeqStage) -> SeqMatchConfig:
    """The engine config of one stage: all images so far, the stage's start interval."""
    return replace(cfg, ipc=stage.total_ipc, min_start=stage.min_start, max_start=stage.max_start)


def trainable_mask(
    num_classes: int, frozen_ipc: int, ipc: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Bool [num_classes * (frozen_ipc + ipc)]: per class, frozen_ipc False then ipc True."""
    row = torch.cat([torch.zeros(frozen_ipc, dtype=torch.bool), torch.ones(ipc, dtype=torch.bool)])
    return row.repeat(num_classes).to(device)


def merge_frozen(
    images: torch.Tensor, frozen: torch.Tensor, num_classes: int, frozen_ipc: int
) -> torch.Tensor:
    """Put the earlier subsets' images (class by class, frozen_ipc each) into the first
    frozen_ipc slots of each class of `images` (class by class, total ipc each)."""
    total = images.shape[0] // num_classes
    if images.shape[0] != num_classes * total or frozen.shape[0] != num_classes * frozen_ipc:
        raise ConfigError(
            f"cannot merge {frozen.shape[0]} frozen images into {images.shape[0]} images of "
            f"{num_classes} classes with {frozen_ipc} frozen per class"
        )
    if frozen_ipc > total or frozen.shape[1:] != images.shape[1:]:
        raise ConfigError(
            f"frozen images {tuple(frozen.shape)} do not fit into images {tuple(images.shape)}"
        )
    out = images.clone().view(num_classes, total, *images.shape[1:])
    out[:, :frozen_ipc] = frozen.to(images.device, images.dtype).view(
        num_classes, frozen_ipc, *images.shape[1:]
    )
    return out.view_as(images)


class _StageDistiller(Distiller):
    """A Distiller whose fresh images start from the earlier subsets' images (frozen)."""

    def __init__(self, *args: object, frozen: torch.Tensor | None, frozen_ipc: int, **kw: object):
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self._frozen, self._frozen_ipc = frozen, frozen_ipc

    def initial_images(self, generator: torch.Generator) -> torch.Tensor:
        images = super().initial_images(generator)
        if self._frozen is None:
            return images
        return merge_frozen(images, self._frozen, self.dataset.num_classes, self._frozen_ipc)


def distill(
    dataset: MedicalDataset,
    cfg: SeqMatchConfig,
    *,
    experts: TrajectoryStore | None,
    model: ModelSpec,
    device: torch.device,
    run: DistillRun,
) -> SyntheticSet:
    """Distil the K subsets in turn (checkpoints in out_dir/subset_<j>, so a re-run resumes
    at the first unfinished subset) and return the set of all of them. Metric records carry
    the key "subset"; periodic evaluations see the set distilled so far."""
    store = require_experts(experts, "seqmatch")
    stages = seqmatch_plan(cfg)
    frozen: torch.Tensor | None = None
    result: SyntheticSet | None = None
    for stage in stages:
        run.log(
            f"seqmatch subset {stage.index + 1}/{len(stages)}: {stage.ipc} new images per class "
            f"({stage.frozen_ipc} frozen), start epochs [{stage.min_start}, {stage.max_start})"
        )
        stage_cfg = stage_config(cfg, stage)
        parts = TrajectoryParts(
            windows=random_windows(stage_cfg),
            trainable=trainable_mask(dataset.num_classes, stage.frozen_ipc, stage.ipc, device),
        )
        distiller = _StageDistiller(
            stage_cfg, parts, dataset, store, model, device=device,
            run=run.within(f"subset_{stage.index}", subset=stage.index),
            frozen=frozen, frozen_ipc=stage.frozen_ipc,
        )  # fmt: skip
        result = distiller.run_all()
        frozen = result.images
    assert result is not None  # seqmatch_plan returns at least one stage
    result.meta["seqmatch"] = {
        "subset_ipc": [s.ipc for s in stages],
        "start_intervals": [[s.min_start, s.max_start] for s in stages],
        "iterations_per_subset": cfg.iterations,
    }
    return result


def total_iterations(cfg: SeqMatchConfig) -> int:
    """What a run costs in engine iterations (for progress and time estimates)."""
    return cfg.iterations * len(seqmatch_plan(cfg))


def windows(cfg: SeqMatchConfig) -> WindowSchedule:
    """The whole start range the stages split; the plan is checked with it, before any work."""
    seqmatch_plan(cfg)
    return random_windows(cfg)


METHOD = MethodEntry(
    "seqmatch", "Du, Shi, Zhou, NeurIPS 2023", SeqMatchConfig, distill, experts="sgd",
    windows_of=windows,
)  # fmt: skip
