"""TrajectoryStore: row reads, fp16, errors for missing / corrupt / foreign buffers."""

from __future__ import annotations

import json

import pytest
import torch
from bufferdata import make_tiny_dataset

from meddistill.errors import ConfigError, ExpertBufferError
from meddistill.experts import BufferConfig, TrajectoryStore
from meddistill.experts.generate import buffer_identity
from meddistill.experts.store import write_expert
from meddistill.models import ModelSpec, ParamLayout, build_model
from meddistill.utils import stable_hash, write_json_atomic

SPEC = ModelSpec(name="convnet", depth=1, width=8)


def fake_buffer(folder, trajectories: list[torch.Tensor], dtype: str = "float32") -> str:
    """A buffer folder written by hand (no training), with the given trajectories."""
    ds = make_tiny_dataset()
    cfg = BufferConfig(
        num_experts=len(trajectories), epochs=trajectories[0].shape[0] - 1, model=SPEC, dtype=dtype
    )
    identity = buffer_identity(ds, cfg)
    buffer_id = stable_hash(identity)
    net = build_model(SPEC, in_channels=1, num_classes=2, image_size=8, seed=0)
    layout = ParamLayout.from_model(net)
    P = trajectories[0].shape[1]
    write_json_atomic(
        folder / "buffer.json",
        {
            **identity,
            "buffer_id": buffer_id,
            "num_experts": len(trajectories),
            "num_params": P,
            "param_layout": layout.to_dict(),
            "optimizer": "sgd",
            "package_version": "test",
        },
    )
    for i, t in enumerate(trajectories):
        write_expert(folder, i, t, buffer_id=buffer_id, seed=i, history={"test_acc": [0.5] * 3})
    return buffer_id


def test_rows_are_read_exactly(tmp_path) -> None:
    P = 330  # the tiny convnet's parameter count is irrelevant to reading
    trajs = [torch.arange(4 * P, dtype=torch.float32).view(4, P) + 1000 * i for i in range(2)]
    fake_buffer(tmp_path, trajs)
    store = TrajectoryStore(tmp_path)
    assert (store.num_experts, store.epochs, store.num_params) == (2, 3, P)
    for i in range(2):
        for e in range(4):
            assert torch.equal(store.load(i, e), trajs[i][e])
    assert torch.equal(store.load_many(1, [3, 0, 2]), trajs[1][[3, 0, 2]])
    assert store.history(0) == {"test_acc": [0.5] * 3}
    assert store.expert_seed(1) == 1
    assert "experts=2" in repr(store)


def test_fp16_rows_read_as_float32(tmp_path) -> None:
    gen = torch.Generator().manual_seed(0)
    traj = torch.randn(3, 50, generator=gen)
    fake_buffer(tmp_path, [traj.half()], dtype="float16")
    store = TrajectoryStore(tmp_path)
    row = store.load(0, 1)
    assert row.dtype == torch.float32
    assert torch.equal(row, traj[1].half().float())


def test_out_of_range_requests(tmp_path) -> None:
    fake_buffer(tmp_path, [torch.zeros(3, 10)])
    store = TrajectoryStore(tmp_path)
    with pytest.raises(
        ExpertBufferError, match="expert 5 is not in the buffer.*finished experts: 0"
    ):
        store.load(5, 0)
    with pytest.raises(ConfigError, match="epoch 3 is outside 0..2"):
        store.load(0, 3)


def test_missing_and_corrupt_buffers(tmp_path) -> None:
    with pytest.raises(ExpertBufferError, match="folder missing.*meddistill buffer"):
        TrajectoryStore(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExpertBufferError, match="buffer.json is missing"):
        TrajectoryStore(tmp_path / "empty")
    bad = tmp_path / "badjson"
    bad.mkdir()
    (bad / "buffer.json").write_text("{not json")
    with pytest.raises(ExpertBufferError, match="cannot be read"):
        TrajectoryStore(bad)
    good = tmp_path / "good"
    good.mkdir()
    fake_buffer(good, [torch.zeros(3, 10), torch.ones(3, 10)])
    path = good / "expert_001.safetensors"
    path.write_bytes(path.read_bytes()[:40])  # truncated by something outside meddistill
    with pytest.raises(ExpertBufferError, match=r"expert_001.safetensors is corrupt.*delete"):
        TrajectoryStore(good)


def test_expert_file_from_another_buffer_is_refused(tmp_path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    fake_buffer(a, [torch.zeros(3, 10)])
    fake_buffer(b, [torch.zeros(3, 10)])
    meta = json.loads((b / "buffer.json").read_text())
    meta["buffer_id"] = "something-else"
    (b / "buffer.json").write_text(json.dumps(meta))
    with pytest.raises(ExpertBufferError, match="belongs to buffer"):
        TrajectoryStore(b)


def test_check_compatible(tmp_path) -> None:
    fake_buffer(tmp_path, [torch.zeros(3, 10)])
    store = TrajectoryStore(tmp_path)
    store.check_compatible(make_tiny_dataset(), SPEC)
    other = make_tiny_dataset(name="other", source_id="md5-other")
    with pytest.raises(
        ExpertBufferError,
        match=r"made for dataset tiny \(source md5-tiny\), not other \(source md5-other\); "
        r"make a new buffer with `meddistill buffer",
    ):
        store.check_compatible(other, SPEC)
    with pytest.raises(ExpertBufferError, match="made for network.*width=8.*not.*width=16"):
        store.check_compatible(make_tiny_dataset(), ModelSpec(name="convnet", depth=1, width=16))


def test_load_touches_only_its_row(tmp_path) -> None:
    """Overwrite every other row's bytes on disk with NaNs: the asked-for row still reads exactly,
    so a read addresses that row's byte range (safe_open memory-maps, get_slice reads the slice)."""
    P = 64
    traj = torch.arange(5 * P, dtype=torch.float32).view(5, P)
    fake_buffer(tmp_path, [traj])
    path = tmp_path / "expert_000.safetensors"
    raw = bytearray(path.read_bytes())
    header_len = int.from_bytes(raw[:8], "little")
    data_start = 8 + header_len
    row_bytes = P * 4
    nan = torch.full((P,), float("nan")).numpy().tobytes()
    for e in (0, 1, 3, 4):
        start = data_start + e * row_bytes
        raw[start : start + row_bytes] = nan
    path.write_bytes(bytes(raw))
    store = TrajectoryStore(tmp_path)
    assert torch.equal(store.load(0, 2), traj[2])
    with pytest.raises(ExpertBufferError, match=r"64 non-finite parameter value.*at epoch 3"):
        store.load(0, 3)  # a damaged row is refused when read, never handed to a run
