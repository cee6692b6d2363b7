"""Window schedules and PTM retraining points."""

import pytest
import torch

from meddistill.errors import ConfigError
from meddistill.matching.schedule import (
    FixedWindows,
    GrowingWindows,
    ProgressiveWindows,
    RandomWindows,
    check_schedule,
    retraining_schedule,
    sample_window,
)
from meddistill.methods.ptm import PTMConfig
from meddistill.methods.ptm import windows as ptm_windows


def test_random_window_respects_exclusive_upper_bound():
    windows = RandomWindows(syn_steps=7, expert_epochs=2, min_start=1, max_start=4)
    gen = torch.Generator().manual_seed(0)
    starts = {sample_window(i, windows, [0, 3], 10, gen).start for i in range(300)}
    assert starts == {1, 2, 3}
    w = sample_window(0, windows, [5], 10, gen)
    assert w.expert == 5 and w.end == w.start + 2 and w.syn_steps == 7 and w.mid == w.start + 1


def test_growing_bound_datm():
    windows = GrowingWindows(20, 2, 0, 10, growing_start=2, growing_end=100)
    gen = torch.Generator().manual_seed(0)
    early = {sample_window(0, windows, [0], 20, gen).start for _ in range(200)}
    late = {sample_window(100, windows, [0], 20, gen).start for _ in range(400)}
    assert early == {0, 1}
    assert max(late) == 9


def test_progressive_end_grows_from_one_to_T_and_steps_follow():
    cfg = PTMConfig(iterations=101, syn_steps=20, expert_epochs=2, progressive_steps_per_epoch=0)
    windows = ptm_windows(cfg)
    ends = [windows.end_epoch(i, 10) for i in range(101)]
    assert ends[0] == 1 and ends[-1] == 10
    assert all(b >= a for a, b in zip(ends, ends[1:], strict=False))
    assert windows.steps(3) == 30  # 20 / 2 steps per epoch x 3
    capped = ProgressiveWindows(iterations=100, steps_per_epoch=4, max_steps=10)
    assert capped.steps(2) == 8 and capped.steps(5) == 10
    w = sample_window(50, windows, [0], 10, torch.Generator().manual_seed(0))
    assert w.start == 0 and w.end == ends[50]


def test_fixed_window_never_moves():
    windows = FixedWindows(syn_steps=5, expert_epochs=2, start=3)
    gen = torch.Generator().manual_seed(0)
    assert {sample_window(i, windows, [0], 10, gen).start for i in range(20)} == {3}


def test_window_past_buffer_is_refused_before_work():
    with pytest.raises(ConfigError, match="buffer ends at epoch 5"):
        check_schedule(RandomWindows(20, 2, 0, 5), 5)
    check_schedule(RandomWindows(20, 2, 0, 4), 5)  # furthest end 3 + 2 = 5: fine
    with pytest.raises(ConfigError, match="buffer ends"):
        check_schedule(ProgressiveWindows(iterations=10, steps_per_epoch=2, end=8), 5)


def test_empty_start_range_is_refused():
    from meddistill.methods.mtt import METHOD

    cfg = METHOD.make_config({"min_start": 3, "max_start": 3})
    with pytest.raises(ConfigError, match="start range"):
        METHOD.windows_of(cfg)


def test_retraining_points_ptm():
    # I = 300, k = 2: m_1 = 300 - 100 = 200, m_2 = 100; snapshots at (200+100)/2, (100+0)/2
    assert retraining_schedule(300, 2) == [(50, 100), (150, 200)]
    assert retraining_schedule(300, 0) == []
