"""The matching loop: every method runs, resumes exactly, and fails cleanly."""

import pytest
import torch

from meddistill.errors import ConfigError, ExpertBufferError, NumericalError
from meddistill.matching.engine import Distiller, foundation_mask
from meddistill.matching.loop import CHECKPOINT, DistillRun
from meddistill.matching.student import StudentGradients
from meddistill.methods.registry import METHODS, get_method
from meddistill.models import ModelSpec

TINY_SPEC = ModelSpec(depth=1, width=4)  # the spec of the toy_buffer fixture

STRATEGY = "color_crop_cutout_flip_scale_rotate"
ENGINE_METHODS = sorted(
    name for name, m in METHODS.items() if m.kind == "trajectory" and name != "seqmatch"
)


def _cfg(method="mtt", **kw):
    d = dict(ipc=2, iterations=4, syn_steps=3, expert_epochs=2, max_start=3, checkpoint_every=2)
    if method == "hoptm":
        d.update(kappa_mode="quantile")
    if method == "datm":
        d.update(growing_start=2, growing_end=2)
    if method == "ptm":
        d.update(progressive_steps_per_epoch=2, retraining_points=1)
    d.update(kw)
    return get_method(method).make_config(d)


def _distiller(
    cfg, toy, store, out, spec=TINY_SPEC, logs=None, log=None, method=None, autoencoder=None
):
    name = method or next(n for n, m in METHODS.items() if type(cfg) is m.config_type)
    run = DistillRun(
        seed=0,
        out_dir=out,
        dsa_strategy=STRATEGY,
        method=name,
        progress=False,
        on_metric=(logs.append if logs is not None else (lambda r: None)),
        log=log or (lambda m: None),
        autoencoder=autoencoder,
    )
    module = __import__(f"meddistill.methods.{name}", fromlist=["parts"])
    parts = module.parts(cfg, toy, run)
    return Distiller(cfg, parts, toy, store, spec, device=torch.device("cpu"), run=run)


@pytest.mark.parametrize("method", ENGINE_METHODS)
def test_every_method_runs_and_changes_images(method, toy, toy_buffer, tmp_path):
    logs = []
    dist = _distiller(_cfg(method), toy, toy_buffer, tmp_path, logs=logs)
    init = dist.initial_state().images
    syn = dist.run_all()
    assert syn.images.shape == (6 * (5 if method == "haba" else 1), 1, 8, 8)
    assert not torch.equal(syn.images, init)
    assert len([r for r in logs if r["stage"] == "distill"]) == 4
    assert syn.syn_lr > 0
    soft = getattr(get_method(method).config_type(), "soft_labels", False)
    assert syn.labels.dim() == (2 if soft else 1)
    if soft:
        assert torch.allclose(syn.labels.sum(dim=1), torch.ones(6))
    assert (tmp_path / CHECKPOINT).is_file()


def test_resume_from_checkpoint_is_bit_identical(toy, toy_buffer, tmp_path):
    cfg = _cfg("hoptm", iterations=6, checkpoint_every=2)
    full = _distiller(cfg, toy, toy_buffer, tmp_path / "full").run_all()

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
        part.run_all()
    resumed = _distiller(cfg, toy, toy_buffer, tmp_path / "part")
    assert resumed.start()[0].iteration == 4
    result = resumed.run_all()
    assert torch.equal(result.images, full.images)
    assert result.syn_lr == full.syn_lr


def test_checkpoint_of_another_config_is_refused(toy, toy_buffer, tmp_path):
    _distiller(_cfg(iterations=2), toy, toy_buffer, tmp_path).run_all()
    with pytest.raises(ConfigError, match="another configuration"):
        _distiller(_cfg(iterations=2, lr_img=5.0), toy, toy_buffer, tmp_path).run_all()


def test_nan_loss_stops_with_message_and_keeps_last_checkpoint(toy, toy_buffer, tmp_path):
    cfg = _cfg(iterations=6, checkpoint_every=1, lr_img=1e30, step_size_param="log")
    with pytest.raises(NumericalError, match="last good checkpoint"):
        _distiller(cfg, toy, toy_buffer, tmp_path).run_all()
    from meddistill.matching.state import DistillState

    state, _ = DistillState.load(tmp_path / CHECKPOINT, "cpu")
    assert torch.isfinite(state.images).all()


def test_non_positive_step_size_is_an_error(toy, toy_buffer, tmp_path):
    dist = _distiller(_cfg(lr_lr=1.0, momentum_lr=0.0), toy, toy_buffer, tmp_path)
    state = dist.initial_state()
    zeros = torch.zeros_like(state.images)
    # alpha = 0.01 - lr_lr * grad = 0.01 - 1.0 * 0.5 < 0
    with pytest.raises(NumericalError, match="non-positive"):
        dist._update(state, zeros, StudentGradients(zeros, torch.tensor(0.5), None), None)
    # the log parameterisation cannot go negative: the same push leaves alpha > 0
    dist_log = _distiller(
        _cfg(lr_lr=1.0, momentum_lr=0.0, step_size_param="log"), toy, toy_buffer, tmp_path / "log"
    )
    state = dist_log.initial_state()
    dist_log._update(state, zeros, StudentGradients(zeros, torch.tensor(50.0), None), None)
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
    _distiller(
        _cfg("ptm", ipc=1, retraining_points=0), toy, toy_buffer, tmp_path, log=messages.append
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
    assert dist.parts.hooks[0].pairs == [(1, 2)]
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

    syn = _distiller(_cfg(iterations=4, snapshot_every=2), toy, toy_buffer, tmp_path).run_all()
    snaps = load_snapshots(tmp_path)
    assert [it for it, *_ in snaps] == [1, 2, 4]
    assert torch.equal(snaps[-1][1], syn.images)
