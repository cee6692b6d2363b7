"""Shadow pipelines for LiRA: random halves of the data, a pipeline run on each, and the
logit-scaled confidence (privacy/lira.py) each shadow's networks give every target image.

The population the halves are drawn from is the train split plus the held-out non-member
targets, as in the paper, where every target is IN about half the shadows whether or not it
was in the audited pipeline's data: were the non-members never IN a shadow, they alone would
be scored by the offline test and the members by the online one, and the choice of formula
would give membership away. The halves are balanced per image (Carlini et al.'s scheme: each
image is IN exactly half of the shadows, a shadow holds about half the images), drawn from a
seeded generator.

A pipeline is anything that turns a dataset (its train split the shadow's half) into trained
networks: the audit's is expert buffer + distillation + one network on the set (app/shadows.py),
a test's a network trained on the half. Each finished shadow is recorded as
shadows/shadow_<k>.json (its values, IN flags, size and wall time) when a folder is given, so
an interrupted audit resumes at the next shadow.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from meddistill.data.dataset import MedicalDataset, Split
from meddistill.errors import ConfigError, NumericalError
from meddistill.privacy.attack import AttackStats, attack_stats
from meddistill.privacy.lira import lira_scores, logit_confidence, use_global_variance
from meddistill.privacy.membership import Scored
from meddistill.training.metrics import hard_labels, predict_logits
from meddistill.utils import make_generator, stable_hash, write_json_atomic

SHADOW_FOLDER = "shadows"


@dataclass
class ShadowPipeline:
    """How a shadow makes its networks: `train(half, k)` -> networks trained by shadow k's
    pipeline on `half` (a dataset whose train split is the shadow's half); `check(half)`
    refuses, before any work, a half the pipeline could not run on; `identity` names the
    pipeline in each shadow's record, so a record of another pipeline is never reused."""

    train: Callable[[MedicalDataset, int], list[nn.Module]]
    check: Callable[[MedicalDataset], None] | None = None
    identity: Any = "custom"


@dataclass
class ShadowRecord:
    """What one shadow gave: phi [T] of every target, whether each was IN its half, the
    half's size and the shadow's wall time (from its first run when `reused`)."""

    index: int
    phi: np.ndarray
    member_in: np.ndarray
    images: int
    wall_s: float
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"shadow": self.index, "images": self.images, "wall_s": round(self.wall_s, 3),
                "reused": self.reused, "targets_in": int(self.member_in.sum())}  # fmt: skip


def balanced_halves(size: int, shadows: int, generator: torch.Generator) -> torch.Tensor:
    """keep [shadows, size]: image i is IN shadow s when keep[s, i]. Each image is IN
    exactly shadows // 2 shadows (shadows odd: that or one more, by a fair draw), chosen by a
    random permutation per image; each shadow then holds about half the images."""
    if shadows < 1:
        raise ConfigError(f"LiRA needs at least one shadow, got {shadows}")
    rank = torch.rand(shadows, size, generator=generator).argsort(dim=0).argsort(dim=0)
    extra = torch.randint(2, (size,), generator=generator) if shadows % 2 else 0
    return rank < (shadows // 2 + extra)


class ShadowPool:
    """The population the shadows draw from (train split + non-member targets) and each
    shadow's half of it."""

    def __init__(
        self, dataset: MedicalDataset, nonmembers: Scored, shadows: int, generator: torch.Generator
    ) -> None:
        self.dataset, self.nonmembers = dataset, nonmembers
        self.train_size = len(dataset.train)
        self.keep = balanced_halves(self.train_size + len(nonmembers.index), shadows, generator)

    @property
    def shadows(self) -> int:
        return int(self.keep.shape[0])

    def half(self, k: int) -> MedicalDataset:
        """Shadow k's dataset: its half as the train split, every other split unchanged, a
        source id of its own (so nothing made from it passes for the full data's)."""
        keep, n, data = self.keep[k], self.train_size, self.dataset
        own = keep[:n].nonzero().flatten().to(data.train.images.device)
        held = keep[n:].nonzero().flatten().to(self.nonmembers.images.device)
        images = torch.cat([data.train.images[own], self.nonmembers.images[held]])
        labels = torch.cat([data.train.labels[own], self.nonmembers.labels[held].to(own.device)])
        source = f"{data.source_id}/shadow-{stable_hash(keep.nonzero().flatten().tolist(), 8)}"
        return MedicalDataset(
            name=data.name, splits={**data.splits, "train": Split(images, labels)},
            class_names=list(data.class_names), normalization=data.normalization,
            source_id=source, task=data.task, info=dict(data.info),
        )  # fmt: skip

    def targets_in(self, k: int, members: Scored) -> np.ndarray:
        """Whether each target (members, then non-members) is IN shadow k's half."""
        others = self.train_size + torch.arange(len(self.nonmembers.index))
        return self.keep[k][torch.cat([members.index.cpu(), others])].numpy()


def targets_of(members: Scored, nonmembers: Scored) -> Scored:
    """Members then non-members as one batch of targets."""
    dev = members.images.device
    return Scored(torch.cat([members.images, nonmembers.images.to(dev)]),
                  torch.cat([members.labels, nonmembers.labels.to(dev)]),
                  torch.cat([members.index.cpu(), nonmembers.index.cpu()]))  # fmt: skip


def confidences(models: list[nn.Module], targets: Scored) -> np.ndarray:
    """phi [len(models), T] of every target under each network."""
    rows = []
    for model in models:
        with torch.no_grad():
            logits = predict_logits(model, targets.images).float()
        rows.append(logit_confidence(logits, hard_labels(targets.labels)))
    out = np.stack(rows)
    if not np.isfinite(out).all():
        raise NumericalError(
            "a network of the LiRA attack gives a non-finite logit on real images; train it "
            "with a smaller learning rate (eval.lr) or fewer epochs"
        )
    return out


def _record_path(folder: Path | None, k: int) -> Path | None:
    return None if folder is None else folder / f"shadow_{k}.json"


def _reusable(path: Path | None, identity: str, k: int) -> ShadowRecord | None:
    """The record a finished run of this very shadow left (same pipeline, half and targets)."""
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("identity") != identity:
        return None
    phi, member_in = np.asarray(data["phi"], float), np.asarray(data["in"], bool)
    return ShadowRecord(k, phi, member_in, int(data["images"]), float(data["wall_s"]), True)


def run_shadows(
    pool: ShadowPool,
    members: Scored,
    pipeline: ShadowPipeline,
    *,
    folder: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> list[ShadowRecord]:
    """Run every shadow (or reuse its record in `folder`) and return what each gave."""
    targets = targets_of(members, pool.nonmembers)
    target_key = stable_hash([targets.index.tolist(), len(members.index)], 16)
    records = []
    for k in range(pool.shadows):
        member_in = pool.targets_in(k, members)
        identity = stable_hash({"pipeline": pipeline.identity, "targets": target_key,
                                "half": pool.keep[k].nonzero().flatten().tolist()}, 16)  # fmt: skip
        path = _record_path(folder, k)
        record = _reusable(path, identity, k)
        if record is None:
            start = time.perf_counter()
            half = pool.half(k)
            phi = confidences(pipeline.train(half, k), targets).mean(axis=0)
            record = ShadowRecord(k, phi, member_in, len(half.train), time.perf_counter() - start)
            if path is not None:
                write_json_atomic(path, {"identity": identity, "phi": phi.tolist(),
                                         "in": member_in.tolist(), **record.to_dict()})  # fmt: skip
        if log is not None:
            done = "reused" if record.reused else f"in {record.wall_s:.1f} s"
            log(f"audit: shadow {k + 1}/{pool.shadows} ({record.images} images) {done}")
        records.append(record)
    return records


def lira_attack(
    models: list[nn.Module],
    members: Scored,
    nonmembers: Scored,
    records: list[ShadowRecord],
    *,
    global_variance: bool | str = "auto",
    bootstrap: int,
    seed: int,
) -> tuple[AttackStats, dict[str, Any]]:
    """LiRA's numbers on the target `models` (the audited pipeline's networks), from the
    shadows' records; and the facts audit.json keeps (variance, online targets, shadows)."""
    target_phi = confidences(models, targets_of(members, nonmembers))
    phi = np.stack([r.phi for r in records])
    ins = np.stack([r.member_in for r in records])
    use_global = use_global_variance(global_variance, len(records))
    scores = lira_scores(target_phi, phi, ins, global_variance=use_global)
    m = len(members.index)
    stats = attack_stats(scores[:m], scores[m:], generator=make_generator(seed),
                         bootstrap=bootstrap)  # fmt: skip
    online = int((ins.any(axis=0) & (~ins).any(axis=0)).sum())
    facts = {"shadows": len(records), "global_variance": use_global,
             "online_targets": online, "offline_targets": int(phi.shape[1] - online),
             "per_shadow": [r.to_dict() for r in records]}  # fmt: skip
    return stats, facts
