"""Faster evaluation: worker processes (bit-identical) and batched networks (within tolerance).

Tolerance of the batched path (float32 rounding of batched kernels, nothing else): after 2
epochs on tiny data every parameter tensor agrees with the one-by-one run to 1e-4 relative
(norm of the difference / norm), and each network's test accuracy to within one test example.
"""

from __future__ import annotations

import logging
import math
import pickle

import pytest
import torch
from tinynets import tiny_dataset

from meddistill.config import from_dict
from meddistill.errors import NumericalError, OptionError
from meddistill.models import ModelSpec, build_model_for
from meddistill.training import parallel
from meddistill.training.baselines import random_subset
from meddistill.training.batched import train_networks_batched, unbatchable
from meddistill.training.evaluate import EvalConfig, evaluate_set
from meddistill.training.loop import train_network
from meddistill.utils import derive_seed, make_generator

SPEC = ModelSpec(name="convnet", depth=2, width=8)
REL_TOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _cfg(**kw) -> EvalConfig:
    base = dict(num_nets=3, epochs=3, batch_size=8, dsa=True, workers=1, batched=False)
    base.update(kw)
    return EvalConfig(**base)


def _numbers(report) -> list[tuple]:
    """Every number of every network (NaN as a string, so equal NaNs compare equal)."""
    return [
        tuple(str(v) if isinstance(v, float) and math.isnan(v) else v for v in vars(n).values())
        for arch in report.archs.values()
        for n in arch.nets
    ]


def _evaluate(cfg: EvalConfig, images=None, labels=None, spec: ModelSpec = SPEC):
    ds = tiny_dataset()
    if images is None:
        images, labels = random_subset(ds, 3, generator=make_generator(0))
    return evaluate_set(images, labels, ds, cfg, base_spec=spec, seed=1, progress=False)


def test_workers_are_bit_identical_to_one_by_one(caplog) -> None:
    models = ["convnet", "lenet"]
    sequential = _evaluate(_cfg(models=models, num_nets=2))
    with caplog.at_level(logging.WARNING, logger="meddistill.training.parallel"):
        workers = _evaluate(_cfg(models=models, num_nets=2, workers=2))
    assert not caplog.records  # the workers did run (no fallback)
    assert _numbers(workers) == _numbers(sequential)
    assert workers.to_dict()["archs"].keys() == sequential.to_dict()["archs"].keys()
    assert "workers" not in workers.config and "batched" not in workers.config


def test_worker_numerical_error_arrives_as_one_error(caplog) -> None:
    ds = tiny_dataset()
    images, labels = random_subset(ds, 2, generator=make_generator(0))
    images = images.clone()
    images[0, 0, 0, 0] = float("nan")
    with caplog.at_level(logging.WARNING), pytest.raises(NumericalError) as info:
        evaluate_set(images, labels, ds, _cfg(workers=2), base_spec=SPEC, seed=1, progress=False)
    assert not caplog.records  # raised by a worker, not by an in-process fallback
    assert type(info.value) is NumericalError
    assert "NaN or inf" in str(info.value) and "\n" not in str(info.value)


def test_worker_failure_rebuilds_exceptions_with_other_init_arguments() -> None:
    error = OptionError("eval", "workers", "must be an integer, got 'x'")
    failure = pickle.loads(pickle.dumps(parallel.WorkerFailure.capture(error)))
    rebuilt = failure.rebuild()
    assert type(rebuilt) is OptionError and rebuilt.option == "eval.workers"
    assert str(rebuilt) == str(error)
    plain = parallel.WorkerFailure.capture(ValueError("bad")).rebuild()
    assert type(plain) is ValueError and "worker process" in plain.__notes__[0]


def test_processes_that_cannot_start_fall_back_in_process(monkeypatch, caplog) -> None:
    def refuse(workers: int, payload: object) -> None:
        raise OSError("no processes allowed here")

    monkeypatch.setattr(parallel, "_make_pool", refuse)
    with caplog.at_level(logging.WARNING, logger="meddistill.training.parallel"):
        report = _evaluate(_cfg(workers=2))
    assert _numbers(report) == _numbers(_evaluate(_cfg()))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "no processes allowed here" in lines[0]
    assert "remaining 3 network(s) in this process" in lines[0] and "\n" not in lines[0]


def test_too_little_shared_memory_stays_in_process(monkeypatch, caplog) -> None:
    monkeypatch.setattr(parallel, "shared_memory_free", lambda: 1 << 20)
    monkeypatch.setattr(parallel, "_make_pool", pytest.fail)  # never reached
    with caplog.at_level(logging.WARNING, logger="meddistill.training.parallel"):
        report = _evaluate(_cfg(workers=2))
    assert _numbers(report) == _numbers(_evaluate(_cfg()))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "/dev/shm has 1 MiB free" in lines[0]


def _trained(
    spec: ModelSpec, batched: bool, epochs: int = 2, device: str = "cpu"
) -> list[torch.nn.Module]:
    ds = tiny_dataset()
    images, labels = random_subset(ds, 4, generator=make_generator(0))
    images, labels = images.to(device), labels.to(device)
    cfg = _cfg(epochs=epochs).train_config(0.01)
    seeds = [derive_seed(5, k) for k in range(3)]
    models = [build_model_for(spec, ds, seed=s, device=device) for s in seeds]
    gens = [make_generator(derive_seed(s, "train")) for s in seeds]
    if batched:
        train_networks_batched(models, images, labels, cfg, generators=gens)
    else:
        for model, gen in zip(models, gens, strict=True):
            train_network(model, images, labels, cfg, generator=gen)
    return models


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_batched_parameters_match_one_by_one_within_tolerance(device: str) -> None:
    sequential, batched = _trained(SPEC, False, device=device), _trained(SPEC, True, device=device)
    for one, many in zip(sequential, batched, strict=True):
        for (name, p), q in zip(one.named_parameters(), many.parameters(), strict=True):
            rel = float((p - q).detach().norm() / p.detach().norm().clamp_min(1e-12))
            assert rel <= REL_TOL, f"{name}: relative difference {rel:.2e}"
    # the networks did train (DSA draws and batch orders differ per network)
    first = [dict(m.named_parameters())["classifier.weight"] for m in batched]
    assert not torch.equal(first[0], first[1])


def test_batched_evaluation_within_one_test_example() -> None:
    sequential = _evaluate(_cfg())
    batched = _evaluate(_cfg(batched=True))
    one_example = 1 / len(tiny_dataset().test)
    for a, b in zip(sequential.archs["convnet"].nets, batched.archs["convnet"].nets, strict=True):
        assert (a.index, a.seed) == (b.index, b.seed)
        assert abs(a.acc - b.acc) <= one_example + 1e-12
        assert b.train_loss == pytest.approx(a.train_loss, rel=REL_TOL)


def test_batch_norm_falls_back_to_one_by_one(caplog) -> None:
    spec = ModelSpec(name="convnet", depth=2, width=8, norm="batchnorm")
    with caplog.at_level(logging.WARNING, logger="meddistill.training.evaluate"):
        batched = _evaluate(_cfg(batched=True, num_nets=2), spec=spec)
    assert _numbers(batched) == _numbers(_evaluate(_cfg(num_nets=2), spec=spec))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "batch norm" in lines[0]
    model = build_model_for(spec, tiny_dataset(), seed=0)
    assert unbatchable(model, _cfg().train_config(0.01)) is not None


def test_scheduling_options_are_checked_and_resolved() -> None:
    for bad in ({"workers": 0}, {"workers": "many"}, {"workers": True}, {"batched": "yes"}):
        with pytest.raises(OptionError, match=f"eval.{next(iter(bad))}"):
            EvalConfig(**bad)
    cfg = from_dict(EvalConfig, {"workers": 2, "batched": True}, "eval")
    assert (cfg.workers, cfg.batched) == (2, True)
    auto = from_dict(EvalConfig, {"workers": "auto", "batched": "auto"}, "eval")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert auto.workers_for(5, cpu) == min(5, parallel.available_cores())
    assert auto.workers_for(5, cuda) == 1 and cfg.workers_for(1, cpu) == 1
    assert cfg.workers_for(5, cpu) == 2
    assert not auto.batched_on(cpu) and auto.batched_on(cuda) and cfg.batched_on(cpu)
    assert "workers" not in EvalConfig().protocol()
