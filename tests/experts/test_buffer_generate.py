"""generate_buffer: contents, determinism, resume after a kill, refusing a foreign folder."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from bufferdata import make_tiny_dataset
from safetensors import safe_open

from meddistill.config import from_dict, to_dict
from meddistill.errors import ExpertBufferError
from meddistill.experts import BufferConfig, TrajectoryStore, generate_buffer
from meddistill.experts import generate as generate_mod
from meddistill.experts.config import expert_train_config, flat_expert_train_config
from meddistill.models import ModelSpec, build_model, count_params, flatten_params
from meddistill.utils import derive_seed

SPEC = ModelSpec(name="convnet", depth=1, width=8)


def buffer_cfg(**kw) -> BufferConfig:
    train = dataclasses.replace(expert_train_config(), batch_size=8)
    base = dict(num_experts=3, epochs=2, model=SPEC, train=train, seed=11)
    base.update(kw)
    return BufferConfig(**base)


@pytest.fixture(scope="module")
def reference_buffer(tmp_path_factory) -> TrajectoryStore:
    """One uninterrupted run that the other tests compare against."""
    out = tmp_path_factory.mktemp("ref") / "buf"
    return generate_buffer(make_tiny_dataset(), buffer_cfg(), out, device="cpu", progress=False)


def test_buffer_contents(reference_buffer: TrajectoryStore) -> None:
    store = reference_buffer
    ds = make_tiny_dataset()
    assert store.num_experts == 3 and store.expert_ids == [0, 1, 2]
    assert store.epochs == 2
    net = build_model(
        SPEC, in_channels=1, num_classes=2, image_size=8, seed=derive_seed(11, "expert", 1)
    )
    assert store.num_params == count_params(net)
    # epoch 0 is the initialisation made from the expert's seed
    assert torch.equal(store.load(1, 0), flatten_params(net))
    traj = store.load_many(1, [0, 1, 2])
    assert traj.shape == (3, store.num_params) and traj.dtype == torch.float32
    assert not torch.equal(traj[0], traj[1]) and not torch.equal(traj[1], traj[2])
    assert not torch.equal(store.load(0, 2), store.load(1, 2))
    hist = store.history(1)
    assert len(hist["train_acc"]) == 3 and len(hist["train_loss"]) == 3
    assert 0.0 <= hist["final_test_acc"] <= 1.0 and "test_acc" not in hist
    assert hist["held_out"] is None and hist["val_acc"] is None  # the tiny set has no val split
    meta = json.loads((store.path / "buffer.json").read_text())
    assert meta["dataset"]["source_id"] == ds.source_id
    assert meta["model"] == to_dict(SPEC)
    assert meta["train"]["lr"] == 0.01 and meta["train"]["momentum"] == 0.0
    assert meta["train"]["optimizer"] == "sgd" and meta["seed"] == 11
    assert meta["num_params"] == store.num_params and meta["epochs"] == 2
    assert meta["param_layout"]["names"][0] == next(iter(dict(net.named_parameters())))
    store.check_compatible(ds, SPEC)


def test_same_seed_bit_identical_other_seed_differs(tmp_path, reference_buffer) -> None:
    ds = make_tiny_dataset()
    again = generate_buffer(
        ds, buffer_cfg(num_experts=1), tmp_path / "a", device="cpu", progress=False
    )
    assert again.buffer_id == reference_buffer.buffer_id
    assert torch.equal(again.load_many(0, [0, 1, 2]), reference_buffer.load_many(0, [0, 1, 2]))
    other = generate_buffer(
        ds, buffer_cfg(num_experts=1, seed=12), tmp_path / "b", device="cpu", progress=False
    )
    assert not torch.equal(other.load(0, 0), reference_buffer.load(0, 0))


def test_resume_after_kill_trains_only_missing_experts(tmp_path, monkeypatch, reference_buffer):
    ds = make_tiny_dataset()
    out = tmp_path / "buf"
    real = generate_mod.train_expert
    calls: list[int] = []

    def killed_at_second(data, cfg, index, **kw):
        calls.append(index)
        if index == 1:
            raise KeyboardInterrupt  # the run is killed while expert 1 trains
        return real(data, cfg, index, **kw)

    monkeypatch.setattr(generate_mod, "train_expert", killed_at_second)
    with pytest.raises(KeyboardInterrupt):
        generate_buffer(ds, buffer_cfg(), out, device="cpu", progress=False)
    assert calls == [0, 1]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "buffer.json",
        "expert_000.safetensors",
    ]
    first = (out / "expert_000.safetensors").stat().st_mtime_ns
    first_bytes = (out / "expert_000.safetensors").read_bytes()

    calls.clear()

    def counting(data, cfg, index, **kw):
        calls.append(index)
        return real(data, cfg, index, **kw)

    monkeypatch.setattr(generate_mod, "train_expert", counting)
    store = generate_buffer(ds, buffer_cfg(), out, device="cpu", progress=False)
    assert calls == [1, 2]
    assert (out / "expert_000.safetensors").stat().st_mtime_ns == first
    assert (out / "expert_000.safetensors").read_bytes() == first_bytes
    for i in range(3):  # identical to the uninterrupted run
        assert torch.equal(store.load_many(i, [0, 1, 2]), reference_buffer.load_many(i, [0, 1, 2]))
    calls.clear()
    generate_buffer(ds, buffer_cfg(), out, device="cpu", progress=False)
    assert calls == []  # nothing left to do


def test_existing_buffer_with_other_settings_is_refused(tmp_path) -> None:
    ds = make_tiny_dataset()
    out = tmp_path / "buf"
    generate_buffer(ds, buffer_cfg(num_experts=1, epochs=1), out, device="cpu", progress=False)
    train = dataclasses.replace(expert_train_config(), batch_size=8, lr=0.02)
    with pytest.raises(ExpertBufferError, match=r"train.lr: 0.01 there, 0.02 now.*another folder"):
        generate_buffer(
            ds, buffer_cfg(num_experts=1, epochs=1, train=train), out, device="cpu", progress=False
        )
    other = make_tiny_dataset(source_id="md5-other")
    with pytest.raises(ExpertBufferError, match="dataset.source_id"):
        generate_buffer(
            other, buffer_cfg(num_experts=1, epochs=1), out, device="cpu", progress=False
        )


def test_flat_experts_fp16(tmp_path) -> None:
    ds = make_tiny_dataset()
    train = dataclasses.replace(flat_expert_train_config(), batch_size=8)
    cfg = buffer_cfg(num_experts=1, epochs=2, train=train, dtype="float16")
    assert cfg.train.epochs == 2 and cfg.train.optimizer == "gsam"
    store = generate_buffer(ds, cfg, tmp_path / "flat", device="cpu", progress=True)
    assert store.dtype == "float16" and store.meta["optimizer"] == "gsam"
    row = store.load(0, 2)
    assert row.dtype == torch.float32
    assert torch.equal(row, row.half().float())  # values are exactly fp16 numbers
    net = build_model(
        SPEC, in_channels=1, num_classes=2, image_size=8, seed=derive_seed(11, "expert", 0)
    )
    assert torch.equal(store.load(0, 0), flatten_params(net).half().float())
    with safe_open(str(store.path / "expert_000.safetensors"), framework="pt") as fh:
        assert fh.get_slice("trajectory").get_dtype() == "F16"  # stored as fp16 on disk


def test_buffer_config_from_dict_and_epochs_sync() -> None:
    cfg = from_dict(
        BufferConfig,
        {
            "num_experts": 2,
            "epochs": 7,
            "model": {"name": "convnet", "width": 8},
            "train": {"epochs": 50, "lr": 0.01, "momentum": 0.0},
        },
    )
    assert cfg.train.epochs == 7 and cfg.model.width == 8
    defaults = BufferConfig(num_experts=1, epochs=3)
    assert (defaults.train.lr, defaults.train.momentum, defaults.train.weight_decay) == (0.01, 0, 0)
    assert defaults.train.lr_schedule == "none" and defaults.train.dsa
