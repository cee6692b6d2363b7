"""Window schedules and PTM retraining points."""

import pytest
import torch

from meddistill.config import from_dict
from meddistill.errors import ConfigError
from meddistill.matching.config import MatchConfig
from meddistill.matching.schedule import (
    check_schedule,
    progressive_end,
    progressive_steps,
    retraining_schedule,
    sample_window,
)


def _cfg(**kw):
    return from_dict(MatchConfig, kw)


def test_random_window_respects_exclusive_upper_bound():
    cfg = _cfg(schedule="random", min_start=1, max_start=4, expert_epochs=2, syn_steps=7)
    gen = torch.Generator().manual_seed(0)
    starts = {sample_window(i, cfg, [0, 3], 10, gen).start for i in range(300)}
    assert starts == {1, 2, 3}
    w = sample_window(0, cfg, [5], 10, gen)
    assert w.expert == 5 and w.end == w.start + 2 and w.syn_steps == 7 and w.mid == w.start + 1


def test_growing_bound_datm():
    cfg = _cfg(schedule="growing", min_start=0, max_start=10, growing_start=2, growing_end=100)
    gen = torch.Generator().manual_seed(0)
    early = {sample_window(0, cfg, [0], 20, gen).start for _ in range(200)}
    late = {sample_window(100, cfg, [0], 20, gen).start for _ in range(400)}
    assert early == {0, 1}
    assert max(late) == 9


def test_progressive_end_grows_from_one_to_T_and_steps_follow():
    cfg = _cfg(schedule="progressive", iterations=101, syn_steps=20, expert_epochs=2)
    ends = [progressive_end(i, cfg, 10) for i in range(101)]
    assert ends[0] == 1 and ends[-1] == 10
    assert all(b >= a for a, b in zip(ends, ends[1:], strict=False))
    assert progressive_steps(3, cfg) == 30  # 20 / 2 steps per epoch x 3
    cfg2 = _cfg(schedule="progressive", progressive_steps_per_epoch=4, progressive_max_steps=10)
    assert progressive_steps(2, cfg2) == 8 and progressive_steps(5, cfg2) == 10
    w = sample_window(50, cfg, [0], 10, torch.Generator().manual_seed(0))
    assert w.start == 0 and w.end == ends[50]


def test_window_past_buffer_is_refused_before_work():
    with pytest.raises(ConfigError, match="buffer ends at epoch 5"):
        check_schedule(_cfg(max_start=5, expert_epochs=2), 5)
    check_schedule(_cfg(max_start=4, expert_epochs=2), 5)  # furthest end 3 + 2 = 5: fine
    with pytest.raises(ConfigError, match="buffer ends"):
        check_schedule(_cfg(schedule="progressive", progressive_end=8), 5)


def test_retraining_points_ptm():
    # I = 300, k = 2: m_1 = 300 - 100 = 200, m_2 = 100; snapshots at (200+100)/2, (100+0)/2
    assert retraining_schedule(300, 2) == [(50, 100), (150, 200)]
    assert retraining_schedule(300, 0) == []
