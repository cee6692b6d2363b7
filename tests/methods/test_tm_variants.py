"""SMDD pruning mask, SeqMatch split/interval arithmetic and driver, HaBa parameterisation,
and each of them lowering its own matching loss on tiny data."""

import dataclasses

import pytest
import torch
from toydata import shifted_toy

from meddistill.data.dataset import MedicalDataset
from meddistill.errors import ConfigError
from meddistill.matching import losses
from meddistill.matching.config import TrajectoryConfig
from meddistill.matching.engine import Distiller, TrajectoryParts
from meddistill.matching.loop import CHECKPOINT, DistillRun
from meddistill.matching.schedule import FixedWindows, RandomWindows
from meddistill.matching.state import DistillState
from meddistill.methods import haba, seqmatch, smdd
from meddistill.methods.registry import get_method
from meddistill.methods.trajectory import random_windows
from meddistill.models import ModelSpec, frozen_mask
from meddistill.utils import make_generator

TINY_SPEC = ModelSpec(depth=1, width=4)
STRATEGY = "color_crop_cutout_flip_scale_rotate"
CPU = torch.device("cpu")


# SMDD --------------------------------------------------------------------------------------
def test_smdd_mask_prunes_the_hardest_fraction():
    loss = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7])
    # n = 5, floor(0.4 * 5) = 2 pruned: the 0.9 and the 0.7
    assert losses.prune_mask(loss, 0.4).tolist() == [True, True, False, True, False]
    # element 1 excluded: n = 4 eligible, floor(0.4 * 4) = 1 pruned: the 0.9
    exclude = torch.tensor([False, True, False, False, False])
    assert losses.prune_mask(loss, 0.4, exclude).tolist() == [True, False, False, True, True]
    assert losses.prune_mask(loss, 0.0, exclude).tolist() == [True, False, True, True, True]
    # ties: a stable sort prunes the lower index first
    assert losses.prune_mask(torch.ones(4), 0.5).tolist() == [False, False, True, True]


def test_smdd_mask_in_the_masked_loss_hand_computed():
    w_end = torch.tensor([1.0, 2.0, 3.0, 4.0])
    target = torch.ones(4)
    start = torch.zeros(4)
    scores = losses.prune_scores("mismatch", w_end, start, target)  # [0, 1, 4, 9]
    keep = losses.prune_mask(scores, 0.25)  # floor(1.0) = 1 pruned: the 9
    assert keep.tolist() == [True, True, True, False]
    # (0 + 1 + 4) / (1 + 1 + 1), against the unpruned 14 / 4
    assert float(losses.masked_param_loss(w_end, start, target, keep)) == pytest.approx(5 / 3)
    assert float(losses.normalized_param_loss(w_end, start, target)) == pytest.approx(3.5)
    moved = torch.tensor([1.0, 3.0, 2.0, 0.0])
    by_move = losses.prune_mask(losses.prune_scores("displacement", w_end, start, moved), 0.25)
    assert by_move.tolist() == [True, False, True, True]  # the expert's largest move, 3^2


def test_smdd_errors():
    with pytest.raises(ConfigError, match="prune_ratio"):
        losses.prune_mask(torch.ones(3), 1.0)
    with pytest.raises(ConfigError, match="prune_by"):
        losses.prune_scores("gradient", torch.ones(2), torch.ones(2), torch.ones(2))
    with pytest.raises(ConfigError, match="exclude"):
        losses.prune_mask(torch.ones(3), 0.1, torch.zeros(2, dtype=torch.bool))
    # the same refusals through SMDD's config, before any work
    with pytest.raises(ConfigError, match="prune_ratio"):
        get_method("smdd").make_config({"prune_ratio": 1.0})
    with pytest.raises(ConfigError, match="prune_by"):
        get_method("smdd").make_config({"prune_by": "gradient"})


# The published defaults (formerly each module's DEFAULTS); every one is random-window MTT.
PUBLISHED = {
    "smdd": {
        "syn_steps": 20, "expert_epochs": 3, "min_start": 0, "max_start": 25,
        "lr_img": 1000.0, "lr_lr": 1e-5, "syn_lr_init": 0.01, "init": "real",
        "prune_ratio": 0.1, "prune_by": "mismatch",
    },
    "seqmatch": {
        "syn_steps": 30, "expert_epochs": 2, "min_start": 0, "max_start": 20,
        "lr_img": 100.0, "lr_lr": 1e-5, "syn_lr_init": 0.01, "init": "real",
        "seq_subsets": 3,
    },
    "haba": {
        "syn_steps": 30, "expert_epochs": 2, "min_start": 0, "max_start": 20,
        "lr_img": 100.0, "momentum_img": 0.95, "lr_lr": 1e-5, "momentum_lr": 0.9,
        "syn_lr_init": 0.001, "init": "real", "haba_hallucinators": 5, "lr_hallucinator": 100.0,
    },
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_defaults_are_the_config_defaults(name):
    method = get_method(name)
    cfg = method.make_config({})  # every default is a valid option of the method's config
    assert isinstance(cfg, method.config_type) and isinstance(cfg, TrajectoryConfig)
    assert cfg == method.config_type()
    assert {k: getattr(cfg, k) for k in PUBLISHED[name]} == PUBLISHED[name]
    assert type(method.windows_of(cfg)) is RandomWindows  # the former schedule "random"
    assert method.experts in ("sgd", "gsam")


# SeqMatch arithmetic ----------------------------------------------------------------------
def test_split_ipc():
    assert seqmatch.split_ipc(50, 3) == [17, 17, 16]  # the reference run.sh
    assert seqmatch.split_ipc(10, 4) == [3, 3, 2, 2]
    assert seqmatch.split_ipc(3, 3) == [1, 1, 1]
    assert seqmatch.split_ipc(7, 1) == [7]
    with pytest.raises(ConfigError, match="non-empty"):
        seqmatch.split_ipc(2, 3)
    with pytest.raises(ConfigError, match=">= 1"):
        seqmatch.split_ipc(2, 0)


def test_split_intervals():
    # bounds 0 + floor(j * 20 / 3): 0, 6, 13, 20
    assert seqmatch.split_intervals(0, 20, 3) == [(0, 6), (6, 13), (13, 20)]
    assert seqmatch.split_intervals(2, 5, 3) == [(2, 3), (3, 4), (4, 5)]
    assert seqmatch.split_intervals(0, 4, 1) == [(0, 4)]
    with pytest.raises(ConfigError, match="fewer"):
        seqmatch.split_intervals(0, 2, 3)


def test_plan_stage_config_mask_and_merge():
    cfg = seqmatch.SeqMatchConfig(ipc=5, min_start=0, max_start=10, seq_subsets=2)
    stages = seqmatch.seqmatch_plan(cfg)
    assert stages == [
        seqmatch.SeqStage(0, ipc=3, frozen_ipc=0, min_start=0, max_start=5),
        seqmatch.SeqStage(1, ipc=2, frozen_ipc=3, min_start=5, max_start=10),
    ]
    second = seqmatch.stage_config(cfg, stages[1])
    assert (second.ipc, second.min_start, second.max_start) == (5, 5, 10)
    assert cfg.ipc == 5 and cfg.max_start == 10  # the base config is untouched
    assert seqmatch.total_iterations(cfg) == 2 * cfg.iterations
    mask = seqmatch.trainable_mask(2, 2, 1)
    assert mask.tolist() == [False, False, True, False, False, True]
    images = torch.zeros(6, 1, 2, 2)
    frozen = torch.arange(1.0, 5.0).view(4, 1, 1, 1).expand(4, 1, 2, 2)
    merged = seqmatch.merge_frozen(images, frozen, num_classes=2, frozen_ipc=2)
    assert merged[:, 0, 0, 0].tolist() == [1.0, 2.0, 0.0, 3.0, 4.0, 0.0]
    # SeqMatch splits a random-window range: it has no schedule knob to set otherwise
    with pytest.raises(ConfigError, match="schedule"):
        get_method("seqmatch").make_config({"schedule": "progressive"})
    with pytest.raises(ConfigError, match="seq_subsets"):
        get_method("seqmatch").make_config({"seq_subsets": 0})


def test_seqmatch_refuses_soft_labels_and_retraining():
    method = get_method("seqmatch")
    with pytest.raises(ConfigError, match="soft_labels"):
        method.make_config({"soft_labels": True})
    with pytest.raises(ConfigError, match="retraining"):
        method.make_config({"retraining_points": 1})


# HaBa ---------------------------------------------------------------------------------------
def _haba(seed=0, **kw):
    return haba.HaBaParam(2, 3, (1, 8, 8), num_classes=3, generator=make_generator(seed), **kw)


def test_haba_shapes_labels_and_composition():
    p = _haba()
    x = p.images()
    assert x.shape == (3 * 2 * 3, 1, 8, 8) and p.images_per_class == 6
    assert p.hard_labels().tolist() == [0] * 6 + [1] * 6 + [2] * 6
    with torch.no_grad():
        for c, b, h in [(0, 0, 0), (1, 1, 2), (2, 0, 1)]:
            expected = p.hallucinators[h](p.bases[c, b : b + 1])[0]
            assert torch.allclose(x[c * 6 + b * 3 + h], expected, atol=1e-6)
    assert p.num_stored_values() == 3 * 2 * 64 + 3 * (9 + 1 + 2 * 36 + 9 + 1)


def test_haba_is_differentiable_in_bases_and_hallucinators():
    p = _haba()
    weights = torch.randn(p.images().shape, generator=make_generator(9))
    (p.images() * weights).sum().backward()
    assert all(float(p.bases.grad[c, b].abs().sum()) > 0 for c in range(3) for b in range(2))
    for h in p.hallucinators:
        for name, param in h.named_parameters():
            assert param.grad is not None and float(param.grad.abs().sum()) > 0, name
    leaves = {k: v.requires_grad_(True) for k, v in p.initial_tensors().items()}
    rendered = p.render(leaves)
    assert torch.allclose(rendered, p.images(), atol=1e-6)
    grads = torch.autograd.grad((rendered * weights).sum(), list(leaves.values()))
    assert all(float(g.abs().sum()) > 0 for g in grads)


def test_haba_seeded_init_is_reproducible_and_leaves_global_rng_alone():
    before = torch.random.get_rng_state()
    a, b, c = _haba(0), _haba(0), _haba(1)
    assert torch.equal(torch.random.get_rng_state(), before)
    for (na, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(pa, pb), na
    assert not torch.equal(a.hallucinators[0].enc.weight, c.hallucinators[0].enc.weight)
    assert torch.equal(a.hallucinators[0].scale, torch.ones(1, 1, 6, 6))
    assert torch.equal(a.hallucinators[0].shift, torch.zeros(1, 1, 6, 6))


def test_haba_variants_and_learning_rates():
    p = _haba(affine="channel", lr_hallucinator=7.0)
    assert p.hallucinators[0].scale.shape == (1, 1, 1, 1)
    lrs = p.learning_rates(100.0)
    assert lrs["bases"] == 100.0 and lrs["hallucinators.2.dec.weight"] == 7.0
    assert set(lrs) == set(p.initial_tensors())
    vol = haba.HaBaParam(1, 2, (1, 6, 6, 6), num_classes=2, generator=make_generator(0))
    assert vol.images().shape == (4, 1, 6, 6, 6)
    with pytest.raises(ConfigError, match="kernel"):
        haba.HaBaParam(1, 1, (1, 2, 2), num_classes=2, generator=make_generator(0))
    with pytest.raises(ConfigError, match="haba_hallucinators"):
        haba.HaBaParam(1, 0, (1, 8, 8), num_classes=2, generator=make_generator(0))


def test_haba_from_real_uses_real_images_of_each_class():
    ds = _toy()
    p = haba.HaBaParam.from_real(ds, 2, 2, generator=make_generator(3))
    train = ds.train
    for c in range(3):
        for b in range(2):
            base = p.bases[c, b].detach()
            hits = [i for i in range(len(train)) if torch.equal(train.images[i], base)]
            assert len(hits) == 1 and int(train.labels[hits[0]]) == c
    again = haba.HaBaParam.from_real(ds, 2, 2, generator=make_generator(3))
    assert torch.equal(p.images(), again.images())
    with pytest.raises(ConfigError, match="smallest class"):
        haba.HaBaParam.from_real(ds, 99, 2, generator=make_generator(3))


# Through the engine ------------------------------------------------------------------------
def _toy() -> MedicalDataset:
    return shifted_toy(n_train=30, n_test=12)  # the data of conftest's toy_store


# HaBa's engine runs use the shared optimiser defaults (momentum 0.5, alpha 0.01), as these
# tests always did, rather than HaBa's published CIFAR ones (0.95/0.9, 0.001).
_SHARED = {"haba": {"momentum_img": 0.5, "momentum_lr": 0.5, "syn_lr_init": 0.01}}


def _cfg(method, **kw):
    d = dict(ipc=2, iterations=2, syn_steps=2, expert_epochs=2, min_start=0, max_start=2)
    d.update(lr_img=10.0, checkpoint_every=2, eval={"num_nets": 1, "epochs": 1})
    d.update(_SHARED.get(method, {}))
    d.update(kw)
    return get_method(method).make_config(d)


def _run(out_dir, method, records=None, **kw):
    if records is not None:
        kw["on_metric"] = records.append
    return DistillRun(out_dir=out_dir, dsa_strategy=STRATEGY, method=method, progress=False, **kw)


def test_seqmatch_freezes_earlier_subsets_and_uses_their_interval(toy_store, tmp_path):
    records = []
    cfg = _cfg("seqmatch", seq_subsets=2)
    kw = dict(experts=toy_store, model=TINY_SPEC, device=CPU)
    syn = seqmatch.distill(_toy(), cfg, run=_run(tmp_path, "seqmatch", records), **kw)
    assert syn.images.shape == (6, 1, 8, 8) and syn.labels.tolist() == [0, 0, 1, 1, 2, 2]
    first, _ = DistillState.load(tmp_path / "subset_0" / CHECKPOINT, "cpu")
    assert torch.equal(syn.images[0::2], first.images)  # frozen slots: subset 0, untouched
    starts = {j: {r["start"] for r in records if r.get("subset") == j} for j in (0, 1)}
    assert starts == {0: {0}, 1: {1}}  # intervals [0, 1) and [1, 2)
    assert syn.meta["seqmatch"]["subset_ipc"] == [1, 1]
    stage_cfg = seqmatch.stage_config(cfg, seqmatch.seqmatch_plan(cfg)[1])
    parts = TrajectoryParts(
        windows=random_windows(stage_cfg), trainable=seqmatch.trainable_mask(3, 1, 1)
    )
    init = seqmatch._StageDistiller(
        stage_cfg, parts, _toy(), toy_store, TINY_SPEC, device=CPU,
        run=_run(tmp_path / "x", "seqmatch"), frozen=first.images, frozen_ipc=1,
    ).initial_state().images  # fmt: skip
    assert torch.equal(init[0::2], first.images)
    assert not torch.equal(syn.images[1::2], init[1::2])  # the new subset was trained
    again = seqmatch.distill(_toy(), cfg, run=_run(tmp_path, "seqmatch"), **kw)
    assert torch.equal(again.images, syn.images)  # finished subsets resume as they are


def test_haba_trains_through_the_engine(toy_store, tmp_path):
    ds = _toy()
    cfg = _cfg("haba", ipc=1, haba_hallucinators=2, lr_hallucinator=1.0)
    run = _run(tmp_path, "haba")
    parts = haba.parts(cfg, ds, run)
    param = parts.parameterization
    start = param.initial_tensors()
    dist = Distiller(cfg, parts, ds, toy_store, TINY_SPEC, device=CPU, run=run)
    syn = dist.run_all()
    assert syn.images.shape == (6, 1, 8, 8) and syn.labels.tolist() == [0, 0, 1, 1, 2, 2]
    state, meta = DistillState.load(tmp_path / CHECKPOINT, "cpu")
    assert meta["parameterization"]["hallucinators"] == 2
    assert set(state.params) == set(start)
    assert not torch.equal(state.params["bases"], start["bases"])
    assert not torch.equal(
        state.params["hallucinators.1.enc.weight"], start["hallucinators.1.enc.weight"]
    )
    with torch.no_grad():
        assert torch.allclose(param.render(state.params), syn.images, atol=1e-6)


def test_smdd_pruning_runs_in_the_engine(toy_store, tmp_path):
    logs = []
    cfg, ds = _cfg("smdd", prune_ratio=0.25), _toy()
    run = _run(tmp_path, "smdd", logs)
    dist = Distiller(cfg, smdd.parts(cfg, ds, run), ds, toy_store, TINY_SPEC, device=CPU, run=run)
    dist.run_all()
    frozen = frozen_mask(dist.model)  # conv biases before instance norm never count
    eligible = int((~frozen).sum())
    kept = eligible - int(0.25 * eligible)
    utils = [r["mask_utilisation"] for r in logs if r["stage"] == "distill"]
    assert utils == [pytest.approx(kept / frozen.numel())] * 2


# Each lowers its own objective ----------------------------------------------------------------
# A fixed window, one expert, every image in every step and no augmentation: the matching loss
# is then a deterministic function of the images, so its first and last values compare.
def _steady(method, **kw):
    return _cfg(method, dsa=False, batch_syn=0, iterations=8, lr_img=100.0, **kw)


def _fixed(parts, cfg):
    """The method's parts on the fixed window [min_start, min_start + expert_epochs]."""
    windows = FixedWindows(cfg.syn_steps, cfg.expert_epochs, cfg.min_start)
    return dataclasses.replace(parts, windows=windows)


def _drop(losses_seen):
    assert len(losses_seen) >= 2 and all(v == v for v in losses_seen)  # no NaN
    return losses_seen[-1] / losses_seen[0]


def test_smdd_lowers_its_pruned_matching_loss(toy_store, tmp_path):
    logs = []
    cfg, ds = _steady("smdd", prune_ratio=0.25), _toy()
    run = _run(tmp_path, "smdd", logs)
    parts = _fixed(smdd.parts(cfg, ds, run), cfg)
    Distiller(cfg, parts, ds, toy_store, TINY_SPEC, device=CPU, run=run).run_all()
    assert _drop([r["match_loss"] for r in logs if r["stage"] == "distill"]) < 0.95


def test_haba_lowers_its_matching_loss_through_bases_and_hallucinators(toy_store, tmp_path):
    logs = []
    # lr_hallucinator = lr_img: one step size for bases and hallucinators
    cfg, ds = _steady("haba", ipc=1, haba_hallucinators=2, lr_hallucinator=100.0), _toy()
    run = _run(tmp_path, "haba", logs)
    parts = _fixed(haba.parts(cfg, ds, run), cfg)
    Distiller(cfg, parts, ds, toy_store, TINY_SPEC, device=CPU, run=run).run_all()
    assert _drop([r["match_loss"] for r in logs if r["stage"] == "distill"]) < 0.95


def test_seqmatch_lowers_the_matching_loss_of_every_subset(toy_store, tmp_path):
    records = []
    # random starts, but each subset's interval ([0, 1), then [1, 2)) holds a single epoch
    seqmatch.distill(
        _toy(), _steady("seqmatch", seq_subsets=2), experts=toy_store, model=TINY_SPEC,
        device=CPU, run=_run(tmp_path, "seqmatch", records),
    )  # fmt: skip
    for j in (0, 1):
        seen = [r["match_loss"] for r in records if r.get("subset") == j and "match_loss" in r]
        assert _drop(seen) < 0.95, j
