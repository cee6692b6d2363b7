"""Differentially private distillation (issue 13, part 2) without Opacus: the DP options are
validated once at the edge, identities of non-DP runs hold, a DP run refuses every setting that
would read private images (one line each, exit code 2), and a missing Opacus says how to
install it. A DP buffer here is a plain buffer whose buffer.json records a guarantee: the
refusals read only that record (tests/privacy/test_dp_training.py makes real ones)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from faulthelpers import hostile
from imagefolders import image_folder

from meddistill.app.config import BaselineJob, BufferJob, DistillJob, job_identity, resolve
from meddistill.app.distill import resolve_distill
from meddistill.app.private import check_private_distill
from meddistill.config import from_dict
from meddistill.errors import ConfigError, OptionError
from meddistill.experts.config import BufferConfig
from meddistill.training.dp import INSTALL, DPConfig, require_opacus

NORM = "dataset.normalization={mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}"
QUIET = ["--no-progress", "--device", "cpu"]
RECORD = {"epsilon": 8.0, "delta": 1e-3, "accountant": "rdp", "experts": 1, "steps": 2,
          "noise_multiplier": 1.2, "max_grad_norm": 1.0, "sample_rate": 1.0}  # fmt: skip


@pytest.fixture(autouse=True)
def _in_workdir(workdir: Path) -> Path:
    return workdir


# Options ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dp", "key"),
    [
        ({}, "buffer.dp.epsilon"),
        ({"epsilon": 0}, "buffer.dp.epsilon"),
        ({"epsilon": -1.0}, "buffer.dp.epsilon"),
        ({"epsilon": float("inf")}, "buffer.dp.epsilon"),
        ({"epsilon": float("nan")}, "buffer.dp.epsilon"),
        ({"epsilon": 8, "delta": 0}, "buffer.dp.delta"),
        ({"epsilon": 8, "delta": 1}, "buffer.dp.delta"),
        ({"epsilon": 8, "max_grad_norm": 0}, "buffer.dp.max_grad_norm"),
        ({"epsilon": 8, "max_grad_norm": -1}, "buffer.dp.max_grad_norm"),
        ({"epsilon": 8, "accountant": "gdp"}, "buffer.dp.accountant"),
        ({"epsilon": 8, "noise_seed": -1}, "buffer.dp.noise_seed"),
    ],
)
def test_dp_options_are_refused_by_their_dotted_name(dp, key) -> None:
    with pytest.raises(ConfigError, match=f"option {key}"):
        resolve(BufferJob, {"buffer": {"dp": dp}})


def test_dp_refuses_batch_norm_and_gsam_experts() -> None:
    dp = {"epsilon": 8.0}
    with pytest.raises(OptionError, match=r"buffer\.dp must be null with model\.norm batchnorm"):
        resolve(BufferJob, {"buffer": {"dp": dp, "model": {"norm": "batchnorm"}}})
    with pytest.raises(OptionError, match="buffer.dp must be null with the experts' optimizer"):
        resolve(BufferJob, {"buffer": {"dp": dp, "train": {"optimizer": "gsam"}}})
    job = resolve(DistillJob, {"method": "hoptm", "experts": {"dp": dp}})
    assert resolve_distill(job).experts.train.optimizer == "sgd"  # DP experts default to SGD
    job = resolve(DistillJob, {"experts": {"dp": dp}, "expert_optimizer": "gsam"})
    with pytest.raises(ConfigError, match="option experts.dp must be null with the experts'"):
        resolve_distill(job)


def test_delta_defaults_to_a_tenth_of_one_over_n_and_must_stay_below_one_over_n() -> None:
    assert DPConfig(epsilon=1.0).delta_for(500, "buffer.dp") == pytest.approx(1 / 5000)
    assert DPConfig(epsilon=1.0, delta=1e-4).delta_for(500, "buffer.dp") == 1e-4
    with pytest.raises(ConfigError, match=r"option buffer\.dp\.delta=0\.01 must be below 1/N"):
        DPConfig(epsilon=1.0, delta=0.01).delta_for(500, "buffer.dp")


def test_unset_dp_keeps_every_identity() -> None:
    """A config without DP hashes as before the option existed (buffer folders, bench buffer
    artifacts, baseline run folders, distill run identities: tests/test_config.py)."""
    assert "dp" not in BufferConfig().identity()
    assert BufferConfig(dp=DPConfig(epsilon=2.0)).identity()["dp"]["epsilon"] == 2.0
    assert "full_dp" not in job_identity(BaselineJob())
    assert "full_dp" in job_identity(from_dict(BaselineJob, {"full_dp": {"epsilon": 1}}))
    assert "dp" not in job_identity(DistillJob())["experts"]


# The missing extra -----------------------------------------------------------------------------
def test_missing_opacus_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "opacus", None)  # `import opacus` raises ImportError
    with pytest.raises(ConfigError, match=r'pip install "meddistill\[privacy\]"') as err:
        require_opacus()
    assert "\n" not in str(err.value) and INSTALL in str(err.value)


def test_missing_opacus_is_one_cli_line(capsys, workdir, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "opacus", None)
    ds = image_folder(workdir / "ds", {"a": 6, "b": 6})
    argv = ["buffer", "--dataset", f"folder:{ds}", "--dp-epsilon", "8", NORM, *QUIET]
    hostile(capsys, workdir, argv, contains=(INSTALL,), code=2)


# Refusals of a DP run --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dp_buffer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset folder, buffer folder) whose buffer.json records a DP guarantee."""
    from meddistill.cli import main

    base = tmp_path_factory.mktemp("dpbuf")
    ds = image_folder(base / "ds", {"a": 6, "b": 6, "c": 6})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDDISTILL_CACHE", str(base / "cache"))
        mp.delenv("MEDDISTILL_DATA", raising=False)
        argv = ["buffer", "--dataset", f"folder:{ds}", "--out", str(base / "buf"), "--experts",
                "1", "--epochs", "1", "buffer.model.width=4", NORM, *QUIET]  # fmt: skip
        assert main(argv) == 0
    meta = json.loads((base / "buf" / "buffer.json").read_text())
    assert meta["privacy"] is None  # a plain buffer says it has no guarantee
    meta["privacy"] = RECORD
    (base / "buf" / "buffer.json").write_text(json.dumps(meta))
    return ds, base / "buf"


BASE = ["model.width=4", "--ipc", "1", "final_eval=false", NORM, *QUIET]
TINY = [*BASE, "--iterations", "2", "match.syn_steps=2", "match.expert_epochs=1",
        "match.max_start=1"]  # fmt: skip
REFUSED = [
    ("mtt", TINY, "option match.init=real starts the set from real training images"),
    ("datm", [*TINY, "match.init=real_correct"], "option match.init=real_correct"),
    ("mtt", [*TINY, "match.init=noise", "match.eval_every=1"], "option match.eval_every=1"),
    ("dm", BASE, "method dm matches batches of real training images"),
    ("herding", BASE, "method herding selects real training images"),
    ("haba", [*TINY, "match.init=noise"], "method haba initialises its bases from real"),
    (
        "hoptm",
        [*TINY, "match.init=noise", "match.parameterization=latent"],
        "option match.parameterization=latent decodes the set through an autoencoder",
    ),
]


@pytest.mark.parametrize(("method", "extra", "says"), REFUSED)
def test_dp_buffer_refuses_settings_that_read_private_images(
    capsys, workdir, dp_buffer, method, extra, says
) -> None:
    ds, buf = dp_buffer
    argv = ["distill", "--method", method, "--dataset", f"folder:{ds}", "--buffer", str(buf),
            "--out", "out", *extra]  # fmt: skip
    message = hostile(capsys, workdir, argv, contains=(says, f"DP buffer {buf}"), code=2)
    assert "differential privacy" in message


def test_dp_experts_made_by_distill_refuse_real_init_before_any_work(capsys, workdir) -> None:
    ds = image_folder(workdir / "ds", {"a": 6, "b": 6})
    argv = ["distill", "--method", "mtt", "--dataset", f"folder:{ds}", "--dp-epsilon", "8",
            "--out", "out", *TINY]  # fmt: skip
    hostile(capsys, workdir, argv, contains=("match.init=real", "experts.dp (epsilon 8.0)"), code=2)


def test_dp_data_needs_a_public_normalisation(capsys, workdir) -> None:
    ds = image_folder(workdir / "ds", {"a": 6, "b": 6})
    argv = ["buffer", "--dataset", f"folder:{ds}", "--dp-epsilon", "8", *QUIET]
    hostile(capsys, workdir, argv, contains=("train split's mean and std", NORM[:22]), code=2)


def test_tune_is_refused_on_a_dp_buffer(capsys, workdir, dp_buffer) -> None:
    ds, buf = dp_buffer
    argv = ["tune", "--method", "mtt", "--dataset", f"folder:{ds}", "--buffer", str(buf),
            "match.init=noise", *QUIET]  # fmt: skip
    hostile(capsys, workdir, argv, contains=("tune chooses settings", "validation"), code=2)


def test_noise_init_and_soft_labels_inherit_the_guarantee(dp_buffer) -> None:
    """Soft labels are an expert's logits on the initial images: with noise init, a DP expert
    on data-free inputs, so they are allowed; hard labels too."""
    ds, buf = dp_buffer
    for match in ({"init": "noise"}, {"init": "noise", "soft_labels": True}):
        job = resolve(DistillJob, {"method": "mtt", "buffer": str(buf), "match": match})
        assert check_private_distill(resolve_distill(job)) is True
    job = resolve(DistillJob, {"method": "mtt", "match": {"init": "noise"}})
    assert check_private_distill(resolve_distill(job)) is False  # no DP buffer: not a DP run
