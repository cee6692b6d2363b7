"""What a user with another dataset finds without reading the code (issue 10, points 4-6):
--help lists each command's config keys with their defaults, `config show` prints the config a
command resolves, the flags for common keys land where they say, a preset warns when run on
another dataset than its own, and a missing data file names every way to point at it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from meddistill.app import explain
from meddistill.app.config import (
    BaselineJob,
    BufferJob,
    CoresetJob,
    DistillJob,
    EvaluateJob,
    resolve,
)
from meddistill.app.distill import coreset_job_as_distill
from meddistill.cli import main
from meddistill.config import apply_overrides, load_yaml, to_dict
from meddistill.data.registry import load_dataset
from meddistill.errors import DatasetNotFoundError
from meddistill.methods.registry import available_methods, get_method

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRESET = CONFIGS / "bloodmnist" / "hoptm" / "ipc10.yaml"


@pytest.fixture(autouse=True)
def _in_workdir(workdir: Path) -> Path:
    """Every test of this module runs in its own folder (tests/conftest.py `workdir`)."""
    return workdir


def help_of(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


def show(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[dict, str, str]:
    """(parsed YAML, the text, stderr) of `meddistill config show ...`."""
    assert main(["config", "show", *argv]) == 0
    captured = capsys.readouterr()
    return yaml.safe_load(captured.out), captured.out, captured.err


def expected(job_cls: type, data: dict) -> dict:
    """What `config show` must print: the job app.config.resolve builds, the method's full
    config under `match`."""
    job = resolve(job_cls, data)
    out = to_dict(job)
    if job_cls is DistillJob:
        out["match"] = to_dict(get_method(job.method).make_config(job.match))
    return out


# --help -------------------------------------------------------------------------------------

HELP_KEYS = {
    "distill": ["model:", "match:", "experts:", "eval.num_nets=5", "match.syn_steps=80",
                "experts.num_experts=5", "dataset.name=bloodmnist", "keep_checkpoint=false"],
    "baseline": ["model:", "full_train:", "eval.num_nets=5", "ipcs=[1, 10, 50]", "full_train.epochs=30"],
    "buffer": ["buffer:", "buffer.num_experts=5", "buffer.epochs=10", "seed=null"],
    "coreset": ["model:", "eval:", "selection=herding", "feature_epochs=5", "eval.epochs=1000"],
    "evaluate": ["eval:", "eval.num_nets=5", "subset_lr=0.01", "model.width=128"],
}  # fmt: skip


@pytest.mark.parametrize("command", sorted(HELP_KEYS))
def test_help_lists_sections_and_keys_with_defaults(capsys, command):
    text = help_of(capsys, command)
    for needle in ["dataset:", f"meddistill config show {command}", *HELP_KEYS[command]]:
        assert needle in text, needle
    assert "dataset.root=null" in text and "also:" in text  # the rest named, not hidden


def test_help_defaults_are_the_dataclasses(capsys):
    text = help_of(capsys, "distill")
    assert f"eval.num_nets={DistillJob().eval.num_nets}" in text
    assert f"match.lr_img={get_method('hoptm').make_config({}).lr_img}" in text


def test_distill_help_lists_the_chosen_methods_options(capsys):
    text = help_of(capsys, "distill", "--method", "dm")
    assert "match.batch_real=256" in text and "DMConfig" in text
    assert "syn_steps" not in text
    assert "HoPTMConfig" in help_of(capsys, "distill", "--method", "nosuch")  # refused at run


def test_common_keys_exist():
    """A renamed key must not silently vanish from --help."""
    sections = {"match": set()}
    for job in explain.JOBS.values():
        for name, value in to_dict(job()).items():
            if isinstance(value, dict):
                sections.setdefault(name, set()).update(value)
    for method in available_methods():
        sections["match"].update(f.name for f in dataclasses.fields(get_method(method).config_type))
    for section, keys in explain.COMMON.items():
        assert set(keys) <= sections[section], section


# config show --------------------------------------------------------------------------------


def test_config_show_prints_the_resolved_job(capsys):
    data, text, err = show(capsys, "distill", "--method", "hoptm")
    assert data == expected(DistillJob, {"method": "hoptm"}) and err == ""
    assert re.search(r"^  num_nets: 5 +# int; default 5$", text, re.M)
    assert re.search(r"^  kappa_base: 5\.0e-09 +# float; default 5\.0e-09; kappa_0", text, re.M)
    body = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert all("# " in line for line in body)  # a comment per key


def test_config_show_of_a_preset_with_overrides_and_derived_values(capsys, workdir):
    args = ["--config", str(PRESET), "match.lr_img=50", "--ipc", "2"]
    data, text, _ = show(capsys, "distill", *args)
    want = apply_overrides(load_yaml(PRESET), ["match.ipc=2", "match.lr_img=50"])
    assert data == expected(DistillJob, want)
    assert re.search(r"^    width: 128 +#.*; the run uses 32$", text, re.M)  # experts.model
    (workdir / "shown.yaml").write_text(text)
    again, _, _ = show(capsys, "distill", "--config", "shown.yaml")
    assert again == data  # the printed config is a usable --config


@pytest.mark.parametrize(
    ("command", "job_cls"),
    [("buffer", BufferJob), ("baseline", BaselineJob), ("evaluate", EvaluateJob),
     ("coreset", CoresetJob)],
)  # fmt: skip
def test_config_show_of_every_job_command(capsys, command, job_cls):
    data, _, _ = show(capsys, command, "seed=3")
    assert data == expected(job_cls, {"seed": 3})


def test_config_show_is_what_the_command_runs(capsys, monkeypatch):
    ran = []
    results = {"rows": [], "synthetic": "s", "syn_lr": 0.01, "run_dir": "r"}
    monkeypatch.setattr(
        "meddistill.app.distill.run_distill", lambda job, *a, **k: ran.append(job) or results
    )
    args = ["--config", str(PRESET), "--experts", "3", "eval.num_nets=2"]
    assert main(["distill", *args]) == 0
    capsys.readouterr()
    data, _, _ = show(capsys, "distill", *args)
    shown = to_dict(ran[0])
    shown["match"] = to_dict(get_method("hoptm").make_config(ran[0].match))
    assert data == shown


# flags --------------------------------------------------------------------------------------


def test_distill_expert_and_checkpoint_flags(capsys):
    args = ["--experts", "3", "--expert-epochs", "7", "--keep-checkpoint"]
    data, _, _ = show(capsys, "distill", *args)
    assert data["experts"]["num_experts"] == 3 and data["experts"]["epochs"] == 7
    assert data["experts"]["train"]["epochs"] == 7 and data["keep_checkpoint"] is True
    data, _, _ = show(capsys, "distill")
    assert data["keep_checkpoint"] is False and data["experts"]["num_experts"] == 5


def test_baseline_no_random(capsys):
    data, _, _ = show(capsys, "baseline", "--no-random")
    assert data["ipcs"] == [] and data["full"] is True
    with pytest.raises(SystemExit) as stop:
        main(["config", "show", "baseline", "--no-random", "--ipc", "1"])
    assert stop.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_coreset_keep_checkpoint_reaches_the_distill_job(capsys):
    data, _, _ = show(capsys, "coreset", "--keep-checkpoint", "tuned_for=busi")
    assert data["keep_checkpoint"] is True
    job = coreset_job_as_distill(resolve(CoresetJob, data))
    assert job.keep_checkpoint is True and job.tuned_for == "busi"


def test_buffer_flags_unchanged(capsys):
    data, _, _ = show(capsys, "buffer", "--experts", "2", "--epochs", "4")
    assert (data["buffer"]["num_experts"], data["buffer"]["epochs"]) == (2, 4)


# presets tuned on one dataset ---------------------------------------------------------------


def test_preset_on_another_dataset_warns_once(capsys):
    _, _, err = show(capsys, "distill", "--config", str(PRESET), "--dataset", "breastmnist",
                     "match.lr_img=50")  # fmt: skip
    lines = err.splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith(
        "meddistill distill: warning: preset values were tuned for bloodmnist (match."
    )
    assert "match.lr_lr" in line and "match.syn_steps" in line and "experts.num_experts" in line
    assert "match.lr_img" not in line  # replaced by the user: no longer the preset's
    assert "dataset.name" not in line and "tuned_for" not in line
    assert line.endswith(
        "you are running on breastmnist — tune them on breastmnist's validation split"
    )


def test_preset_on_its_own_dataset_or_declared_tuned_is_quiet(capsys):
    assert show(capsys, "distill", "--config", str(PRESET))[2] == ""
    quiet = ["--config", str(PRESET), "--dataset", "breastmnist", "tuned_for=breastmnist"]
    assert show(capsys, "distill", *quiet)[2] == ""


def test_warning_before_a_refused_run(capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise DatasetNotFoundError("stopped before any work; fine")

    monkeypatch.setattr("meddistill.app.distill.run_distill", refuse)
    code = main(["distill", "--config", str(PRESET), "--dataset", "pneumoniamnist"])
    lines = capsys.readouterr().err.splitlines()
    assert code != 0 and len(lines) == 2
    assert lines[0].startswith("meddistill distill: warning: preset values were tuned for ")
    assert lines[1].startswith("meddistill distill: error: stopped")


def test_preset_warning_function():
    job = resolve(DistillJob, {"dataset": {"name": "busi"}})
    files = [
        {"tuned_for": "bloodmnist", "match": {"lr_img": 100.0, "ipc": 1}, "model": {"width": 32}},
        {"tuned_for": "breastmnist", "match": {"syn_steps": 20}},
        {"tuned_for": "busi", "match": {"iterations": 9}},
    ]
    data = {"match": {"lr_img": 100.0, "ipc": 2, "syn_steps": 20, "iterations": 9}}
    data["model"] = {"width": 32}
    text = explain.preset_warning(files, data, job)
    assert text == (
        "preset values were tuned for bloodmnist (match.lr_img, model.width) and breastmnist "
        "(match.syn_steps); you are running on busi — tune them on busi's validation split"
    )
    assert explain.preset_warning(files[2:], data, job) is None
    assert explain.preset_warning([{"match": {"ipc": 2}}], data, job) is None


def dataset_presets() -> list[Path]:
    skip = {"bench", "baseline", "buffer", "cpu"}
    return [
        p for p in sorted(CONFIGS.rglob("*.yaml")) if p.relative_to(CONFIGS).parts[0] not in skip
    ]


def test_every_dataset_preset_names_its_dataset():
    paths = dataset_presets()
    assert len(paths) > 100
    for path in paths:
        data = load_yaml(path)
        assert data["tuned_for"] == data["dataset"]["name"], path
        assert "tuned_for:" in path.read_text(), path  # said in the file, not only included


def test_config_comments_point_at_files_that_exist():
    repo = CONFIGS.parent
    for path in sorted(CONFIGS.rglob("*.yaml")):
        for line in path.read_text().splitlines():
            comment = line.split("#", 1)[1] if "#" in line else ""
            for ref in re.findall(r"[\w./-]+\.(?:yaml|md)\b", comment):
                assert (path.parent / ref).exists() or (repo / ref).exists(), (path, ref)


# a missing data file ------------------------------------------------------------------------

WAYS = ("--data-root DIR", "$MEDDISTILL_DATA", "dataset.root=", "--download")


def test_missing_medmnist_file_names_every_way_to_point_at_it(workdir):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("bloodmnist", root=workdir / "empty")
    msg = str(err.value)
    assert "\n" not in msg and "bloodmnist.npz not found" in msg
    for way in (*WAYS, "~/.medmnist"):
        assert way in msg, way


def test_missing_folder_dataset_names_every_way_to_point_at_it(workdir):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("busi", root=workdir / "empty")
    msg = str(err.value)
    assert "\n" not in msg and "busi not found" in msg
    for way in (*WAYS, "~/.meddistill/data"):
        assert way in msg, way
