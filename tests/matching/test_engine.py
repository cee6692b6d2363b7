"""The matching loop: every method runs, resumes exactly, and fails cleanly."""

import pytest
import torch

from meddistill.config import from_dict
from meddistill.errors import ConfigError, ExpertBufferError, NumericalError
from meddistill.matching.config import MatchConfig
from meddistill.matching.engine import CHECKPOINT, Distiller, foundation_mask
from meddistill.methods import method_defaults, trajectory_methods
from meddistill.models import ModelSpec

TINY_SPEC = ModelSpec(depth=1, width=4)  # the spec of the toy_buffer fixture

STRATEGY = "color_crop_cutout_flip_scale_rotate"


def _cfg(method="mtt", **kw):
    d = method_defaults(method)
    d.update(
        ipc=2,
        iterations=4,
        syn_steps=3,
        expert_epochs=2,
        max_start=3,
        checkpoint_every=2,
        kappa_mode="quantile",
    )
    if method == "datm":
        d.update(growing_start=2, growing_end=2)
    if method == "ptm":
        d.update(progressive_steps_per_epoch=2, retraining_points=1)
    d.update(kw)
    return from_dict(MatchConfig, d)


def _distiller(cfg, toy, store, out, spec=TINY_SPEC, logs=None):
    return Distiller(
        cfg,
        toy,
        store,
        spec,
        device=torch.device("cpu"),
        out_dir=out,
        dsa_strategy=STRATEGY,
        progress=False,
        on_metric=(logs.append if logs is not None else None),
    )


@pytest.mark.parametrize("method", trajectory_methods())
def test_every_method_runs_and_changes_images(method, toy, toy_buffer, tmp_path):
    logs = []
    dist = _distiller(_cfg(method), toy, toy_buffer, tmp_path, logs=logs)
    init = dist.initial_state().images
    syn = dist.run()
    assert syn.images.shape == (6, 1, 8, 8)
    assert not torch.equal(syn.images, init)
    assert len([r for r in logs if r["stage"] == "distill"]) == 4
    assert syn.syn_lr > 0
    soft = method_defaults(method).get("soft_labels", False)
    assert syn.labels.dim() == (2 if soft else 1)
    if soft:
        assert torch.allclose(syn.labels.sum(dim=1), torch.ones(6))
    assert (tmp_path / CHECKPOINT).is_file()


def test_resume_from_checkpoint_is_bit_identical(toy, toy_buffer, tmp_path):
    cfg = _cfg("hoptm", iterations=6, checkpoint_every=2)
    full = _distiller(cfg, toy, toy_buffer, tmp_path / "full").run()

    class Stop(Exception):
        pass

    part = _distiller(cfg, toy, toy_buffer, tmp_path / "part")
    original_step = part.step

    def step_then_die(state, gen):
        out = original_step(state, gen)
        if state.iteration == 5:  # dies after iteration 5, before its checkpoint (every 2)
            raise Stop
        return out

    part.step = step_then_die
    with pytest.raises(Stop):
        part.run()
    resumed = _distiller(cfg, toy, toy_buffer, tmp_path / "part")
    assert resumed._load_or_init()[0].iteration == 4
    result = resumed.run()
    assert torch.equal(result.images, full.images)
    assert result.syn_lr == full.syn_lr


def test_checkpoint_of_another_config_is_refused(toy, toy_buffer, tmp_path):
    _distiller(_cfg(iterations=2), toy, toy_buffer, tmp_path).run()
    with pytest.raises(ConfigError, match="another configuration"):
        _distiller(_cfg(iterations=2, lr_img=5.0), toy, toy_buffer, tmp_path).run()


def test_nan_loss_stops_with_message_and_keeps_last_checkpoint(toy, toy_buffer, tmp_path):
    cfg = _cfg(iterations=6, checkpoint_every=1, lr_img=1e30, step_size_param="log")
    with pytest.raises(NumericalError, match="last good checkpoint"):
        _distiller(cfg, toy, toy_buffer, tmp_path).run()
    from meddistill.matching.state import DistillState

    state, _ = DistillState.load(tmp_path / CHECKPOINT, "cpu")
    assert torch.isfinite(state.images).all()


def test_non_positive_step_size_is_an_error(toy, toy_buffer, tmp_path):
    dist = _distiller(_cfg(lr_lr=1.0, momentum_lr=0.0), toy, toy_buffer, tmp_path)
    state = dist.initial_state()
    zeros = torch.zeros_like(state.images)
    # alpha = 0.01 - lr_lr * grad = 0.01 - 1.0 * 0.5 < 0
    with pytest.raises(NumericalError, match="non-positive"):
        dist._update(state, zeros, torch.tensor(0.5), None, dist.syn_lr(state))
    # the log parameterisation cannot go negative: the same push leaves alpha > 0
    dist_log = _distiller(
        _cfg(lr_lr=1.0, momentum_lr=0.0, step_size_param="log"), toy, toy_buffer, tmp_path / "log"
    )
    state = dist_log.initial_state()
    dist_log._update(state, zeros, torch.tensor(50.0), None, dist_log.syn_lr(state))
    assert 0 < dist_log.syn_lr(state).item() < 0.01


def test_bad_inputs(toy, toy_buffer, tmp_path):
    with pytest.raises(ConfigError, match="smallest class"):
        _distiller(_cfg(ipc=100), toy, toy_buffer, tmp_path)
    with pytest.raises(ConfigError, match="buffer ends at epoch 6"):
        _distiller(_cfg(max_start=6), toy, toy_buffer, tmp_path)
    with pytest.raises(ExpertBufferError, match="network"):
        _distiller(_cfg(), toy, toy_buffer, tmp_path, spec=ModelSpec(depth=1, width=8))


def test_overlap_at_ipc1_says_it_does_nothing(toy, toy_buffer, tmp_path, capsys):
    messages = []
    Distiller(
        _cfg("ptm", ipc=1, retraining_points=0),
        toy,
        toy_buffer,
        TINY_SPEC,
        device=torch.device("cpu"),
        out_dir=tmp_path,
        dsa_strategy=STRATEGY,
        progress=False,
        log=messages.append,
    )
    assert any("does nothing at IPC 1" in m for m in messages)
    assert "does nothing at IPC 1" in capsys.readouterr().err


def test_foundation_mask_splits_each_class():
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    assert foundation_mask(labels, 2).tolist() == [True, True, False, True, True, False]


def test_retraining_point_restores_complement_snapshot(toy, toy_buffer, tmp_path):
    cfg = _cfg("ptm", ipc=2, iterations=4, retraining_points=1, checkpoint_every=4)
    dist = _distiller(cfg, toy, toy_buffer, tmp_path)
    # k = 1 over 4 iterations: retrain at m_1 = 2, snapshot at iteration 1
    assert dist.retraining == [(1, 2)]
    state = dist.initial_state()
    gen = torch.Generator().manual_seed(0)
    dist.step(state, gen)  # after iteration 0 -> done = 1: snapshot taken
    snap = state.snapshots[2].clone()
    dist.step(state, gen)  # done = 2: complement restored
    complement = ~dist.foundation
    assert torch.equal(state.images[complement], snap)
    assert 2 not in state.snapshots


def test_snapshots_every_k_iterations_for_the_report(toy, toy_buffer, tmp_path):
    from meddistill.data.snapshots import load_snapshots

    syn = _distiller(_cfg(iterations=4, snapshot_every=2), toy, toy_buffer, tmp_path).run()
    snaps = load_snapshots(tmp_path)
    assert [it for it, *_ in snaps] == [1, 2, 4]
    assert torch.equal(snaps[-1][1], syn.images)
