"""SMDD pruning mask, SeqMatch split/interval arithmetic and driver, HaBa parameterisation,
and each of them lowering its own matching loss on tiny data."""

import pytest
import torch
from toydata import shifted_toy

from meddistill.config import from_dict
from meddistill.data.dataset import MedicalDataset
from meddistill.errors import ConfigError
from meddistill.matching import losses
from meddistill.matching.config import MatchConfig
from meddistill.matching.engine import CHECKPOINT, Distiller
from meddistill.matching.state import DistillState
from meddistill.methods import haba, seqmatch, smdd
from meddistill.models import ModelSpec, frozen_mask
from meddistill.utils import make_generator

TINY_SPEC = ModelSpec(depth=1, width=4)
STRATEGY = "color_crop_cutout_flip_scale_rotate"


# SMDD --------------------------------------------------------------------------------------
def test_smdd_mask_prunes_the_hardest_fraction():
    loss = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7])
    # n = 5, floor(0.4 * 5) = 2 pruned: the 0.9 and the 0.7
    assert smdd.smdd_mask(loss, 0.4).tolist() == [True, True, False, True, False]
    # element 1 excluded: n = 4 eligible, floor(0.4 * 4) = 1 pruned: the 0.9
    exclude = torch.tensor([False, True, False, False, False])
    assert smdd.smdd_mask(loss, 0.4, exclude).tolist() == [True, False, False, True, True]
    assert smdd.smdd_mask(loss, 0.0, exclude).tolist() == [True, False, True, True, True]
    # ties: a stable sort prunes the lower index first
    assert smdd.smdd_mask(torch.ones(4), 0.5).tolist() == [False, False, True, True]


def test_smdd_mask_in_the_masked_loss_hand_computed():
    w_end = torch.tensor([1.0, 2.0, 3.0, 4.0])
    target = torch.ones(4)
    start = torch.zeros(4)
    scores = smdd.prune_scores("mismatch", w_end, start, target)  # [0, 1, 4, 9]
    keep = smdd.smdd_mask(scores, 0.25)  # floor(1.0) = 1 pruned: the 9
    assert keep.tolist() == [True, True, True, False]
    # (0 + 1 + 4) / (1 + 1 + 1), against the unpruned 14 / 4
    assert float(losses.masked_param_loss(w_end, start, target, keep)) == pytest.approx(5 / 3)
    assert float(losses.normalized_param_loss(w_end, start, target)) == pytest.approx(3.5)
    moved = torch.tensor([1.0, 3.0, 2.0, 0.0])
    by_move = smdd.smdd_mask(smdd.prune_scores("displacement", w_end, start, moved), 0.25)
    assert by_move.tolist() == [True, False, True, True]  # the expert's largest move, 3^2


def test_smdd_errors():
    with pytest.raises(ConfigError, match="prune_ratio"):
        smdd.smdd_mask(torch.ones(3), 1.0)
    with pytest.raises(ConfigError, match="prune_by"):
        smdd.prune_scores("gradient", torch.ones(2), torch.ones(2), torch.ones(2))
    with pytest.raises(ConfigError, match="exclude"):
        smdd.smdd_mask(torch.ones(3), 0.1, torch.zeros(2, dtype=torch.bool))


@pytest.mark.parametrize("module", [smdd, seqmatch, haba])
def test_defaults_are_engine_knobs(module):
    cfg = from_dict(MatchConfig, module.DEFAULTS)  # every default is a MatchConfig option
    assert all(getattr(cfg, k) == v for k, v in module.DEFAULTS.items())
    assert module.EXPERTS in ("sgd", "gsam")


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
    cfg = MatchConfig(ipc=5, min_start=0, max_start=10)
    stages = seqmatch.seqmatch_plan(cfg, 2)
    assert stages == [
        seqmatch.SeqStage(0, ipc=3, frozen_ipc=0, min_start=0, max_start=5),
        seqmatch.SeqStage(1, ipc=2, frozen_ipc=3, min_start=5, max_start=10),
    ]
    second = seqmatch.stage_config(cfg, stages[1])
    assert (second.ipc, second.min_start, second.max_start) == (5, 5, 10)
    assert cfg.ipc == 5 and cfg.max_start == 10  # the base config is untouched
    assert seqmatch.total_iterations(cfg, 2) == 2 * cfg.iterations
    mask = seqmatch.trainable_mask(2, 2, 1)
    assert mask.tolist() == [False, False, True, False, False, True]
    images = torch.zeros(6, 1, 2, 2)
    frozen = torch.arange(1.0, 5.0).view(4, 1, 1, 1).expand(4, 1, 2, 2)
    merged = seqmatch.merge_frozen(images, frozen, num_classes=2, frozen_ipc=2)
    assert merged[:, 0, 0, 0].tolist() == [1.0, 2.0, 0.0, 3.0, 4.0, 0.0]
    with pytest.raises(ConfigError, match="schedule"):
        seqmatch.seqmatch_plan(MatchConfig(schedule="progressive"), 2)


def test_seqmatch_refuses_soft_labels_and_retraining(tmp_path):
    kw = dict(num_subsets=2, device=torch.device("cpu"), out_dir=tmp_path, dsa_strategy="none")
    with pytest.raises(ConfigError, match="soft_labels"):
        seqmatch.run_seqmatch(MatchConfig(soft_labels=True), None, None, TINY_SPEC, **kw)
    with pytest.raises(ConfigError, match="retraining"):
        seqmatch.run_seqmatch(MatchConfig(retraining_points=1), None, None, TINY_SPEC, **kw)


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
    return shifted_toy(n_train=30, n_test=12)


@pytest.fixture(scope="module")
def toy_store(tmp_path_factory):
    from meddistill.experts.config import BufferConfig, expert_train_config
    from meddistill.experts.generate import generate_buffer

    train = expert_train_config(4)
    train.batch_size = 16
    cfg = BufferConfig(num_experts=1, epochs=4, model=TINY_SPEC, train=train, seed=0)
    out = tmp_path_factory.mktemp("tmbuffer") / "toy"
    return generate_buffer(_toy(), cfg, out, device=torch.device("cpu"), progress=False)


def _cfg(**kw):
    d = dict(ipc=2, iterations=2, syn_steps=2, expert_epochs=2, min_start=0, max_start=2)
    d.update(lr_img=10.0, checkpoint_every=2, eval={"num_nets": 1, "epochs": 1})
    d.update(kw)
    return from_dict(MatchConfig, d)


def test_seqmatch_freezes_earlier_subsets_and_uses_their_interval(toy_store, tmp_path):
    records = []
    cfg = _cfg()
    run = dict(num_subsets=2, device=torch.device("cpu"), dsa_strategy=STRATEGY, progress=False)
    syn = seqmatch.run_seqmatch(
        cfg, _toy(), toy_store, TINY_SPEC, out_dir=tmp_path, on_metric=records.append, **run
    )
    assert syn.images.shape == (6, 1, 8, 8) and syn.labels.tolist() == [0, 0, 1, 1, 2, 2]
    first, _ = DistillState.load(tmp_path / "subset_0" / CHECKPOINT, "cpu")
    assert torch.equal(syn.images[0::2], first.images)  # frozen slots: subset 0, untouched
    starts = {j: {r["start"] for r in records if r.get("subset") == j} for j in (0, 1)}
    assert starts == {0: {0}, 1: {1}}  # intervals [0, 1) and [1, 2)
    assert syn.meta["seqmatch"]["subset_ipc"] == [1, 1]
    init = seqmatch._StageDistiller(
        seqmatch.stage_config(cfg, seqmatch.seqmatch_plan(cfg, 2)[1]), _toy(), toy_store,
        TINY_SPEC, device=torch.device("cpu"), out_dir=tmp_path / "x", dsa_strategy=STRATEGY,
        progress=False, frozen=first.images, frozen_ipc=1,
    ).initial_state().images  # fmt: skip
    assert torch.equal(init[0::2], first.images)
    assert not torch.equal(syn.images[1::2], init[1::2])  # the new subset was trained
    again = seqmatch.run_seqmatch(cfg, _toy(), toy_store, TINY_SPEC, out_dir=tmp_path, **run)
    assert torch.equal(again.images, syn.images)  # finished subsets resume as they are


def test_haba_trains_through_the_engine(toy_store, tmp_path):
    ds = _toy()
    param = haba.HaBaParam.from_real(ds, 1, 2, generator=make_generator(0), lr_hallucinator=1.0)
    start = param.initial_tensors()
    dist = Distiller(
        _cfg(ipc=1), ds, toy_store, TINY_SPEC, device=torch.device("cpu"), out_dir=tmp_path,
        dsa_strategy=STRATEGY, progress=False, parameterization=param,
    )  # fmt: skip
    syn = dist.run()
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
    dist = Distiller(
        _cfg(prune_ratio=0.25), _toy(), toy_store, TINY_SPEC, device=torch.device("cpu"),
        out_dir=tmp_path, dsa_strategy=STRATEGY, progress=False, on_metric=logs.append,
    )  # fmt: skip
    dist.run()
    frozen = frozen_mask(dist.model)  # conv biases before instance norm never count
    eligible = int((~frozen).sum())
    kept = eligible - int(0.25 * eligible)
    utils = [r["mask_utilisation"] for r in logs if r["stage"] == "distill"]
    assert utils == [pytest.approx(kept / frozen.numel())] * 2


# Each lowers its own objective ----------------------------------------------------------------
# A fixed window, one expert, every image in every step and no augmentation: the matching loss
# is then a deterministic function of the images, so its first and last values compare.
def _steady(**kw):
    kw.setdefault("schedule", "fixed")
    return _cfg(dsa=False, batch_syn=0, iterations=8, lr_img=100.0, **kw)


def _drop(losses_seen):
    assert len(losses_seen) >= 2 and all(v == v for v in losses_seen)  # no NaN
    return losses_seen[-1] / losses_seen[0]


def test_smdd_lowers_its_pruned_matching_loss(toy_store, tmp_path):
    logs = []
    Distiller(
        _steady(prune_ratio=0.25), _toy(), toy_store, TINY_SPEC, device=torch.device("cpu"),
        out_dir=tmp_path, dsa_strategy=STRATEGY, progress=False, on_metric=logs.append,
    ).run()  # fmt: skip
    assert _drop([r["match_loss"] for r in logs if r["stage"] == "distill"]) < 0.95


def test_haba_lowers_its_matching_loss_through_bases_and_hallucinators(toy_store, tmp_path):
    logs = []
    param = haba.HaBaParam.from_real(_toy(), 1, 2, generator=make_generator(0))
    Distiller(
        _steady(ipc=1), _toy(), toy_store, TINY_SPEC, device=torch.device("cpu"),
        out_dir=tmp_path, dsa_strategy=STRATEGY, progress=False, on_metric=logs.append,
        parameterization=param,
    ).run()  # fmt: skip
    assert _drop([r["match_loss"] for r in logs if r["stage"] == "distill"]) < 0.95


def test_seqmatch_lowers_the_matching_loss_of_every_subset(toy_store, tmp_path):
    records = []
    # random starts, but each subset's interval ([0, 1), then [1, 2)) holds a single epoch
    seqmatch.run_seqmatch(
        _steady(schedule="random"), _toy(), toy_store, TINY_SPEC, out_dir=tmp_path, on_metric=records.append,
        num_subsets=2, device=torch.device("cpu"), dsa_strategy=STRATEGY, progress=False,
    )  # fmt: skip
    for j in (0, 1):
        seen = [r["match_loss"] for r in records if r.get("subset") == j and "match_loss" in r]
        assert _drop(seen) < 0.95, j
