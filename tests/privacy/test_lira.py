"""LiRA: the likelihood-ratio maths on hand-computed Gaussians, the balanced halves, and the
known answer end to end: a network trained on exactly its members is attackable with a few
tiny shadows, a network trained on other data is not."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from toydata import noise_dataset, noise_split

from meddistill.data.dataset import MedicalDataset
from meddistill.models import ModelSpec
from meddistill.privacy.lira import fit_side, lira_scores, logit_confidence, use_global_variance
from meddistill.privacy.membership import attack_sample, trained_networks
from meddistill.privacy.shadows import (
    ShadowPipeline,
    ShadowPool,
    balanced_halves,
    lira_attack,
    run_shadows,
)
from meddistill.training.config import TrainConfig
from meddistill.utils import make_generator

CPU = torch.device("cpu")
TINY = ModelSpec(depth=1, width=4)
# no augmentation, constant step: nothing keeps a network from memorising its few images
MEMORISE = TrainConfig(epochs=200, lr=0.05, dsa=False, lr_schedule="none")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    return one_thread


def scores(target, phi, ins, global_variance=False):
    return lira_scores(np.asarray(target, float), np.asarray(phi, float), np.asarray(ins, bool),
                       global_variance=global_variance)  # fmt: skip


def test_logit_confidence_is_the_log_odds_of_the_true_class():
    rows = [[0.0, 0.0], [2.0, 0.0], [0.0, 0.0, math.log(2.0)], [200.0, 0.0]]
    labels = [0, 0, 2, 0]
    pairs = zip(rows, labels, strict=True)
    phi = [logit_confidence(torch.tensor([r]), torch.tensor([y]))[0] for r, y in pairs]
    assert phi[0] == pytest.approx(0.0)  # p = 1/2
    assert phi[1] == pytest.approx(2.0)  # p = e^2 / (e^2 + 1): log-odds 2
    assert phi[2] == pytest.approx(0.0, abs=1e-6)  # p = 2/4
    assert phi[3] == pytest.approx(200.0)  # p rounds to 1 in float, phi stays finite


def test_in_n21_and_out_n01_score_a_target_at_2_above_one_at_0():
    # one image, IN values 1 and 3 (mean 2, population std 1), OUT values -1 and 1 (N(0, 1))
    phi, ins = [[1.0], [3.0], [-1.0], [1.0]], [[True], [True], [False], [False]]
    at_2, at_0 = scores([2.0], phi, ins), scores([0.0], phi, ins)
    # log N(2; 2, 1) - log N(2; 0, 1) = 0 + 4/2; log N(0; 2, 1) - log N(0; 0, 1) = -4/2
    assert at_2[0] == pytest.approx(2.0) and at_0[0] == pytest.approx(-2.0)
    # two target networks: the mean of their scores
    assert scores([[2.0], [0.0]], phi, ins)[0] == pytest.approx(0.0)


def test_identical_in_and_out_give_ratio_one():
    phi = [[0.5, -1.0], [1.5, 2.0], [0.5, -1.0], [1.5, 2.0]]
    ins = [[True, True], [True, True], [False, False], [False, False]]
    for target in ([1.0, 0.0], [7.0, -3.0]):
        assert scores(target, phi, ins) == pytest.approx([0.0, 0.0])
        assert scores(target, phi, ins, global_variance=True) == pytest.approx([0.0, 0.0])


def test_offline_when_an_image_has_no_in_values():
    phi, ins = [[-1.0], [1.0]], [[False], [False]]  # OUT ~ N(0, 1), nothing IN
    assert scores([0.0], phi, ins)[0] == pytest.approx(0.0)  # Pr[Z < 0] = Pr[Z > 0]
    assert scores([1.959964], phi, ins)[0] == pytest.approx(math.log(0.975 / 0.025), rel=1e-5)
    assert scores([-1.959964], phi, ins)[0] == pytest.approx(-math.log(39.0), rel=1e-5)


def test_global_variance_pools_the_within_image_spread():
    # image 0: values 0 and 2 (spread 1); image 1: 10 and 10 (spread 0); pooled: (1+1+0+0)/4
    phi = np.array([[0.0, 10.0], [2.0, 10.0]])
    mask = np.ones_like(phi, bool)
    own, pooled = fit_side(phi, mask, False), fit_side(phi, mask, True)
    assert own.mean.tolist() == [1.0, 10.0] and own.std[0] == pytest.approx(1.0)
    assert own.std[1] == pytest.approx(1e-4)  # the floor, not a point mass
    assert pooled.std.tolist() == pytest.approx([math.sqrt(0.5)] * 2)
    single = fit_side(np.array([[3.0, 1.0], [5.0, 0.0]]), np.array([[1, 1], [1, 0]], bool), False)
    assert single.std[1] == pytest.approx(math.sqrt(2 / 3))  # one value: the pooled (1+1+0)/3
    assert use_global_variance("auto", 8) and not use_global_variance("auto", 64)


def test_halves_are_balanced_per_image_and_seeded():
    keep = balanced_halves(50, 6, make_generator(0))
    assert keep.shape == (6, 50) and (keep.sum(dim=0) == 3).all()  # IN exactly half
    assert torch.equal(keep, balanced_halves(50, 6, make_generator(0)))
    odd = balanced_halves(400, 3, make_generator(1)).sum(dim=0)
    assert set(odd.tolist()) == {1, 2} and abs(odd.float().mean().item() - 1.5) < 0.1


def shadow_pipeline() -> ShadowPipeline:
    """A cheap 'pipeline': one tiny network trained on the half until it memorises it."""

    def train(half: MedicalDataset, k: int) -> list[torch.nn.Module]:
        return trained_networks(half, TINY, half.train.images, half.train.labels, MEMORISE,
                                count=1, seed=100 + k, device=CPU)  # fmt: skip

    return ShadowPipeline(train=train, identity="memorise")


def lira_on(target: list[torch.nn.Module], ds: MedicalDataset, shadows: int, folder=None):
    members, others = attack_sample(ds, "val", 1000, make_generator(0))
    pool = ShadowPool(ds, others, shadows, make_generator(1))
    records = run_shadows(pool, members, shadow_pipeline(), folder=folder)
    stats, facts = lira_attack(target, members, others, records, bootstrap=200, seed=0)
    return stats, facts, records


def test_lira_attacks_a_network_trained_on_its_members_and_not_one_trained_elsewhere(tmp_path):
    ds = noise_dataset(n_train=16, n_val=16)
    target = trained_networks(ds, TINY, ds.train.images, ds.train.labels, MEMORISE,
                              count=1, seed=0, device=CPU)  # fmt: skip
    stats, facts, records = lira_on(target, ds, 4, folder=tmp_path)
    assert stats.auc > 0.85 and stats.auc_ci[0] > 0.5
    assert facts["shadows"] == 4 and facts["global_variance"] is True
    ins = np.stack([r.member_in for r in records])
    assert facts["online_targets"] == 32 and (ins.sum(axis=0) == 2).all()  # IN 2 of 4 each
    saved = json.loads((tmp_path / "shadow_0.json").read_text())
    assert len(saved["phi"]) == 32 and saved["wall_s"] > 0
    # a second run reuses every shadow's record: nothing is trained again
    again, _, reused = lira_on(target, ds, 4, folder=tmp_path)
    assert all(r.reused for r in reused) and again.auc == stats.auc

    outside = noise_split(16, torch.Generator().manual_seed(7))
    elsewhere = trained_networks(ds, TINY, outside.images, outside.labels, MEMORISE,
                                 count=1, seed=0, device=CPU)  # fmt: skip
    stats, _, _ = lira_on(elsewhere, ds, 4)
    assert stats.auc_ci[0] < 0.5 < stats.auc_ci[1]
