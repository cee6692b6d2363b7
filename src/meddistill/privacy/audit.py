"""One audit of a synthetic set: the full-data network(s), memorisation in pixel and feature
space, the membership attack on the set and its references, LiRA when shadows are asked for,
the verdict; and its files."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from meddistill.config import to_dict
from meddistill.data.dataset import MedicalDataset
from meddistill.data.synthetic import SyntheticSet
from meddistill.errors import ArtifactError, ConfigError
from meddistill.methods.coresets import features as embed
from meddistill.models import ModelSpec
from meddistill.privacy.attack import AttackStats
from meddistill.privacy.config import AuditConfig
from meddistill.privacy.decoder import LR, STEPS, decoder_attack, decoder_of, latent_decoder_path
from meddistill.privacy.membership import Scored, attack_sample, loss_attack, trained_networks
from meddistill.privacy.memorisation import SpaceReport, copies_8bit, memorisation
from meddistill.privacy.pairs import save_pairs
from meddistill.privacy.report import AuditReport
from meddistill.privacy.shadows import (
    SHADOW_FOLDER,
    ShadowPipeline,
    ShadowPool,
    lira_attack,
    run_shadows,
)
from meddistill.privacy.verdict import verdict
from meddistill.training.baselines import full_data, random_subset_indices, subset_at
from meddistill.training.config import TrainConfig
from meddistill.training.evaluate import EvalConfig, resolve_lr, spec_for
from meddistill.utils import derive_seed, make_generator, write_json_atomic

AUDIT_FILE, PAIRS_FILE, FEATURE_PAIRS_FILE = "audit.json", "pairs.png", "pairs_features.png"


@dataclass
class AuditNetworks:
    """How the audit's networks train: the attack's K networks by the evaluation protocol
    (`attack`, lr: attack.lr, else the set's learned one, else `subset_lr` for real subsets),
    the full-data ones by `full_train`; all of `model`'s architecture, seeds from `seed`."""

    attack: EvalConfig = field(default_factory=lambda: EvalConfig(num_nets=2))
    full_train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=5, lr=0.01))
    model: ModelSpec = field(default_factory=ModelSpec)
    subset_lr: float = 0.01
    seed: int = 0


def check_audit(
    syn: SyntheticSet, dataset: MedicalDataset, cfg: AuditConfig, where: str = ""
) -> None:
    """Refuse, before any work, what the audit cannot do: a set of another dataset or
    normalisation (pixel distances would compare unlike things), a random reference larger
    than a class."""
    check_same_space(syn, dataset, where)
    smallest = min(dataset.class_counts("train"))
    if "random" in cfg.references and syn.ipc() > smallest:
        raise ConfigError(
            f"the random reference needs {syn.ipc()} real images per class, as the set has, but "
            f"the smallest class of {dataset.name} has {smallest} train images; leave it out "
            "with audit.references=[full]"
        )


def check_same_space(syn: SyntheticSet, dataset: MedicalDataset, where: str = "") -> None:
    """The set was made from `dataset` and is normalised as its images are, so pixel
    distances compare like with like."""
    syn.check_compatible(dataset, where=where)
    mine, theirs = syn.normalization.to_dict(), dataset.normalization.to_dict()
    if not all(np.allclose(mine[k], theirs[k], rtol=1e-6, atol=0) for k in ("mean", "std")):
        raise ArtifactError(
            f"synthetic set {where} is normalised with {mine} but {dataset.name} with {theirs}; "
            "audit it with the dataset.normalization it was made with"
        )


def heldout_split(dataset: MedicalDataset) -> str:
    """The split no pipeline saw: val when the dataset has one, else test."""
    return "val" if dataset.val is not None and len(dataset.val) else "test"


class _Stages:
    """Say each stage and its wall time to `log` (nothing when None)."""

    def __init__(self, log: Callable[[str], None] | None) -> None:
        self.log, self.start = log, time.perf_counter()

    def done(self, what: str) -> None:
        now = time.perf_counter()
        if self.log is not None:
            self.log(f"audit: {what} in {now - self.start:.1f} s")
        self.start = now


def _memorisation(
    syn: SyntheticSet, data: MedicalDataset, held: str, full: list[nn.Module], q: float
) -> dict[str, SpaceReport]:
    """Pixel space (as stored, normalised) and the first full-data network's features."""
    images = syn.images.to(data.train.images.device)
    train, other = data.train.images, data.splits[held].images
    pixel = memorisation(images, train, other, quantile=q, space="pixel")
    pixel.copies = copies_8bit(images, train, pixel.train_index, syn.normalization)
    net = full[0]
    feats = memorisation(
        embed(net, images), embed(net, train), embed(net, other), quantile=q, space="features"
    )
    return {"pixel": pixel, "features": feats}


def _network_facts(cfg: TrainConfig, count: int, images: int, source: str) -> dict[str, Any]:
    return {"count": count, "trained_on": source, "images": images, "train": to_dict(cfg)}


def _attacks(
    syn: SyntheticSet,
    data: MedicalDataset,
    held: str,
    full: list[nn.Module],
    cfg: AuditConfig,
    nets: AuditNetworks,
    device: torch.device,
    progress: bool,
    sample: tuple[Scored, Scored],
) -> tuple[dict[str, AttackStats], dict[str, dict[str, Any]], list[nn.Module]]:
    """The loss attack on networks trained on the set, and on the references asked for; the
    set's networks come back too (LiRA's targets)."""
    members, others = sample
    spec = spec_for(nets.attack.models[0], nets.model)
    facts: dict[str, dict[str, Any]] = {}

    def attack(name: str, models: list[nn.Module], mem: Scored, non: Scored) -> AttackStats:
        seed = derive_seed(nets.seed, "audit-bootstrap", name)
        return loss_attack(models, mem, non, bootstrap=cfg.bootstrap, seed=seed)

    def train(name: str, images: torch.Tensor, labels: torch.Tensor, lr: float) -> list[nn.Module]:
        k, train_cfg = nets.attack.num_nets, nets.attack.train_config(lr)
        facts[name] = _network_facts(train_cfg, k, int(images.shape[0]), name)
        return trained_networks(
            data, spec, images, nets.attack.training_labels(labels), train_cfg, count=k,
            seed=derive_seed(nets.seed, "audit-nets", name), device=device,
            progress=f"attack nets ({name})" if progress else False,
        )  # fmt: skip

    lr, _ = resolve_lr(nets.attack.lr, syn.syn_lr)
    on_set = train("synthetic", syn.images, syn.labels, lr)
    out = {"synthetic": attack("synthetic", on_set, members, others)}
    if "full" in cfg.references:
        facts["full"] = _network_facts(nets.full_train, len(full), len(data.train), "full")
        out["full"] = attack("full", full, members, others)
    if "random" in cfg.references:
        gen = make_generator(derive_seed(nets.seed, "audit-subset", syn.ipc()))
        index = random_subset_indices(data, syn.ipc(), generator=gen)
        images, labels = subset_at(data, index)
        models = train("random", images, labels, nets.attack.lr or nets.subset_lr)
        out["random"] = attack("random", models, members, others)
        own = Scored(images, labels, index.cpu())
        out["random_own"] = attack("random_own", models, *_balanced(own, others, nets.seed))
    return out, facts, on_set


def _balanced(members: Scored, others: Scored, seed: int) -> tuple[Scored, Scored]:
    """As many of each as the smaller holds, drawn at random (seeded) from the larger."""
    n = min(len(members.index), len(others.index))
    gen = make_generator(derive_seed(seed, "audit-own"))

    def take(s: Scored) -> Scored:
        pick = torch.randperm(len(s.index), generator=gen)[:n].sort().values
        return Scored(s.images[pick.to(s.images.device)], s.labels[pick.to(s.labels.device)],
                      s.index[pick])  # fmt: skip

    return take(members), take(others)


def attack_targets(
    data: MedicalDataset, held: str, cfg: AuditConfig, seed: int
) -> tuple[Scored, Scored]:
    """The members and non-members every attack scores (one seeded draw)."""
    return attack_sample(
        data, held, cfg.members, make_generator(derive_seed(seed, "audit-members"))
    )


def shadow_pool(data: MedicalDataset, others: Scored, cfg: AuditConfig, seed: int) -> ShadowPool:
    """The shadows' halves of the train split and the non-members (one seeded draw)."""
    return ShadowPool(data, others, cfg.shadows, make_generator(derive_seed(seed, "audit-shadows")))


def check_shadows(
    dataset: MedicalDataset, cfg: AuditConfig, seed: int, pipeline: ShadowPipeline | None
) -> None:
    """Refuse, before any work, LiRA without a pipeline, or a half a shadow could not run on
    (a class too small for the set's IPC, say)."""
    if cfg.shadows == 0:
        return
    if pipeline is None:
        raise ConfigError(
            f"audit.shadows={cfg.shadows} needs the pipeline that made the set, to run it on "
            "halves of the data; audit a distill run folder (its config.yaml says how the set "
            "was made), or set audit.shadows=0"
        )
    if pipeline.check is None:
        return
    _, others = attack_targets(dataset, heldout_split(dataset), cfg, seed)
    pool = shadow_pool(dataset, others, cfg, seed)
    for k in range(pool.shadows):
        pipeline.check(pool.half(k))


def _lira(
    data: MedicalDataset,
    sample: tuple[Scored, Scored],
    models: list[nn.Module],
    cfg: AuditConfig,
    seed: int,
    pipeline: ShadowPipeline,
    work: Path | None,
    log: Callable[[str], None] | None,
) -> tuple[AttackStats, dict[str, Any]]:
    """LiRA on the set's networks: the shadows (or their records in work/shadows), then the
    likelihood ratios."""
    members, others = sample
    pool = shadow_pool(data, others, cfg, seed)
    folder = None if work is None else Path(work) / SHADOW_FOLDER
    records = run_shadows(pool, members, pipeline, folder=folder, log=log)
    stats, facts = lira_attack(
        models, members, others, records, global_variance=cfg.lira_global_variance,
        bootstrap=cfg.bootstrap, seed=derive_seed(seed, "audit-bootstrap", "lira"),
    )  # fmt: skip
    facts["overrides"] = list(cfg.shadow_overrides)
    facts["pipeline"] = pipeline.identity
    return stats, facts


def full_networks(
    data: MedicalDataset, nets: AuditNetworks, count: int, device: torch.device, progress: bool
) -> list[nn.Module]:
    """`count` networks trained on the whole train split (features; the full reference)."""
    images, labels = full_data(data)
    return trained_networks(
        data, nets.model, images, labels, nets.full_train, count=count,
        seed=derive_seed(nets.seed, "audit-full"), device=device,
        progress="full-data net" if progress else False,
    )  # fmt: skip


def _decoder(
    path: Path, data: MedicalDataset, sample: tuple[Scored, Scored], cfg: AuditConfig, seed: int
) -> tuple[AttackStats, dict[str, Any]]:
    """The membership attack through a latent set's decoder, on the same targets."""
    decoder, code_shape, meta = decoder_of(path, data)
    device = data.train.images.device
    stats = decoder_attack(
        decoder.to(device), code_shape, *sample, bootstrap=cfg.bootstrap,
        seed=derive_seed(seed, "audit-bootstrap", "decoder"),
    )  # fmt: skip
    last = {k: (meta["history"][k] or [None])[-1] for k in ("train_mse", "held_out_mse")}
    facts = {"source": str(path), "code_shape": list(code_shape), "steps": STEPS, "lr": LR,
             **last}  # fmt: skip
    return stats, facts


def audit_set(
    syn: SyntheticSet,
    dataset: MedicalDataset,
    cfg: AuditConfig,
    nets: AuditNetworks,
    *,
    device: torch.device,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    shadows: ShadowPipeline | None = None,
    work: str | Path | None = None,
) -> AuditReport:
    """Audit `syn` against the dataset it was made from (checked): see meddistill.privacy.
    `shadows`: the pipeline LiRA's shadows run (needed when cfg.shadows > 0); `work`: a
    folder for the shadows' records (an interrupted audit resumes from them)."""
    check_audit(syn, dataset, cfg)
    check_shadows(dataset, cfg, nets.seed, shadows)
    decoder = latent_decoder_path(syn)  # a latent set's decoder is shared: attacked too
    data, held = dataset.to(device), heldout_split(dataset)
    stages = _Stages(log)
    full = full_networks(data, nets, cfg.full_nets, device, progress)
    stages.done(f"{cfg.full_nets} full-data network(s) trained")
    memo = _memorisation(syn, data, held, full, cfg.quantile)
    stages.done("memorisation measured")
    sample = attack_targets(data, held, cfg, nets.seed)
    attacks, facts, on_set = _attacks(syn, data, held, full, cfg, nets, device, progress, sample)
    stages.done("membership attacks done")
    lira: dict[str, Any] = {}
    if cfg.shadows and shadows is not None:
        attacks["lira"], lira = _lira(data, sample, on_set, cfg, nets.seed, shadows, work, log)
        facts["lira"] = {**facts["synthetic"], "shadows": cfg.shadows}
        stages.done(f"LiRA with {cfg.shadows} shadow pipelines done")
    if decoder is not None:
        attacks["decoder"], facts["decoder"] = _decoder(decoder, data, sample, cfg, nets.seed)
        stages.done("decoder attack done")
    info = {"dataset": syn.dataset, "source_id": syn.source_id, "method": syn.meta.get("method"),
            "images": int(syn.images.shape[0]), "ipc": syn.ipc(), "syn_lr": syn.syn_lr}  # fmt: skip
    used = {"audit": to_dict(cfg), "eval": to_dict(nets.attack), "seed": nets.seed,
            "full_train": to_dict(nets.full_train), "model": to_dict(nets.model),
            "subset_lr": nets.subset_lr}  # fmt: skip
    light = verdict(memo["pixel"], memo["features"], attacks["synthetic"], attacks.get("lira"),
                    decoder=attacks.get("decoder"))  # fmt: skip
    return AuditReport(info, held, memo, attacks, facts, light, used, lira)


def save_audit(
    report: AuditReport, syn: SyntheticSet, dataset: MedicalDataset, folder: str | Path, pairs: int
) -> Path:
    """Write audit.json and, when `pairs` > 0, the closest pairs of each space as PNGs."""
    out = Path(folder)
    write_json_atomic(out / AUDIT_FILE, report.to_dict())
    if pairs > 0:
        train = dataset.train.images
        for space, name in (("pixel", PAIRS_FILE), ("features", FEATURE_PAIRS_FILE)):
            rep = report.memorisation[space]
            save_pairs(syn.images, train, rep.closest(pairs), rep.train_index,
                       syn.normalization, out / name)  # fmt: skip
    return out / AUDIT_FILE
