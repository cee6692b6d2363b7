"""A one-expert buffer on the real BreastMNIST file (skipped when ../shared/data is absent)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from meddistill.data.registry import load_dataset
from meddistill.errors import ExpertBufferError
from meddistill.experts import BufferConfig, TrajectoryStore, generate_buffer
from meddistill.experts.config import expert_train_config
from meddistill.models import ModelSpec

pytestmark = pytest.mark.realdata


def test_breastmnist_buffer_roundtrip(shared_data, tmp_path) -> None:
    ds = load_dataset("breastmnist", root=shared_data / "medmnist")
    spec = ModelSpec(name="convnet", depth=3, width=8)
    train = dataclasses.replace(expert_train_config(), batch_size=128)
    cfg = BufferConfig(num_experts=1, epochs=1, model=spec, train=train, seed=0)
    store = generate_buffer(ds, cfg, tmp_path / "buf", device="cpu", progress=False)
    again = TrajectoryStore(tmp_path / "buf")
    assert again.meta["dataset"]["source_id"] == ds.source_id
    assert again.load(0, 1).shape == (store.num_params,)
    assert torch.isfinite(again.load(0, 1)).all()
    again.check_compatible(ds, spec)
    other = load_dataset("pneumoniamnist", root=shared_data / "medmnist")
    with pytest.raises(ExpertBufferError, match="made for dataset breastmnist"):
        again.check_compatible(other, spec)
