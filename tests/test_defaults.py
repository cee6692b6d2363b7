"""Settings derived from the data: a default window fitted into a short buffer."""

from __future__ import annotations

from dataclasses import replace

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


def test_student_steps_and_kappa_follow_the_data_when_nobody_set_them() -> None:
    from meddistill.app.defaults import fit_to_data, window_steps
    from meddistill.methods.hoptm import HoPTMConfig

    cfg = HoPTMConfig()  # published: 80 student steps, kappa_0 = 5e-9 in absolute units
    assert (cfg.syn_steps, cfg.kappa_mode) == (80, "absolute")
    # BreastMNIST: 546 train images, batch 64 -> ceil(546 / 64) = 9 steps an epoch, 2 epochs
    assert window_steps(2, 546, 64) == 18
    fitted, notes = fit_to_data(cfg, set(), train_images=546, expert_batch=64)
    assert (fitted.syn_steps, fitted.kappa_mode) == (18, "quantile")
    assert len(notes) == 2 and "syn_steps=18" in notes[0] and "kappa_mode=quantile" in notes[1]
    # BloodMNIST: 11,959 images, batch 256 -> 47 an epoch, 94 in the window: 80 stays
    blood, blood_notes = fit_to_data(cfg, set(), train_images=11959, expert_batch=256)
    assert blood.syn_steps == 80 and len(blood_notes) == 1
    # what a preset or the user set is never changed; an unknown batch skips the step rule
    kept, none = fit_to_data(cfg, {"syn_steps", "kappa_base"}, train_images=546, expert_batch=64)
    assert kept == cfg and none == ()
    unknown, _ = fit_to_data(cfg, {"kappa_mode"}, train_images=546, expert_batch=None)
    assert unknown == cfg


def test_a_run_without_a_preset_records_the_derived_settings(workdir) -> None:
    import yaml
    from imagefolders import image_folder

    from meddistill.cli import main

    ds = image_folder(workdir / "ds", {"a": 6, "b": 6, "c": 6})
    argv = [
        "distill", "--method", "hoptm", "--dataset", f"folder:{ds}", "--ipc", "1",
        "--iterations", "2", "--threads", "1", "--no-progress", "model.width=4",
        "experts.num_experts=1", "experts.epochs=2", "match.expert_epochs=1",
        "match.max_start=1", "eval.num_nets=1", "eval.epochs=1",
    ]  # fmt: skip
    assert main(argv) == 0
    (run,) = (workdir / "runs" / "distill").iterdir()
    used = yaml.safe_load((run / "config.yaml").read_text())["match"]
    # 15 train images (one per class carved for val), batch 256: 1 expert step in 1 epoch
    assert (used["syn_steps"], used["kappa_mode"]) == (1, "quantile")
    log = (run / "log.txt").read_text()
    assert "using syn_steps=1" in log and "using the scale-free match.kappa_mode=quantile" in log


def test_budget_ipc_sets_images_per_class_from_storage():
    from meddistill.app.defaults import ipc_for_storage
    from meddistill.methods.registry import get_method

    cfg = get_method("hoptm").make_config({"parameterization": "dct", "budget_ipc": 1})
    # 28 x 28 RGB, dct keeping 14 x 14: 3 * 196 values per image, a quarter of 3 * 784
    fitted, note = ipc_for_storage(cfg, (3, 28, 28))
    assert fitted.ipc == 4 and "match.ipc=4" in note
    fitted, _ = ipc_for_storage(replace(cfg, dct_keep=7, budget_ipc=10), (3, 28, 28))
    assert fitted.ipc == 160  # (28 / 7)^2 x 10
    pixel = get_method("dm").make_config({"budget_ipc": 10, "ipc": 3})
    assert ipc_for_storage(pixel, (1, 28, 28))[0].ipc == 10  # pixels: the budget is the ipc
    assert ipc_for_storage(get_method("dm").make_config({}), (1, 28, 28))[1] is None
