"""The attack's maths on hand-computed scores: AUC, TPR at low FPR and the bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from meddistill.errors import ConfigError
from meddistill.privacy.attack import attack_stats, roc_numbers
from meddistill.utils import make_generator


def stats(members, nonmembers, bootstrap=200, seed=0):
    return attack_stats(members, nonmembers, generator=make_generator(seed), bootstrap=bootstrap)


def test_perfectly_separated_scores_give_auc_1_and_tpr_1():
    s = stats([5.0, 6.0, 7.0, 8.0], [0.0, 1.0, 2.0])
    assert s.auc == 1.0 and s.tpr == {0.01: 1.0, 0.001: 1.0}
    assert s.auc_ci == (1.0, 1.0) and s.tpr_ci[0.01] == (1.0, 1.0)
    assert (s.members, s.nonmembers, s.bootstrap) == (4, 3, 200)


def test_identical_distributions_give_auc_one_half():
    same = np.arange(10.0)
    s = stats(same, same)
    assert s.auc == 0.5
    assert s.tpr[0.01] == 0.0  # no threshold flags a member without flagging a non-member
    assert s.auc_ci[0] < 0.5 < s.auc_ci[1]


def test_members_scoring_lower_give_auc_0():
    assert stats([0.0, 1.0], [2.0, 3.0]).auc == 0.0


@pytest.mark.parametrize(
    ("members", "nonmembers", "auc", "tpr0"),
    [
        ([2.0, 4.0], [1.0, 3.0], 3 / 4, 1 / 2),  # pairs won: 2>1, 4>1, 4>3
        ([0.9, 0.8, 0.3], [0.7, 0.2, 0.1, 0.6], 10 / 12, 2 / 3),
        ([1.0, 1.0], [1.0, 0.0], 3 / 4, 0.0),  # a tie counts a half
    ],
)
def test_hand_computed_auc_and_tpr_at_zero_fpr(members, nonmembers, auc, tpr0):
    got_auc, (tpr1, tpr01) = roc_numbers(np.array(members), np.array(nonmembers))
    assert got_auc == pytest.approx(auc)
    assert tpr1 == tpr01 == pytest.approx(tpr0)  # fewer than 100 non-members: FPR 1 % is 0


def test_tpr_at_one_percent_allows_two_false_alarms_in_200():
    nonmembers = np.arange(200.0)  # the two highest: 198 and 199
    members = np.concatenate([np.full(10, 198.5), np.full(90, -1.0)])
    _, (tpr1, tpr01) = roc_numbers(members, nonmembers)
    assert tpr1 == pytest.approx(0.10)  # threshold 198: 10 members, 2 of 200 non-members
    assert tpr01 == 0.0  # FPR 0.1 % of 200: no false alarm at all, and 199 tops every member


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(0.5, 1, 300), rng.normal(0, 1, 300)
    a, b, c = (
        stats(members, nonmembers),
        stats(members, nonmembers),
        stats(members, nonmembers, seed=1),
    )
    assert a == b and a.auc_ci != c.auc_ci
    assert a.auc_ci[0] < a.auc < a.auc_ci[1] and a.auc_ci[0] > 0.5
    assert a.tpr_ci[0.01][0] <= a.tpr[0.01] <= a.tpr_ci[0.01][1]
    data = a.to_dict()
    assert set(data["tpr_at_fpr"]) == {"0.01", "0.001"} and len(data["auc_ci"]) == 2


@pytest.mark.parametrize(
    ("members", "nonmembers", "words"),
    [([], [1.0], "at least one member"), ([1.0], [float("nan")], "NaN or inf")],
)
def test_bad_scores_are_refused(members, nonmembers, words):
    with pytest.raises(ConfigError, match=words):
        stats(members, nonmembers)
