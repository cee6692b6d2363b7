"""One job on several processes: 2 gloo ranks on CPU give what one process gives."""

import pytest
import torch
from ranks import (
    distill,
    distill_rank,
    distiller,
    evaluate,
    evaluate_rank,
    make_buffer,
    set_tensors,
    spawn,
)
from safetensors.torch import load_file
from toydata import shifted_toy

from meddistill import distributed
from meddistill.errors import ConfigError
from meddistill.experts.store import TrajectoryStore
from meddistill.matching.loop import CHECKPOINT


@pytest.fixture(scope="module")
def buffer(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("buffer") / "toy"
    make_buffer(0, 1, out.parent, str(out), 2)
    return str(out)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize(("method", "windows"), [("hoptm", 2), ("hoptm", 4), ("datm", 2)])
def test_windows_split_over_two_ranks_give_the_same_set(buffer, tmp_path, method, windows):
    one = set_tensors(distill(buffer, windows, tmp_path / "one", method=method))
    spawn(distill_rank, 2, tmp_path, buffer, windows, "two", method)
    _same(one, load_file(str(tmp_path / "two.safetensors")))
    # rank 0 alone wrote the run folder's checkpoint; no rank wrote anywhere else
    assert (tmp_path / "run-two" / CHECKPOINT).is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("run")) == ["run-two"]


def test_more_windows_change_the_set_and_one_window_is_the_old_loop(buffer, tmp_path):
    one = set_tensors(distill(buffer, 1, None))
    two = set_tensors(distill(buffer, 2, None))
    assert not torch.equal(one["images"], two["images"])
    # W=2 averages two unrolls: the images move, by a finite step
    assert torch.isfinite(two["images"]).all() and two["syn_lr"].item() > 0


def test_windows_resume_bit_for_bit(buffer, tmp_path):
    full = set_tensors(distill(buffer, 2, tmp_path / "full", iterations=4))

    class Stop(Exception):
        pass

    part = distiller(buffer, 2, tmp_path / "part", iterations=4)
    original_step = part.step

    def step_then_die(state, gen):
        out = original_step(state, gen)
        if state.iteration == 3:  # dies after iteration 3, before its checkpoint (every 2)
            raise Stop
        return out

    part.step = step_then_die
    with pytest.raises(Stop):
        part.run_all()
    resumed = set_tensors(distill(buffer, 2, tmp_path / "part", iterations=4))
    _same(full, resumed)


def test_window_count_must_split_over_the_ranks(buffer, monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(ConfigError, match="does not split over 2 ranks"):
        distill(buffer, 3, None)


def test_buffer_experts_split_over_two_ranks(buffer, tmp_path):
    out = tmp_path / "two"
    spawn(make_buffer, 2, tmp_path, str(out), 3)
    two, one = TrajectoryStore(out), TrajectoryStore(buffer)
    assert two.expert_ids == [0, 1, 2]
    assert [e["index"] for e in two.meta["experts"]] == [0, 1, 2]
    for i in one.expert_ids:  # expert i depends on its seed only, not on which rank made it
        assert torch.equal(two.load(i, two.epochs), one.load(i, one.epochs))


def test_evaluation_networks_split_over_two_ranks(tmp_path):
    toy = shifted_toy()
    report = evaluate(toy.train.images[:12], toy.train.labels[:12])
    spawn(evaluate_rank, 2, tmp_path, "two")
    two = load_file(str(tmp_path / "two.safetensors"))
    nets = report.archs["convnet"].nets
    assert two["acc"].tolist() == [n.acc for n in nets]  # the same networks, trained apart
    assert two["loss"].tolist() == [n.train_loss for n in nets]
