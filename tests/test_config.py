"""Config plumbing: unknown keys and wrong types are refused, overrides nest and parse."""

from dataclasses import dataclass, field

import pytest

from meddistill.config import apply_overrides, from_dict, load_yaml, merge, parse_override, to_dict
from meddistill.errors import ConfigError


@dataclass
class Inner:
    lr: float = 0.01
    steps: int = 10
    mode: str = "sgd"


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    ipcs: list[int] = field(default_factory=lambda: [1])
    root: str | None = None
    flag: bool = False


def test_from_dict_builds_nested_and_coerces_ints_to_floats():
    job = from_dict(Outer, {"inner": {"lr": 1, "steps": 3}, "ipcs": [1, 10], "flag": True})
    assert job.inner.lr == 1.0 and isinstance(job.inner.lr, float)
    assert job.inner.steps == 3 and job.ipcs == [1, 10] and job.flag is True
    assert to_dict(job) == {
        "inner": {"lr": 1.0, "steps": 3, "mode": "sgd"},
        "ipcs": [1, 10],
        "root": None,
        "flag": True,
    }


def test_unknown_key_is_named_with_its_section():
    with pytest.raises(ConfigError, match=r"inner\.stpes"):
        from_dict(Outer, {"inner": {"stpes": 3}})


@pytest.mark.parametrize(
    "data, pattern",
    [
        ({"inner": {"steps": 2.5}}, "integer"),
        ({"flag": "yes"}, "true or false"),
        ({"inner": {"lr": "fast"}}, "number"),
        ({"inner": 3}, "section"),
    ],
)
def test_wrong_types_are_refused(data, pattern):
    with pytest.raises(ConfigError, match=pattern):
        from_dict(Outer, data)


def test_overrides_parse_yaml_values_and_nest():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("x=[1, 2]") == (["x"], [1, 2])
    out = apply_overrides({"inner": {"lr": 0.1}}, ["inner.steps=5", "root=/tmp/x", "flag=true"])
    assert out == {"inner": {"lr": 0.1, "steps": 5}, "root": "/tmp/x", "flag": True}
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(ConfigError, match="is a value"):
        apply_overrides({"a": 1}, ["a.b=2"])


def test_merge_is_deep_and_does_not_mutate():
    base = {"a": {"b": 1, "c": 2}, "d": [1]}
    out = merge(base, {"a": {"b": 5}, "d": [2]})
    assert out == {"a": {"b": 5, "c": 2}, "d": [2]}
    assert base == {"a": {"b": 1, "c": 2}, "d": [1]}


def test_load_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(lst)


def test_yaml_include_merges_in_order_relative_to_file(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "base.yaml").write_text("a: {x: 1, y: 2}\nb: 1\n")
    (tmp_path / "shared" / "more.yaml").write_text("a: {y: 3}\n")
    top = tmp_path / "top.yaml"
    top.write_text("include: [shared/base.yaml, shared/more.yaml]\nb: 5\n")
    assert load_yaml(top) == {"a": {"x": 1, "y": 3}, "b": 5}
    loop = tmp_path / "loop.yaml"
    loop.write_text("include: loop.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_yaml(loop)


def test_a_partial_section_keeps_the_jobs_own_defaults_for_the_rest():
    from meddistill.app.config import BufferJob, DistillJob, resolve

    job = resolve(BufferJob, {"buffer": {"train": {"optimizer": "gsam"}, "num_experts": 3}})
    # the job's buffer default is 5 experts x 10 epochs; one key changed, the rest kept
    assert (job.buffer.num_experts, job.buffer.epochs) == (3, 10)
    assert job.buffer.train.optimizer == "gsam" and job.buffer.train.lr == 0.01
    job = resolve(DistillJob, {"experts": {"train": {"lr": 0.02}}})
    assert (job.experts.num_experts, job.experts.epochs, job.experts.train.lr) == (5, 10, 0.02)


def test_a_nested_impossible_value_is_named_where_the_user_typed_it():
    from meddistill.app.config import DistillJob, resolve
    from meddistill.methods.registry import get_method

    with pytest.raises(ConfigError, match=r"^option experts\.train\.lr must be"):
        resolve(DistillJob, {"experts": {"train": {"lr": 0}}})
    with pytest.raises(ConfigError, match=r"^option match\.eval\.batch_size must be"):
        get_method("hoptm").make_config({"eval": {"batch_size": 0}})


def test_dataset_val_fraction_carves_val_from_an_image_folder(tmp_path) -> None:
    from imagefolders import image_folder

    from meddistill.app.config import DatasetConfig
    from meddistill.errors import ConfigError, OptionError

    folder = image_folder(tmp_path / "ds", {"a": 20, "b": 20}, size=8)
    name = f"folder:{folder}"
    assert DatasetConfig(name=name).load().class_counts("val") == [2, 2]  # default 10 %
    assert DatasetConfig(name=name, val_fraction=0.25).load().class_counts("val") == [5, 5]
    assert DatasetConfig(name=name, val_fraction=0.0).load().val is None
    with pytest.raises(OptionError, match="dataset.val_fraction must be a fraction"):
        DatasetConfig(name=name, val_fraction=1.0)
    with pytest.raises(ConfigError, match="val_fraction do not apply to dataset 'bloodmnist'"):
        DatasetConfig(name="bloodmnist", val_fraction=0.2).load()


def test_an_unset_val_fraction_keeps_the_run_identity_it_had() -> None:
    from toydata import shifted_toy

    from meddistill.app.config import DistillJob, resolve
    from meddistill.app.distill import resolve_distill, run_identity

    data = shifted_toy()
    unset = run_identity(resolve_distill(resolve(DistillJob, {"method": "hoptm"})), data)
    assert unset == "8042e66c50f6e8e6"  # computed at commit 5e9ffb3, before the option existed
    given = {"method": "hoptm", "dataset": {"val_fraction": 0.2}}
    assert run_identity(resolve_distill(resolve(DistillJob, given)), data) != unset
