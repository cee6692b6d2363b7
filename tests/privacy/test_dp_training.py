"""DP-SGD through Opacus (issue 13, part 2): a tiny DP buffer records its guarantee and its
accountant's epsilon stays within the target, the noise is really applied (and shrinks as
epsilon grows), a DP distillation with noise init carries the epsilon into the set's
meta.json, and the DP-SGD full-data baseline reports val and test accuracy."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from imagefolders import image_folder
from toydata import shifted_toy

pytest.importorskip("opacus")

from opacus.accountants import RDPAccountant  # noqa: E402

from meddistill.cli import main  # noqa: E402
from meddistill.errors import ConfigError  # noqa: E402
from meddistill.experts import BufferConfig, TrajectoryStore, generate_buffer  # noqa: E402
from meddistill.experts.config import expert_train_config  # noqa: E402
from meddistill.models import ModelSpec, build_model_for, flatten_params  # noqa: E402
from meddistill.training.dp import DPConfig, DPPlan, PrivateTraining, plan_dp  # noqa: E402
from meddistill.training.dp_loop import check_dp_model, train_private  # noqa: E402
from meddistill.utils import make_generator  # noqa: E402

SPEC = ModelSpec(name="convnet", depth=1, width=4)
NORM = "dataset.normalization={mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}"
QUIET = ["--no-progress", "--device", "cpu"]


def dp_cfg(noise_seed: int = 1, epsilon: float = 8.0) -> BufferConfig:
    """2 experts x 2 epochs, batch 16 on the 60 toy images: 4 Poisson steps per epoch."""
    train = dataclasses.replace(expert_train_config(2), batch_size=16)
    dp = DPConfig(epsilon=epsilon, noise_seed=noise_seed)
    return BufferConfig(num_experts=2, epochs=2, model=SPEC, train=train, seed=5, dp=dp, workers=1)


@pytest.fixture(scope="module")
def dp_buffer(tmp_path_factory: pytest.TempPathFactory) -> TrajectoryStore:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("dp") / "buf"
    return generate_buffer(shifted_toy(), dp_cfg(), out, device="cpu", progress=False)


def test_dp_buffer_records_its_guarantee_within_the_target(dp_buffer: TrajectoryStore) -> None:
    privacy = json.loads((dp_buffer.path / "buffer.json").read_text())["privacy"]
    assert privacy == dp_buffer.privacy
    assert privacy["epsilon"] == 8.0 and privacy["delta"] == pytest.approx(1 / 600)
    assert privacy["accountant"] == "rdp" and privacy["max_grad_norm"] == 1.0
    assert privacy["experts"] == 2 and privacy["steps"] == 8 and privacy["sample_rate"] == 0.25
    assert privacy["noise_multiplier"] > 0 and "one accountant" in privacy["composition"]
    # an accountant of our own over both experts' steps: within the budget
    acct = RDPAccountant()
    acct.history = [(privacy["noise_multiplier"], 0.25, 2 * 8)]
    spent = acct.get_epsilon(delta=privacy["delta"])
    assert spent == pytest.approx(privacy["epsilon_spent"]) and spent <= 8.0
    # the trajectory format is unchanged: [E + 1, P] per expert
    assert dp_buffer.expert_ids == [0, 1]
    assert dp_buffer.load_many(0, [0, 1, 2]).shape == (3, dp_buffer.num_params)
    assert "dp" in dp_buffer.meta and dp_buffer.meta["dp"]["experts"] == 2


def test_the_noise_is_applied_and_seeded(dp_buffer: TrajectoryStore, tmp_path: Path) -> None:
    """Same experts, same batches seed: another noise seed gives other trajectories (same
    initialisation), the same noise seed the same ones; a DP buffer is never extended."""
    data = shifted_toy()
    other = generate_buffer(data, dp_cfg(noise_seed=2), tmp_path / "b2", device="cpu",
                            progress=False)  # fmt: skip
    assert torch.equal(other.load(0, 0), dp_buffer.load(0, 0))
    assert not torch.allclose(other.load(0, 2), dp_buffer.load(0, 2))
    again = generate_buffer(data, dp_cfg(), tmp_path / "b1", device="cpu", progress=False)
    assert torch.equal(again.load_many(1, [0, 1, 2]), dp_buffer.load_many(1, [0, 1, 2]))
    with pytest.raises(Exception, match=r"dp\.experts: 2 there, 3 now"):
        generate_buffer(data, dataclasses.replace(dp_cfg(), num_experts=3), tmp_path / "b1",
                        device="cpu", progress=False)  # fmt: skip


def _final(plan: DPPlan, seed: int = 7) -> torch.Tensor:
    data = shifted_toy()
    model = build_model_for(SPEC, data, seed=0)
    train = dataclasses.replace(expert_train_config(2), batch_size=16)
    train_private(model, data.train.images, data.train.labels, train, PrivateTraining(plan, seed),
                  generator=make_generator(3))  # fmt: skip
    return flatten_params(model)


def test_a_huge_epsilon_approaches_training_without_noise() -> None:
    """Same clipping, same Poisson batches: with no noise (sigma 0) as the reference, the
    trajectory at epsilon 1e4 is far closer to it than the one at epsilon 8."""
    torch.set_num_threads(1)
    loose = plan_dp(DPConfig(epsilon=1e4), 60, 16, 2, 1, "dp")
    tight = plan_dp(DPConfig(epsilon=8.0), 60, 16, 2, 1, "dp")
    assert loose.noise_multiplier < tight.noise_multiplier / 20
    silent = _final(dataclasses.replace(tight, noise_multiplier=0.0))
    near = (_final(loose) - silent).norm()
    far = (_final(tight) - silent).norm()
    assert near < far / 10


def test_batch_norm_is_refused_by_opacus_validator() -> None:
    model = build_model_for(dataclasses.replace(SPEC, norm="batchnorm"), shifted_toy(), seed=0)
    with pytest.raises(ConfigError, match="cannot train with DP-SGD .*BatchNorm"):
        check_dp_model(model, "convnet")


def test_dp_distillation_end_to_end_carries_the_epsilon(capsys, workdir) -> None:
    """`distill --dp-epsilon` makes DP experts, matches them from noise and shares a set whose
    meta.json (and results.json) carry the guarantee and say the final evaluation read data."""
    torch.set_num_threads(1)
    ds = image_folder(workdir / "ds", {"a": 6, "b": 6, "c": 6})
    argv = ["distill", "--method", "mtt", "--dataset", f"folder:{ds}", "--dp-epsilon", "8",
            "--out", "run", "--experts", "1", "--expert-epochs", "2", "--ipc", "1",
            "--iterations", "2", "match.init=noise", "match.syn_steps=2", "match.expert_epochs=1",
            "match.max_start=1", "match.step_size_param=log", "model.width=4",
            "eval.num_nets=1", "eval.epochs=2", NORM, *QUIET]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    meta = json.loads((workdir / "run" / "synthetic" / "meta.json").read_text())
    privacy = meta["privacy"]
    assert privacy["epsilon"] == 8.0 and privacy["epsilon_spent"] <= 8.0
    assert privacy["experts"] == 1 and "post-processing" in privacy["inherited"]
    assert "val and test" in privacy["final_evaluation"]
    buffer = json.loads((Path(meta["buffer"]) / "buffer.json").read_text())
    assert buffer["privacy"]["noise_multiplier"] == privacy["noise_multiplier"]
    results = json.loads((workdir / "run" / "results.json").read_text())
    assert results["privacy"]["epsilon"] == 8.0 and results["rows"]


def test_dp_sgd_full_data_baseline(capsys, workdir) -> None:
    torch.set_num_threads(1)
    ds = image_folder(workdir / "ds", {"a": 6, "b": 6, "c": 6})
    argv = ["baseline", "--dataset", f"folder:{ds}", "--no-random", "--dp-epsilon", "4",
            "full_train.epochs=2", "full_train.batch_size=8", "model.width=4", NORM, *QUIET]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    folder = next((workdir / "runs" / "baseline").iterdir())
    row = json.loads((folder / "results.json").read_text())["rows"][0]
    assert row["set"] == "full" and row["privacy"]["epsilon"] == 4.0
    assert row["privacy"]["networks"] == 1 and row["privacy"]["epsilon_spent"] <= 4.0
    stats = row["archs"]["convnet"]
    assert 0 <= stats["acc_mean"] <= 1 and 0 <= stats["val_acc_mean"] <= 1


def test_empty_poisson_samples_still_take_a_noisy_step() -> None:
    """Batch 1 of 60 images: q = 1/60, so about a third of the 60 steps draw no image; each
    still adds noise and counts in the accountant (train_private checks the count)."""
    torch.set_num_threads(1)
    data = shifted_toy()
    model = build_model_for(SPEC, data, seed=0)
    before = flatten_params(model)
    train = dataclasses.replace(expert_train_config(1), batch_size=1, dsa=False)
    plan = DPPlan(8.0, 1e-3, "rdp", 1.0, 1.0, 1 / 60, 60, 1, 8.0)
    epochs: list[int] = []
    result = train_private(model, data.train.images, data.train.labels, train,
                           PrivateTraining(plan, 11), generator=make_generator(0),
                           on_epoch=lambda e, m: epochs.append(e))  # fmt: skip
    assert epochs == [1] and torch.isfinite(flatten_params(model)).all()
    assert not torch.equal(flatten_params(model), before) and result.history[0]["epoch"] == 1
