"""The membership attack end to end on toy data: it finds the members of networks overfit to
them, finds nothing where nothing can be found, and a whole audit (the Python API) flags a set
that copies training images."""

from __future__ import annotations

import json

import pytest
import torch
from toydata import noise_dataset, noise_split

import meddistill as md
from meddistill.data.dataset import MedicalDataset
from meddistill.data.synthetic import SyntheticSet
from meddistill.errors import ArtifactError
from meddistill.models import ModelSpec
from meddistill.privacy.membership import attack_sample, loss_attack, trained_networks
from meddistill.training.config import TrainConfig
from meddistill.utils import make_generator

TINY = ModelSpec(depth=1, width=4)
CPU = torch.device("cpu")
# no augmentation, constant step: nothing keeps a network from memorising its few images
MEMORISE = TrainConfig(epochs=300, lr=0.05, dsa=False, lr_schedule="none")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    return one_thread


def test_the_attack_finds_the_members_of_networks_overfit_to_them():
    ds = noise_dataset(n_train=12, n_val=60)
    members, nonmembers = attack_sample(ds, "val", 1000, make_generator(0))
    assert len(members.index) == len(nonmembers.index) == 12  # balanced: as many as train holds
    models = trained_networks(ds, TINY, ds.train.images, ds.train.labels, MEMORISE,
                              count=2, seed=0, device=CPU)  # fmt: skip
    stats = loss_attack(models, members, nonmembers, bootstrap=200, seed=0)
    assert stats.auc >= 0.9 and stats.auc_ci[0] > 0.5


def test_the_attack_finds_nothing_where_neither_side_was_trained_on():
    ds = noise_dataset(n_train=200, n_val=200)
    outside = noise_split(12, torch.Generator().manual_seed(7))  # what the networks saw
    models = trained_networks(ds, TINY, outside.images, outside.labels, MEMORISE,
                              count=2, seed=0, device=CPU)  # fmt: skip
    members, nonmembers = attack_sample(ds, "val", 1000, make_generator(0))
    stats = loss_attack(models, members, nonmembers, bootstrap=200, seed=0)
    assert stats.auc_ci[0] < 0.5 < stats.auc_ci[1]
    assert stats.members == stats.nonmembers == 200


def copied_set(ds: MedicalDataset, index: list[int]) -> SyntheticSet:
    """A 'synthetic' set that is a copy of train images: what an unmoved initialisation is."""
    return SyntheticSet(
        images=ds.train.images[index].clone(), labels=ds.train.labels[index].clone(),
        normalization=ds.normalization, class_names=list(ds.class_names), dataset=ds.name,
        source_id=ds.source_id, syn_lr=0.01, meta={"method": "copy"},
    )  # fmt: skip


FAST = dict(num_nets=2, epochs=20, full_epochs=2, bootstrap=50, model=TINY, device="cpu",
            progress=False)  # fmt: skip


def test_audit_of_a_set_copying_train_images_is_red(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ds = noise_dataset(n_train=30, n_val=30)
    syn = copied_set(ds, [0, 1, 2, 3, 4, 5])
    report = md.audit(syn, ds, **FAST)
    assert list(tmp_path.iterdir()) == []  # nothing written without out=
    pixel = report.memorisation["pixel"]
    assert pixel.count == 6 and pixel.d_train.tolist() == [0.0] * 6
    assert pixel.train_index.tolist() == [0, 1, 2, 3, 4, 5] and pixel.copies.all()
    assert report.memorisation["features"].count == 6
    assert report.verdict.light == "red" and "R1" in report.verdict.fired
    assert set(report.attacks) == {"synthetic", "full", "random", "random_own"}
    assert report.attacks["synthetic"].members == 30 and report.heldout == "val"
    assert report.networks["random"]["images"] == 6  # a real subset as large as the set

    report = md.audit(syn, ds, **FAST, pairs=3, references=(), out=tmp_path / "out")
    assert set(report.attacks) == {"synthetic"}
    data = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert data["verdict"]["light"] == "red" and data["heldout_split"] == "val"
    assert data["memorisation"]["pixel"]["images"][0]["d_train"] == 0.0
    assert data["attack"]["synthetic"]["networks"]["count"] == 2
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "audit.json", "pairs.png", "pairs_features.png"}  # fmt: skip


def test_audit_refuses_a_set_of_another_dataset():
    ds, other = noise_dataset(30, 30), noise_dataset(30, 30, seed=1)
    other.source_id = "another-source"
    with pytest.raises(ArtifactError, match="was made from noise"):
        md.audit(copied_set(other, [0, 1, 2]), ds, **FAST)
