"""torch.compile'd training steps: equal to eager to float tolerance, eager again on failure,
and a scheduling option that never changes what a run or a buffer is."""

from __future__ import annotations

import logging

import pytest
import torch
from tinynets import TinyNet, tiny_data

from meddistill.config import from_dict
from meddistill.errors import OptionError
from meddistill.experts.config import BufferConfig
from meddistill.training import TrainConfig, compiled, train_network
from meddistill.training.compiled import COMPILE_AUTO_WORK, TrainStep, compile_on
from meddistill.training.evaluate import EvalConfig

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _train(compile: bool, optimizer: str = "sgd") -> tuple[TinyNet, object]:
    images, labels = tiny_data(n_per_class=12, num_classes=2, size=8)
    model = TinyNet(seed=3)
    cfg = TrainConfig(epochs=3, lr=0.05, batch_size=10, dsa=True, optimizer=optimizer)
    result = train_network(
        model, images, labels, cfg, generator=torch.Generator().manual_seed(5), compile=compile
    )
    return model, result


def test_compiled_training_equals_eager_to_float_tolerance() -> None:
    """The one test that really compiles (about 20-40 s cold): 3 epochs of 3 batches each, the
    last batch smaller (a second shape), DSA on. Tolerance: 1e-4 relative on every parameter
    (kernels fuse and round differently; measured differences are about 1e-7)."""
    torch._dynamo.reset()
    eager_model, eager = _train(False)
    compiled_model, fast = _train(True)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it did compile
    for (name, a), b in zip(
        eager_model.named_parameters(), compiled_model.parameters(), strict=True
    ):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), name
    assert fast.train_loss == pytest.approx(eager.train_loss, rel=1e-4)
    assert fast.train_acc == eager.train_acc


def test_a_failing_compile_falls_back_to_eager_once_with_one_warning(monkeypatch, caplog):
    calls = []

    def broken_compile(model, **kwargs):
        def run(x):
            calls.append(x.shape[0])
            raise RuntimeError("inductor: no working C++ compiler\nmore detail")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(compiled, "_fallback_said", False)
    eager_model, eager = _train(False)
    with caplog.at_level(logging.WARNING, logger="meddistill.training.compiled"):
        model, result = _train(True)
        _train(True)  # a second training in the same process says nothing more
    for a, b in zip(eager_model.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)  # the failed batch was redone eagerly: bit-identical
    assert result.train_loss == eager.train_loss
    assert len(calls) == 2  # one attempt per training, then eager for good
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "torch.compile failed (RuntimeError: inductor: no working C++ compiler)" in warnings[0]
    assert "compile: false" in warnings[0]


def test_meddistill_errors_are_not_swallowed_by_the_fallback(monkeypatch) -> None:
    from meddistill.errors import NumericalError

    def raising(x):
        raise NumericalError("the images contain NaN")

    step = TrainStep(TinyNet(), compile=False)
    step.compiled, step._forward = True, raising
    with pytest.raises(NumericalError, match="NaN"):
        step(torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]))


def test_auto_compiles_on_cuda_and_on_cpu_only_for_long_trainings() -> None:
    assert compile_on("auto", CUDA, 1, COMPILE_AUTO_WORK)
    assert not compile_on("auto", CPU, COMPILE_AUTO_WORK - 1, COMPILE_AUTO_WORK)
    assert compile_on("auto", CPU, COMPILE_AUTO_WORK, COMPILE_AUTO_WORK)
    assert compile_on(True, CPU, 1, COMPILE_AUTO_WORK)
    assert not compile_on(False, CUDA, 10**9, COMPILE_AUTO_WORK)
    # evaluation counts images x epochs over all its networks; a buffer, one expert's
    cfg = EvalConfig(num_nets=5, epochs=300)
    assert not cfg.compile_on(8, CPU)  # IPC 1 of 8 classes: 12,000
    assert cfg.compile_on(80, CPU)  # IPC 10: 120,000
    buffer = BufferConfig(epochs=10)
    assert buffer.compile_on(11959, CPU) and not buffer.compile_on(500, CPU)


def test_compile_option_is_checked_and_is_scheduling_only() -> None:
    for section, cls in (("eval", EvalConfig), ("buffer", BufferConfig)):
        with pytest.raises(OptionError, match=f"{section}.compile"):
            from_dict(cls, {"compile": "sometimes"}, section)
        assert from_dict(cls, {"compile": False}, section).compile is False
    assert "compile" not in EvalConfig(compile=True).protocol()
    assert BufferConfig(compile=True).identity() == BufferConfig(compile=False).identity()
