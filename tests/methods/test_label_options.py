"""Labels and initialisation as options of every trajectory method (issue 12, point 5): hard
or expert soft labels on MTT, HoP-TM and PTM as on DATM, and 0 iterations giving the initial
set unmatched (DD-Ranking's random baseline under the method's own labels)."""

import pytest
import torch
from conftest import TINY_SPEC
from toydata import shifted_toy

from meddistill.errors import ConfigError
from meddistill.matching.labels import ExpertSoftLabels, HardLabels, label_mode
from meddistill.matching.loop import DistillRun
from meddistill.methods.registry import get_method
from meddistill.models import build_model_for, load_flat_

CPU = torch.device("cpu")
WINDOW = dict(syn_steps=2, expert_epochs=2, min_start=0, max_start=2, checkpoint_every=2)
STEP = dict(step_size_param="log", lr_lr=1e-3)  # the CPU presets' step size (stays positive)


def _distill(tmp_path, store, method, **kw):
    entry = get_method(method)
    cfg = entry.make_config({"ipc": 2, "lr_img": 10.0, "dsa": False, **WINDOW, **STEP, **kw})
    run = DistillRun(out_dir=tmp_path / method, method=method, progress=False)
    data = shifted_toy(n_train=30, n_test=12)
    return data, entry.distill(data, cfg, experts=store, model=TINY_SPEC, device=CPU, run=run)


def _expert_softmax(store, data, images):
    """Softmax of the first expert's last-epoch logits, through an ordinary nn.Module."""
    net = build_model_for(TINY_SPEC, data, seed=0)
    with torch.no_grad():
        load_flat_(net, store.load(store.expert_ids[0], store.epochs))
        return torch.softmax(net(images), dim=1)


@pytest.mark.parametrize("method", ["mtt", "hoptm", "ptm"])
def test_soft_labels_are_an_option_of_every_trajectory_method(toy_store, tmp_path, method):
    data, syn = _distill(tmp_path, toy_store, method, iterations=0, soft_labels=True)
    assert syn.labels.shape == (6, 3) and syn.labels.dtype == torch.float32
    expected = _expert_softmax(toy_store, data, syn.images)
    assert torch.allclose(syn.labels, expected, atol=1e-5)
    learned = _distill(tmp_path / "x", toy_store, method, iterations=3, soft_labels=True)[1]
    assert torch.allclose(learned.labels.sum(dim=1), torch.ones(6), atol=1e-5)
    assert not torch.allclose(learned.labels, expected)  # learned by default (DATM's lr_y)


def test_zero_iterations_give_real_train_images_with_class_labels(toy_store, tmp_path):
    data, syn = _distill(tmp_path, toy_store, "hoptm", iterations=0)
    assert syn.labels.tolist() == [0, 0, 1, 1, 2, 2]
    train = data.train.images
    for image, label in zip(syn.images, syn.labels, strict=True):
        match = (train - image).flatten(1).abs().amax(dim=1) == 0
        assert match.any() and data.train.labels[match][0] == label  # a real image of its class


def test_label_mode_follows_the_knobs_and_datm_tesla_keep_their_defaults():
    mtt = get_method("mtt").make_config({})
    assert label_mode(mtt) == HardLabels(expert_epoch=-1)
    datm = get_method("datm").make_config({"label_expert_epoch": 3})
    assert label_mode(datm) == ExpertSoftLabels(True, 2.0, 0.9, 3)
    assert label_mode(get_method("tesla").make_config({})) == ExpertSoftLabels(False, 2.0, 0.9)
    assert label_mode(get_method("datm").make_config({"soft_labels": False})) == HardLabels()


@pytest.mark.parametrize(
    "method, key, value",
    [("mtt", "lr_y", 0.0), ("hoptm", "momentum_y", 1.0), ("ptm", "label_expert_epoch", -2),
     ("haba", "soft_labels", True), ("mtt", "iterations", -1)],
)  # fmt: skip
def test_label_knobs_are_checked_before_work(method, key, value):
    with pytest.raises(ConfigError, match=f"match.{key}"):
        get_method(method).make_config({key: value})
