"""DC, DSA, DM, IDM and CAFE as objectives of the one loop (matching/objective.py).

For every method: its own objective, measured on fixed networks and fixed real/DSA draws,
decreases over a few steps; images change and stay finite; the same seed gives the same set;
an interrupted run resumed from its checkpoint ends exactly where an uninterrupted one does.
Plus hand-computed values of the distances the papers define.
"""

import math

import pytest
import torch
from toydata import shifted_toy

from meddistill.data.dataset import MedicalDataset
from meddistill.errors import ConfigError, NumericalError
from meddistill.matching.loop import CHECKPOINT, DistillRun
from meddistill.matching.objective import (
    Objective,
    ObjectiveConfig,
    ObjectiveDistiller,
    ObjectiveState,
    loops_for_ipc,
)
from meddistill.methods import cafe, dc, dm, dsa_method, idm
from meddistill.methods.registry import get_method
from meddistill.models import ModelSpec
from meddistill.utils import make_generator

SPEC = ModelSpec(depth=2, width=4)
CPU = torch.device("cpu")
METHODS = ["dc", "dsa", "dm", "idm", "cafe"]
BUILD = {
    "dc": dc.build,
    "dsa": dsa_method.build,
    "dm": dm.build,
    "idm": idm.build,
    "cafe": cafe.build,
}

# Small settings per method: loops short, batches tiny, lr large enough to move in a few steps.
TINY = {
    "dc": {"outer_loop": 2, "inner_loop": 1, "batch_train": 8, "lr_img": 0.1, "batch_real": 20},
    "dsa": {"outer_loop": 2, "inner_loop": 1, "batch_train": 8, "lr_img": 0.1, "batch_real": 20},
    "dm": {"lr_img": 1.0},
    "idm": {
        "queue_size": 3,
        "queue_init": 2,
        "net_every": 2,
        "train_nets": 1,
        "net_train_steps": 2,
        "net_batch": 16,
        "ce_weight": 0.05,
        "ce_by_accuracy": False,  # a constant weight, so fresh networks see the CE term too
        "lr_img": 0.5,
    },
    "cafe": {"outer_loop": 2, "inner_loop": 1, "batch_train": 8, "lr_img": 0.05},
}


@pytest.fixture(scope="module")
def toy() -> MedicalDataset:
    return shifted_toy()


def _cfg(method: str, **kw):
    d = {"ipc": 2, "iterations": 3, "batch_real": 8, "checkpoint_every": 3, **TINY[method]}
    d.update(kw)
    return get_method(method).make_config(d)


def _distiller(method, toy, out, logs=None, seed=0, **kw):
    run = DistillRun(seed=seed, out_dir=out, method=method, progress=False)
    if logs is not None:
        run.on_metric = logs.append
    return ObjectiveDistiller(_cfg(method, **kw), toy, SPEC, BUILD[method], device=CPU, run=run)


def _measure(method, toy, images, tmp_path) -> float:
    """The method's loss on fixed networks and draws: fresh objectives at step 0, generators
    with fixed seeds (same networks, real batches and DSA draws for any images)."""
    values = []
    for seed in (101, 102, 103):
        dist = _distiller(method, toy, tmp_path / "measure")
        loss = dist.objective.loss(images, dist.labels, dist.real, make_generator(seed), 0)
        values.append(float(loss.detach()))
    return sum(values) / len(values)


@pytest.mark.parametrize("method", METHODS)
def test_objective_decreases_and_images_stay_finite(method, toy, tmp_path):
    logs = []
    dist = _distiller(method, toy, tmp_path / "run", logs=logs, iterations=4)
    init = dist.initial_state().images
    syn = dist.run_all()
    steps = dist.total
    assert steps == 4 * (2 if method in ("dc", "dsa", "cafe") else 1)
    assert [r["iteration"] for r in logs if r["stage"] == "distill"] == list(range(steps))
    assert all(math.isfinite(r["loss"]) for r in logs)
    assert syn.images.shape == (6, 1, 8, 8)
    assert syn.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert syn.syn_lr == 0.01
    assert torch.isfinite(syn.images).all()
    assert not torch.allclose(syn.images, init)
    before = _measure(method, toy, init, tmp_path)
    after = _measure(method, toy, syn.images, tmp_path)
    assert after < before, (method, before, after)


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_set_and_resume_is_exact(method, toy, tmp_path):
    # 6 steps for DC/DSA/CAFE (3 iterations x 2 outer steps), 5 for the others
    its = 3 if method in ("dc", "dsa", "cafe") else 5
    full = _distiller(method, toy, tmp_path / "full", iterations=its).run_all()
    again = _distiller(method, toy, tmp_path / "again", iterations=its).run_all()
    assert torch.equal(full.images, again.images)
    other = _distiller(method, toy, tmp_path / "other", iterations=its, seed=1).run_all()
    assert not torch.equal(full.images, other.images)

    class Stop(Exception):
        pass

    part = _distiller(method, toy, tmp_path / "part", iterations=its)
    original = part.step
    total = part.total

    def step_then_die(state, gen):
        out = original(state, gen)
        if state.step == total - 1:  # dies before the final checkpoint
            raise Stop
        return out

    part.step = step_then_die
    with pytest.raises(Stop):
        part.run_all()
    resumed = _distiller(method, toy, tmp_path / "part", iterations=its)
    state, _ = resumed.start()
    assert state.step == 3  # checkpoint_every 3; for DC/DSA/CAFE mid-iteration (net restored)
    result = _distiller(method, toy, tmp_path / "part", iterations=its).run_all()
    assert torch.equal(result.images, full.images)


def test_checkpoint_of_another_config_is_refused(toy, tmp_path):
    _distiller("dm", toy, tmp_path).run_all()
    with pytest.raises(ConfigError, match="another configuration"):
        _distiller("dm", toy, tmp_path, lr_img=0.5).run_all()
    with pytest.raises(ConfigError, match="another configuration"):  # the seed is the run's
        _distiller("dm", toy, tmp_path, seed=1).run_all()


def test_nan_loss_raises_and_keeps_last_checkpoint(toy, tmp_path):
    class Exploding(Objective):
        def loss(self, images, labels, real, generator, step):
            scale = torch.tensor(float("nan") if step == 2 else 1.0)
            return (images**2).sum() * scale

    cfg = ObjectiveConfig(ipc=2, iterations=5, checkpoint_every=1, lr_img=0.01)
    run = DistillRun(out_dir=tmp_path, progress=False)
    dist = ObjectiveDistiller(cfg, toy, SPEC, lambda c, ctx: Exploding(), device=CPU, run=run)
    with pytest.raises(NumericalError, match="last good checkpoint"):
        dist.run_all()

    state, _ = ObjectiveState.load(tmp_path / CHECKPOINT, CPU)
    assert state.step == 2 and torch.isfinite(state.images).all()


def test_bad_configs_are_config_errors(toy, tmp_path):
    with pytest.raises(ConfigError, match="unknown option"):
        get_method("dm").make_config({"lr_imgg": 1.0})
    # MTT is a trajectory method: the registry says so, it needs experts, and an objective
    # method refuses its config
    mtt = get_method("mtt")
    assert (mtt.kind, get_method("dm").kind) == ("trajectory", "objective")
    run = DistillRun(out_dir=tmp_path / "mtt", progress=False)
    kw = dict(experts=None, model=SPEC, device=CPU, run=run)
    with pytest.raises(ConfigError, match="expert"):
        mtt.distill(toy, mtt.make_config({}), **kw)
    with pytest.raises(TypeError, match="DMConfig"):
        get_method("dm").distill(toy, mtt.make_config({}), **kw)
    with pytest.raises(ConfigError, match="smallest class"):
        _distiller("dm", toy, tmp_path, ipc=100)
    with pytest.raises(ConfigError, match="must divide"):
        _distiller("idm", toy, tmp_path, factor=3)
    with pytest.raises(ConfigError, match="layer_weights"):
        _distiller("cafe", toy, tmp_path, layer_weights=[1.0])


# DC ------------------------------------------------------------------------------------------
def test_dc_layer_distance_by_hand():
    # rows (1, 0) vs (1, 0): cos 1 -> 0;  rows (0, 1) vs (1, 1): cos 1/sqrt(2)
    g_real = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    g_syn = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    expected = 1.0 - 1.0 / math.sqrt(2.0)
    assert dc.layer_distance(g_real, g_syn).item() == pytest.approx(expected, abs=1e-5)
    # a conv kernel [out=2, in=1, 1, 2] is compared per output channel: the same rows
    conv = dc.layer_distance(g_real.view(2, 1, 1, 2), g_syn.view(2, 1, 1, 2))
    assert conv.item() == pytest.approx(expected, abs=1e-5)
    # opposite rows give 2 each; biases (1-D) are not matched, as the reference code
    assert dc.layer_distance(g_real, -g_real).item() == pytest.approx(4.0, abs=1e-5)
    assert dc.layer_distance(torch.ones(3), -torch.ones(3)).item() == 0.0
    total = dc.gradient_distance([g_real, torch.ones(3)], [g_syn, -torch.ones(3)], "ours")
    assert total.item() == pytest.approx(expected, abs=1e-5)
    mse = dc.gradient_distance([g_real], [g_syn], "mse")
    assert mse.item() == pytest.approx(1.0)  # only the (0,1) -> (1,1) entry differs, by 1


def test_dc_loops_by_ipc_and_steps_per_iteration(toy, tmp_path):
    assert loops_for_ipc(1) == (1, 1)
    assert loops_for_ipc(10) == (10, 50)
    assert loops_for_ipc(50) == (50, 10)
    assert loops_for_ipc(5) == (1, 1)  # nearest listed IPC (ties to the smaller)
    assert loops_for_ipc(100) == (50, 10)
    d = ObjectiveDistiller(
        get_method("dc").make_config({"ipc": 1, "iterations": 7}),
        toy,
        SPEC,
        dc.build,
        device=CPU,
        run=DistillRun(out_dir=tmp_path, progress=False),
    )
    assert d.total == 7
    d = _distiller("dc", toy, tmp_path, outer_loop=3, iterations=2)
    assert d.total == 6


def test_dsa_applies_one_draw_to_real_and_synthetic(toy, tmp_path):
    d = _distiller("dsa", toy, tmp_path)
    x = torch.arange(64.0).view(1, 1, 8, 8)
    a, b = d.ctx.siamese(x.repeat(3, 1, 1, 1), x.clone(), make_generator(5))
    assert all(torch.equal(a[i], b[0]) for i in range(3))
    assert _distiller("dc", toy, tmp_path / "dc").ctx.dsa is None


# DM ------------------------------------------------------------------------------------------
def test_dm_mean_embedding_distance_by_hand():
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # mean (2, 3)
    syn = torch.tensor([[0.0, 0.0], [0.0, 2.0]])  # mean (0, 1)
    assert dm.mean_embedding_distance(real, syn).item() == pytest.approx(4.0 + 4.0)


def test_dm_uses_a_fresh_network_each_step(toy, tmp_path):
    d = _distiller("dm", toy, tmp_path)
    x = d.initial_state().images
    gen = make_generator(0)
    first = float(d.objective.loss(x, d.labels, d.real, gen, 0))
    second = float(d.objective.loss(x, d.labels, d.real, gen, 1))
    assert first != second
    assert float(d.objective.loss(x, d.labels, d.real, make_generator(0), 0)) == first


# IDM -----------------------------------------------------------------------------------------
def test_idm_blocks_round_trip_and_multi_formation_by_hand():
    x = torch.randn(3, 2, 8, 8)
    blocks = idm.split_blocks(x, 2)
    assert blocks.shape == (12, 2, 4, 4)
    assert torch.equal(blocks[1], x[0, :, :4, 4:])  # row-major: top-right is the 2nd block
    assert torch.equal(idm.tile_blocks(blocks, 2), x)
    vol = torch.randn(2, 1, 4, 4, 4)
    assert torch.equal(idm.tile_blocks(idm.split_blocks(vol, 2), 2), vol)
    # quadrants of constants 1..4 decode to four constant full-size images
    packed = torch.zeros(1, 1, 4, 4)
    packed[..., :2, :2], packed[..., :2, 2:], packed[..., 2:, :2], packed[..., 2:, 2:] = 1, 2, 3, 4
    decoded = idm.multi_formation(packed, 2)
    assert decoded.shape == (4, 1, 4, 4)
    for k in range(4):
        assert torch.allclose(decoded[k], torch.full((1, 4, 4), float(k + 1)))


def test_idm_packing_exports_decoded_images(toy, tmp_path):
    syn = _distiller("idm", toy, tmp_path, factor=2, iterations=1).run_all()
    assert syn.images.shape == (24, 1, 8, 8)
    assert syn.labels.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    assert syn.meta["stored_images"] == 6


def test_idm_queue_grows_caps_and_trains(toy, tmp_path):
    d = _distiller("idm", toy, tmp_path, train_nets=3, ce_by_accuracy=True, net_every=1)
    state = d.initial_state()
    gen = make_generator(0)
    d.step(state, gen)
    obj = d.objective
    assert len(obj.queue) == 3  # queue_init 2, one more at step 0
    assert all(float(e.counts[1]) == 2 * 16 for e in obj.queue)  # each trained 2 x 16 images
    d.step(state, gen)
    assert len(obj.queue) == 3  # capped at queue_size: the oldest left
    assert float(obj.queue[-1].counts[1]) == 2 * 16
    acc = obj.queue[0].accuracy_percent()
    assert 0.0 <= float(acc) <= 100.0


# CAFE ----------------------------------------------------------------------------------------
def test_cafe_feature_maps_and_default_weights(toy, tmp_path):
    d = _distiller("cafe", toy, tmp_path)
    net = d.ctx.build(0)
    maps = cafe.block_features(net, torch.zeros(2, 1, 8, 8))
    # depth 2: act1 (4x8x8), act2 (4x4x4), final pooled (4x2x2) = the embedding
    assert [tuple(m.shape[1:]) for m in maps] == [(4, 8, 8), (4, 4, 4), (4, 2, 2)]
    assert torch.equal(maps[-1].flatten(1), net.embed(torch.zeros(2, 1, 8, 8)))
    assert d.objective.weights == [0.1, 1.0, 1.0]
    assert cafe.default_layer_weights(4) == [0.1, 0.1, 1.0, 1.0]


def test_cafe_losses_by_hand():
    emb = torch.tensor([[1.0, 0.0]])
    centres = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = math.log(1.0 + math.exp(-1.0))  # -log softmax([1, 0])[0]
    assert cafe.discrimination_loss(emb, torch.tensor([0]), centres).item() == pytest.approx(
        expected
    )
    real = [torch.tensor([[1.0], [3.0], [10.0]])]  # class means 2 (2 images), 10 (1 image)
    syn = [torch.tensor([[0.0], [4.0]])]  # class means 0, 4
    loss = cafe.layer_feature_loss(real, syn, [2, 1], [1, 1], [0.5])
    assert loss.item() == pytest.approx(0.5 * (4.0 + 36.0))


@pytest.mark.parametrize("method", ["dm", "dc"])
def test_dct_parameterisation_learns_low_pass_images_and_resumes(method, toy, tmp_path):
    from meddistill.matching.parameterizations import DCTParam

    kw = {"iterations": 4, "checkpoint_every": 2, "parameterization": "dct", "dct_keep": 3}
    dist = _distiller(method, toy, tmp_path / "run", **kw)
    init = dist.initial_state()
    assert init.images.shape == (6, 1, 3, 3)  # the learned tensor: 3 x 3 coefficients each
    syn = dist.run_all()
    low = DCTParam((1, 8, 8), keep=3, images_per_class=2)
    assert torch.allclose(low.render(syn.codes), syn.images, atol=1e-5)
    assert not torch.allclose(syn.images, low.render({"codes": init.images}))
    assert syn.meta["parameterization"]["keep"] == 3
    assert syn.stored_bytes() == 6 * 9 * 4 + 6 * 8
    assert _measure(method, toy, syn.images, tmp_path) < _measure(
        method, toy, low.render({"codes": init.images}), tmp_path
    )
    part = _distiller(method, toy, tmp_path / "part", **kw)
    state, gen = part.start()
    for _ in range(2 * part.objective.steps_per_iteration):
        part.advance(state, gen)
    part.save_state(state, gen, tmp_path / "part" / CHECKPOINT)
    resumed = _distiller(method, toy, tmp_path / "part", **kw).run_all()
    assert torch.equal(resumed.images, syn.images)
    with pytest.raises(ConfigError, match="dct_keep"):
        _cfg(method, dct_keep=-2)
