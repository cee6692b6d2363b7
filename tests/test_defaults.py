"""Settings derived from the data: a default window fitted into a short buffer."""

from __future__ import annotations

import pytest

from meddistill.app.config import DistillJob, resolve
from meddistill.app.defaults import fit_window
from meddistill.app.distill import resolve_distill
from meddistill.methods.mtt import MTTConfig
from meddistill.methods.registry import get_method

MTT = get_method("mtt")


def test_a_default_window_is_fitted_into_a_short_buffer_and_said() -> None:
    cfg = MTTConfig()  # the published CIFAR window: start in [0, 25), 3 epochs
    assert (cfg.expert_epochs, cfg.max_start) == (3, 25)
    fitted, note = fit_window(cfg, MTT.windows_of, epochs=10, given=set())
    # 10 // 5 = 2 epochs long; starts 0..8 (max_start exclusive 9): furthest end 8 + 2 = 10
    assert (fitted.expert_epochs, fitted.max_start) == (2, 9)
    assert note is not None and "does not fit a buffer of 10 epochs" in note
    assert "expert_epochs=2, max_start=9" in note
    long, none = fit_window(cfg, MTT.windows_of, epochs=50, given=set())
    assert long is cfg and none is None  # it fits: untouched
    tiny, _ = fit_window(cfg, MTT.windows_of, epochs=2, given=set())
    assert (tiny.expert_epochs, tiny.max_start) == (1, 2)  # starts 0..1, ends by epoch 2


@pytest.mark.parametrize("given", [{"max_start": 25}, {"expert_epochs": 3}])
def test_a_window_the_user_set_is_never_changed(given) -> None:
    job = resolve(DistillJob, {"method": "mtt", "match": given})
    plan = resolve_distill(job)  # the run's own check refuses it later, naming the knobs
    assert (plan.config.expert_epochs, plan.config.max_start) == (3, 25) and plan.notes == ()


def test_a_distill_job_without_a_preset_gets_a_window_its_buffer_holds() -> None:
    plan = resolve_distill(resolve(DistillJob, {"method": "mtt", "experts": {"epochs": 10}}))
    assert (plan.config.expert_epochs, plan.config.max_start) == (2, 9)
    assert len(plan.notes) == 1 and "match.max_start=25" in plan.notes[0]
    hoptm = resolve_distill(resolve(DistillJob, {"method": "hoptm"}))
    assert hoptm.notes == ()  # its defaults (2 epochs from [0, 4)) fit 10 epochs


def test_a_learned_step_size_far_from_its_start_is_warned() -> None:
    from meddistill.app.defaults import step_size_warning

    assert step_size_warning(0.01, 0.05) is None  # 5x: within [0.1x, 10x]
    assert step_size_warning(0.01, 0.001) is None  # exactly 0.1x
    low = step_size_warning(0.01, 0.0003)
    assert low is not None and "collapsed from 0.01 to 0.0003 (0.03x)" in low
    high = step_size_warning(0.01, 0.2)
    assert high is not None and "grew from 0.01 to 0.2 (20x)" in high
    assert step_size_warning(None, 0.2) is None and step_size_warning(0.01, None) is None
