"""The `meddistill` command, in process: one clear error line for every bad input, and a tiny
end-to-end run (info, buffer, baseline, distill, evaluate, export) on a generated image folder.

A refused command must leave nothing behind: every bad-input test compares the files under
the test folder before and after (the cache dir, which may remember md5s, excepted).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from imagefolders import image_folder
from safetensors.torch import load_file

from meddistill.cli import main
from meddistill.utils import md5_file

BLOOD_MD5 = "7053d0359d879ad8a5505303e11de1dc"  # official bloodmnist.npz (28 px)
TINY_NET = "model.width=4"


@pytest.fixture(autouse=True)
def _in_workdir(workdir: Path) -> Path:
    """Every test of this module runs in its own folder (tests/conftest.py `workdir`)."""
    return workdir


def bloodmnist_npz(folder: Path) -> Path:
    """A bloodmnist.npz with the official keys, shapes and dtypes but generated pixels."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 8), ("val", 8), ("test", 8)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 8).reshape(n, 1).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bloodmnist.npz"
    np.savez(path, **arrays)
    return path


def files_under(root: Path) -> set[Path]:
    cache = root / "cache"
    return {p for p in root.rglob("*") if cache not in p.parents and p != cache}


def refused(capsys: pytest.CaptureFixture[str], root: Path, command: str, *args: str) -> str:
    """Run a command that must fail; check exit code, ONE stderr line, no files; return it."""
    capsys.readouterr()
    before = files_under(root)
    code = main([command, *args])
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    prefix = f"meddistill {command}: error: "
    assert lines[0].startswith(prefix), lines[0]
    assert captured.out == ""
    assert files_under(root) == before, "a refused command left files behind"
    assert not list(root.rglob("*.tmp"))
    return lines[0][len(prefix) :]


# Bad datasets -------------------------------------------------------------------------------


def test_missing_npz_names_file_and_download(capsys, workdir):
    empty = workdir / "empty"
    empty.mkdir()
    msg = refused(capsys, workdir, "baseline", "--dataset", "bloodmnist", "--data-root", str(empty))
    assert "bloodmnist.npz not found" in msg and str(empty) in msg
    assert "--download" in msg and "zenodo.org" in msg


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_npz_is_refused(capsys, workdir, damage):
    path = bloodmnist_npz(workdir / "data")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x00garbage" * 64)
    kept = path.read_bytes()
    msg = refused(
        capsys, workdir, "baseline", "--dataset", "bloodmnist", "--data-root", str(path.parent)
    )
    assert str(path) in msg and md5_file(path) in msg and BLOOD_MD5 in msg
    assert "delete it and rerun with --download" in msg
    assert path.read_bytes() == kept  # the user's file is reported, never touched


def test_md5_mismatch_of_a_well_formed_npz_is_refused(capsys, workdir):
    path = bloodmnist_npz(workdir / "data")
    msg = refused(
        capsys, workdir, "distill", "--dataset", "bloodmnist", "--data-root", str(path.parent)
    )
    assert f"{path} has md5 {md5_file(path)}" in msg
    assert f"should have {BLOOD_MD5}" in msg and "--download" in msg


@pytest.mark.parametrize("command", ["baseline", "distill", "info"])
def test_unknown_dataset(capsys, workdir, command):
    args = ["foomnist"] if command == "info" else ["--dataset", "foomnist"]
    msg = refused(capsys, workdir, command, *args)
    assert "unknown dataset 'foomnist'" in msg
    assert "bloodmnist" in msg and "folder:" in msg


def test_info_of_a_known_dataset_without_its_file_prints_the_facts(capsys, workdir):
    empty = workdir / "empty"
    empty.mkdir()
    assert main(["info", "bloodmnist", "--data-root", str(empty), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["name"] == "bloodmnist" and facts["n_classes"] == 8
    assert "bloodmnist.npz not found" in facts["note"]


def test_empty_class_folder(capsys, workdir):
    root = image_folder(workdir / "ds", {"a": 3, "b": 3})
    (root / "c").mkdir()
    msg = refused(capsys, workdir, "baseline", "--dataset", f"folder:{root}")
    assert f"class folder {root / 'c'} holds no images" in msg
    assert "add images or remove the folder" in msg


def test_non_image_files_in_a_class_folder(capsys, workdir):
    root = image_folder(workdir / "ds", {"a": 3, "b": 3})
    (root / "b" / "notes.txt").write_text("not an image")
    (root / "a" / "scan.dcm").write_bytes(b"DICM")
    msg = refused(capsys, workdir, "buffer", "--dataset", f"folder:{root}")
    assert "2 file(s)" in msg and "are not images" in msg
    assert str(root / "b" / "notes.txt") in msg and str(root / "a" / "scan.dcm") in msg
    assert "move them out of the class folders" in msg


def test_image_extension_that_is_not_an_image(capsys, workdir):
    root = image_folder(workdir / "ds", {"a": 3, "b": 3})
    (root / "a" / "broken.png").write_bytes(b"this is no png")
    msg = refused(capsys, workdir, "baseline", "--dataset", f"folder:{root}")
    assert "cannot be read as images" in msg and str(root / "a" / "broken.png") in msg
    assert "remove or replace them" in msg


# Bad options --------------------------------------------------------------------------------


@pytest.fixture
def small_ds(workdir: Path) -> Path:
    """Classes of 6, 5, 6 images: a stratified 80/20 split keeps 5, 4, 5 for training."""
    return image_folder(workdir / "ds", {"a": 6, "b": 5, "c": 6})


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("model.name=foo", ["unknown model 'foo'", "model.name", "convnet"]),
        ("eval.nmu_nets=3", ["unknown option(s) eval.nmu_nets", "num_nets"]),
        ("bogus=1", ["unknown option(s) bogus", "valid options", "eval"]),
        ("eval.num_nets=many", ["option eval.num_nets must be an integer", "'many'"]),
        ("noequals", ["override 'noequals'", "key=value"]),
    ],
)
def test_bad_option(capsys, workdir, small_ds, override, names):
    msg = refused(capsys, workdir, "baseline", "--dataset", f"folder:{small_ds}", override)
    for part in names:
        assert part in msg


def test_override_after_a_flag_still_counts(capsys, workdir, small_ds):
    # argparse alone refuses a key=value that follows a flag ('unrecognized arguments')
    msg = refused(
        capsys, workdir, "baseline", TINY_NET, "--dataset", f"folder:{small_ds}", "eval.nmu_nets=3"
    )
    assert "eval.nmu_nets" in msg
    with pytest.raises(SystemExit) as stop:
        main(["baseline", TINY_NET, "--dataset", f"folder:{small_ds}", "stray"])
    assert stop.value.code == 2
    assert "unrecognized arguments: stray" in capsys.readouterr().err


def test_unknown_method(capsys, workdir, small_ds):
    msg = refused(capsys, workdir, "distill", "--method", "foo", "--dataset", f"folder:{small_ds}")
    assert "unknown method 'foo'" in msg and "hoptm" in msg and "ptm" in msg


@pytest.mark.parametrize("command", ["baseline", "distill"])
def test_ipc_larger_than_the_smallest_class(capsys, workdir, small_ds, command):
    ipc = ["--ipc", "1", "5"] if command == "baseline" else ["--ipc", "5"]
    msg = refused(capsys, workdir, command, "--dataset", f"folder:{small_ds}", *ipc)
    assert "5 is larger than the smallest class" in msg and str(small_ds) in msg
    assert "(4 train images)" in msg and "<= 4" in msg


def test_bad_yaml_file(capsys, workdir):
    bad = workdir / "bad.yaml"
    bad.write_text("eval: [1, 2\nmodel: : :\n")
    msg = refused(capsys, workdir, "baseline", "--config", str(bad))
    assert f"config file {bad} is not valid YAML" in msg


def test_yaml_that_is_not_a_mapping(capsys, workdir):
    bad = workdir / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    msg = refused(capsys, workdir, "distill", "--config", str(bad))
    assert str(bad) in msg and "must hold a mapping" in msg


def test_missing_config_file(capsys, workdir):
    msg = refused(capsys, workdir, "buffer", "--config", str(workdir / "nope.yaml"))
    assert f"config file not found: {workdir / 'nope.yaml'}" in msg and "--config" in msg


def test_missing_include_names_the_included_file(capsys, workdir):
    cfg = workdir / "preset.yaml"
    cfg.write_text("include: base.yaml\nseed: 1\n")
    msg = refused(capsys, workdir, "baseline", "--config", str(cfg))
    assert str(workdir / "base.yaml") in msg


# Bad buffers --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_buffer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset folder, buffer folder): 1 expert x 2 epochs of a width-4 ConvNet on 8x8 images."""
    base = tmp_path_factory.mktemp("tinybuf")
    ds = image_folder(base / "ds", {"a": 6, "b": 6, "c": 6})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDDISTILL_CACHE", str(base / "cache"))
        mp.delenv("MEDDISTILL_DATA", raising=False)
        code = main(
            [
                "buffer",
                "--dataset",
                f"folder:{ds}",
                "--out",
                str(base / "buf"),
                "--experts",
                "1",
                "--epochs",
                "2",
                "buffer.model.width=4",
                "--no-progress",
            ]
        )
    assert code == 0
    return ds, base / "buf"


DISTILL_TINY = [
    TINY_NET,
    "--ipc",
    "1",
    "--iterations",
    "3",
    "match.syn_steps=2",
    "match.expert_epochs=1",
    "match.max_start=1",
    "final_eval=false",
    "--no-progress",
]


def test_tiny_buffer_distils_when_all_is_well(capsys, workdir, tiny_buffer):
    ds, buf = tiny_buffer
    args = ["distill", "--dataset", f"folder:{ds}", "--buffer", str(buf), "--out", "ok"]
    assert main([*args, *DISTILL_TINY]) == 0
    assert (workdir / "ok" / "synthetic" / "synthetic.safetensors").is_file()


def test_dct_set_within_a_storage_budget(capsys, workdir, tiny_buffer):
    import yaml

    ds, buf = tiny_buffer  # 8 x 8 RGB images, 3 classes
    args = ["distill", "--dataset", f"folder:{ds}", "--buffer", str(buf), "--out", "dct"]
    extra = ["match.parameterization=dct", "match.dct_keep=4", "--budget-ipc", "1"]
    assert main([*args, *DISTILL_TINY, *extra]) == 0
    meta = json.loads((workdir / "dct" / "synthetic" / "meta.json").read_text())
    # (8 / 4)^2 = 4 images per class in the values of one: 12 x (3 x 4 x 4) floats + labels
    assert meta["num_images"] == 12 and meta["parameterization"]["keep"] == 4
    assert meta["stored_bytes"] == 12 * 48 * 4 + 12 * 8
    used = yaml.safe_load((workdir / "dct" / "config.yaml").read_text())
    assert used["match"]["ipc"] == 4 and used["match"]["budget_ipc"] == 1
    assert "match.budget_ipc=1: 4 images per class" in (workdir / "dct" / "log.txt").read_text()


def test_latent_set_trains_its_autoencoder_once(capsys, workdir, tiny_buffer):
    ds, buf = tiny_buffer
    latent = ["match.parameterization=latent", "match.latent={width: 4, epochs: 1}"]
    for out in ("lat1", "lat2"):
        args = ["distill", "--dataset", f"folder:{ds}", "--buffer", str(buf), "--out", out]
        assert main([*args, *DISTILL_TINY, *latent]) == 0
    folders = list((workdir / "runs" / "autoencoders").iterdir())
    assert len(folders) == 1  # the second run reused it
    log2 = (workdir / "lat2" / "log.txt").read_text()
    assert "autoencoder: reusing" in log2, log2[-3000:]
    meta = json.loads((workdir / "lat1" / "synthetic" / "meta.json").read_text())
    assert Path(meta["parameterization"]["autoencoder"]).resolve() == folders[0].resolve()
    costs = json.loads((workdir / "lat1" / "costs.json").read_text())
    assert "autoencoder" in costs["stages"]
    msg = refused(capsys, workdir, *args, *DISTILL_TINY, "match.parameterization=latent",
                  "match.latent={downsample: 3}")  # fmt: skip
    assert "match.latent.downsample = 3 must be a power of 2" in msg


def test_buffer_of_another_dataset(capsys, workdir, tiny_buffer):
    ds, buf = tiny_buffer
    other = image_folder(workdir / "other", {"a": 6, "b": 6, "c": 6}, size=12, seed=1)
    msg = refused(
        capsys,
        workdir,
        "distill",
        "--dataset",
        f"folder:{other}",
        "--buffer",
        str(buf),
        "--out",
        "out",
        *DISTILL_TINY,
    )
    assert f"buffer at {buf} was made for dataset folder:{ds}" in msg
    assert f"not folder:{other}" in msg and "meddistill buffer" in msg


def test_buffer_of_another_network(capsys, workdir, tiny_buffer):
    ds, buf = tiny_buffer
    msg = refused(
        capsys,
        workdir,
        "distill",
        "--dataset",
        f"folder:{ds}",
        "--buffer",
        str(buf),
        "--out",
        "out",
        *DISTILL_TINY,
        "model.width=8",
    )
    assert f"buffer at {buf} was made for network" in msg
    assert "width=4" in msg and "width=8" in msg and "meddistill buffer" in msg


def test_missing_buffer_folder(capsys, workdir, tiny_buffer):
    ds, _ = tiny_buffer
    missing = workdir / "nobuf"
    msg = refused(
        capsys,
        workdir,
        "distill",
        "--dataset",
        f"folder:{ds}",
        "--buffer",
        str(missing),
        "--out",
        "out",
        *DISTILL_TINY,
    )
    assert f"no expert buffer at {missing}" in msg and "meddistill buffer" in msg


@pytest.mark.parametrize(
    ("method", "window", "names"),
    [
        ("hoptm", "match.max_start=3", ["reach expert epoch 3", "max_start (now 3)"]),
        ("mtt", "match.expert_epochs=3", ["reach expert epoch 3", "expert_epochs (now 3)"]),
        ("ptm", "match.progressive_end=5", ["reach expert epoch 5"]),
    ],
)
def test_windows_past_the_buffers_last_epoch(capsys, workdir, tiny_buffer, method, window, names):
    ds, buf = tiny_buffer
    msg = refused(
        capsys,
        workdir,
        "distill",
        "--method",
        method,
        "--dataset",
        f"folder:{ds}",
        "--buffer",
        str(buf),
        "--out",
        "out",
        *DISTILL_TINY,
        *(["match.retraining_points=0"] if method == "ptm" else []),
        window,
    )
    assert "the buffer ends at epoch 2" in msg and "make a buffer with more epochs" in msg
    for part in names:
        assert part in msg


def test_windows_checked_before_training_experts(capsys, workdir, small_ds):
    msg = refused(
        capsys,
        workdir,
        "distill",
        "--dataset",
        f"folder:{small_ds}",
        *DISTILL_TINY,
        "experts.epochs=2",
        "match.max_start=3",
    )
    assert "buffer ends at epoch 2" in msg


def test_missing_synthetic_set(capsys, workdir, small_ds):
    missing = workdir / "nosyn"
    msg = refused(capsys, workdir, "export", str(missing), "--out", str(workdir / "x.npz"))
    assert f"synthetic set file missing: {missing / 'synthetic.safetensors'}" in msg
    msg = refused(
        capsys, workdir, "evaluate", "--dataset", f"folder:{small_ds}", "--synthetic", str(missing)
    )
    assert "synthetic set file missing" in msg and "meddistill distill" in msg


# End to end ---------------------------------------------------------------------------------


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_end_to_end_on_an_image_folder(capsys, workdir):
    ds = image_folder(workdir / "ds", {"a": 12, "b": 12, "c": 12}, size=16)
    dataset = f"folder:{ds}"

    # info: 12 images per class, 20 % test and 10 % val -> 9 train, 1 val, 2 test each
    assert main(["info", dataset, "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["class_names"] == ["a", "b", "c"] and facts["image_shape"] == [3, 16, 16]
    assert facts["class_counts"] == {"train": [9, 9, 9], "val": [1, 1, 1], "test": [2, 2, 2]}

    # buffer: 2 experts x 3 epochs, width 4
    buf = workdir / "buf"
    argv = ["buffer", "--dataset", dataset, "--out", str(buf), "--experts", "2", "--epochs", "3"]
    assert main([*argv, "buffer.model.width=4", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["experts"] == 2 and summary["epochs"] == 3
    assert sorted(p.name for p in buf.glob("expert_*.safetensors")) == [
        "expert_000.safetensors",
        "expert_001.safetensors",
    ]
    job = yaml.safe_load((buf / "run" / "config.yaml").read_text())["job"]
    assert job["buffer"]["num_experts"] == 2 and job["buffer"]["model"]["width"] == 4
    assert job["dataset"]["name"] == dataset

    # baseline: random 1-per-class subsets only, 2 nets x 3 epochs
    argv = ["baseline", "--dataset", dataset, "--ipc", "1", "--no-full", TINY_NET]
    assert main([*argv, "eval.epochs=3", "eval.num_nets=2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    run_dir = Path(out.splitlines()[-1].removeprefix("results: ")).parent
    results = json.loads((run_dir / "results.json").read_text())
    assert [(r["set"], r["ipc"]) for r in results["rows"]] == [("random", 1)]
    stats = results["rows"][0]["archs"]["convnet"]
    assert stats["num_nets"] == 2 and 0.0 <= stats["acc_mean"] <= 1.0
    job = yaml.safe_load((run_dir / "config.yaml").read_text())["job"]
    assert job["ipcs"] == [1] and job["full"] is False and job["eval"]["num_nets"] == 2

    # distill with HoP-TM (windows within 0..3) and PTM (progressive, overlap at IPC 2)
    tiny = [TINY_NET, "--ipc", "2", "--iterations", "4", "match.syn_steps=3", "--no-progress"]
    tiny += ["eval.epochs=2", "eval.num_nets=1"]
    per_method = {
        "hoptm": ["match.max_start=2", "match.eval_every=2", "match.eval.epochs=1"],
        "ptm": ["match.progressive_max_steps=3", "match.lr_lr=1e-7"],
    }
    for method, extra in per_method.items():
        out_dir = workdir / f"run-{method}"
        argv = ["distill", "--method", method, "--dataset", dataset, "--buffer", str(buf)]
        assert main([*argv, "--out", str(out_dir), *tiny, *extra]) == 0
        capsys.readouterr()
        syn = out_dir / "synthetic"
        tensors = load_file(str(syn / "synthetic.safetensors"))
        assert tensors["images"].shape == (6, 3, 16, 16)
        assert tensors["labels"].tolist() == [0, 0, 1, 1, 2, 2]
        meta = json.loads((syn / "meta.json").read_text())
        assert meta["method"] == method and meta["dataset"] == dataset
        assert meta["iteration"] == 4 and meta["buffer"] == str(buf)
        assert sorted(p.name for p in (out_dir / "grids").glob("*.png")) == [
            "all.png",
            "class_00_a.png",
            "class_01_b.png",
            "class_02_c.png",
        ]
        results = json.loads((out_dir / "results.json").read_text())
        assert results["method"] == method and results["ipc"] == 2
        assert results["syn_lr"] == pytest.approx(float(tensors["syn_lr"]))
        assert len(results["rows"]) == 1 and results["rows"][0]["archs"]["convnet"]["nets"]

        records = _records(out_dir / "metrics.jsonl")
        steps = [r for r in records if r["stage"] == "distill"]
        assert [r["iteration"] for r in steps] == [0, 1, 2, 3]
        for r in steps:
            for key in ("match_loss", "shape_loss", "mask_utilisation", "overlap_loss", "syn_lr"):
                assert np.isfinite(r[key]), (key, r)
            assert r["syn_lr"] > 0
        assert steps[-1]["syn_lr"] == pytest.approx(results["syn_lr"])
        if method == "hoptm":
            assert all(0 <= r["start"] <= 1 and r["end"] == r["start"] + 2 for r in steps)
            assert all(r["shape_loss"] > 0 and r["overlap_loss"] == 0 for r in steps)
            assert all(0 < r["mask_utilisation"] <= 1 for r in steps)
            assert [r["iteration"] for r in records if r["stage"] == "eval"] == [2]
        else:
            # progressive: start 0, end 1 + round(it / 3 * 2) over 4 iterations, T = 3
            assert [(r["start"], r["end"]) for r in steps] == [(0, 1), (0, 2), (0, 2), (0, 3)]
            assert [r["syn_steps"] for r in steps] == [3, 3, 3, 3]  # capped
            # one foundation and one complement image per class: each class adds 2 k(f, c) - 2
            # with 0 < k <= 1, so the sum over 3 classes lies in (-6, 0)
            assert all(-6 < r["overlap_loss"] < 0 and r["shape_loss"] == 0 for r in steps)
            assert all(r["mask_utilisation"] == 1.0 for r in steps)
        assert [r["stage"] for r in records][-1] == "final_eval"

        config = yaml.safe_load((out_dir / "config.yaml").read_text())
        assert config["method"] == method and config["buffer"] == str(buf)
        assert "experts" not in config  # a given buffer: its buffer.json says how it was made
        assert config["match"]["ipc"] == 2 and config["match"]["iterations"] == 4
        assert config["match"]["syn_steps"] == 3
        # only the method's own knobs: HoP-TM has no schedule option, PTM's is progressive
        assert config["match"].get("schedule") == (None if method == "hoptm" else "progressive")

    # evaluate the HoP-TM set again, with its learned step size
    syn = workdir / "run-hoptm" / "synthetic"
    argv = ["evaluate", "--dataset", dataset, "--synthetic", str(syn), TINY_NET]
    assert main([*argv, "eval.epochs=2", "eval.num_nets=2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    run_dir = Path(out.splitlines()[-1].removeprefix("results: ")).parent
    results = json.loads((run_dir / "results.json").read_text())
    row = results["rows"][0]
    assert row["set"] == "synthetic:hoptm" and row["ipc"] == 2
    assert row["lr"] == pytest.approx(
        float(load_file(str(syn / "synthetic.safetensors"))["syn_lr"])
    )
    assert len(row["archs"]["convnet"]["nets"]) == 2
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["job"]["synthetic"] == str(syn)

    # ... but not against another dataset
    other = image_folder(workdir / "other", {"a": 4, "b": 4, "c": 4}, size=16, seed=5)
    msg = refused(
        capsys, workdir, "evaluate", "--dataset", f"folder:{other}", "--synthetic", str(syn)
    )
    assert f"synthetic set {syn} was made from {dataset}" in msg

    # export: MedMNIST layout, uint8 pixels that invert the normalisation
    npz_path = workdir / "distilled.npz"
    assert main(["export", str(syn), "--format", "npz", "--out", str(npz_path)]) == 0
    assert f"wrote {npz_path}" in capsys.readouterr().out
    with np.load(npz_path) as npz:
        assert sorted(npz.files) == ["train_images", "train_labels"]
        images, labels = npz["train_images"], npz["train_labels"]
    assert images.dtype == np.uint8 and images.shape == (6, 16, 16, 3)
    assert labels.dtype == np.int64 and labels.shape == (6, 1)
    assert labels[:, 0].tolist() == [0, 0, 1, 1, 2, 2]
    meta = json.loads((syn / "meta.json").read_text())
    mean = torch.tensor(meta["normalization"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(meta["normalization"]["std"]).view(1, 3, 1, 1)
    pixels = (load_file(str(syn / "synthetic.safetensors"))["images"] * std + mean).clamp(0, 1)
    want = (pixels * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(images, want)
    assert not list(workdir.rglob("*.tmp"))
