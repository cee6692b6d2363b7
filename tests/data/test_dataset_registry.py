from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
from datafakes import class_folders, fake_medmnist

from meddistill.data import registry
from meddistill.data.dataset import Normalization
from meddistill.data.registry import (
    IMAGENET,
    dataset_names,
    default_dsa_strategy,
    describe_known,
    load_dataset,
)
from meddistill.errors import ConfigError, DatasetCorruptError, DatasetNotFoundError

JSON = json.loads(
    resources.files("meddistill").joinpath("resources/medmnist_info.json").read_text()
)


def test_names_cover_json_and_presets() -> None:
    names = dataset_names()
    assert set(JSON) <= set(names)
    assert {"busi", "covid19-cxr", "ham10000"} <= set(names)
    assert len(names) == len(set(names)) == len(JSON) + 3


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ConfigError) as err:
        load_dataset("cifar10")
    msg = str(err.value)
    assert "unknown dataset 'cifar10'" in msg and "pathmnist" in msg and "busi" in msg
    assert "folder:" in msg
    for fn in (describe_known, default_dsa_strategy):
        with pytest.raises(ConfigError, match="unknown dataset"):
            fn("cifar10")


def test_describe_medmnist_without_a_file() -> None:
    d = describe_known("BloodMNIST")
    assert d["n_samples"] == {"train": 11959, "val": 1712, "test": 3421}
    assert d["n_classes"] == 8 and d["channels"] == 3 and d["task"] == "multi-class"
    assert d["sizes"] == [28, 64, 128, 224] and d["supported"] is True
    assert d["files"]["28"]["file"] == "bloodmnist.npz"
    assert d["files"]["64"]["url"].endswith("bloodmnist_64.npz?download=1")
    assert d["files"]["28"]["md5"] == JSON["bloodmnist"]["files"]["28"]["md5"]
    vol = describe_known("organmnist3d")
    assert vol["spatial_dims"] == 3 and vol["sizes"] == [28, 64]
    assert describe_known("chestmnist")["supported"] is False


def test_describe_presets() -> None:
    busi = describe_known("busi")
    assert busi["class_names"] == ["benign", "malignant", "normal"]
    assert busi["default_size"] == 112 and busi["split"].startswith("stratified, 20% of each class to test and 10 % to val")
    covid = describe_known("covid19-cxr")
    assert covid["n_classes"] == 4 and covid["normalization"] == IMAGENET.to_dict()
    assert describe_known("ham10000")["options"]["labels_csv"] == "HAM10000_metadata.csv"


def test_dsa_strategy_per_dataset() -> None:
    full = "color_crop_cutout_flip_scale_rotate"
    no_flip = "color_crop_cutout_scale_rotate"
    for name in ("pneumoniamnist", "chestmnist", "covid19-cxr", "organamnist", "organmnist3d"):
        assert default_dsa_strategy(name) == no_flip
    for name in ("pathmnist", "bloodmnist", "dermamnist", "breastmnist", "busi", "ham10000"):
        assert default_dsa_strategy(name) == full
    assert default_dsa_strategy("folder:/x") == full


def test_load_medmnist_through_registry(tmp_path: Path) -> None:
    _, md5 = fake_medmnist(tmp_path / "medmnist", name="bloodmnist", n_classes=8)
    ds = load_dataset("bloodmnist", root=tmp_path, verify_md5=md5, resize_to=32)
    assert ds.image_shape == (3, 32, 32) and ds.source_id == md5 and ds.name == "bloodmnist"
    with pytest.raises(ConfigError, match="test_fraction do not apply"):
        load_dataset("bloodmnist", root=tmp_path, test_fraction=0.3)


def test_preset_root_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counts = {"benign": 5, "malignant": 5, "normal": 5}
    data = tmp_path / "data"
    class_folders(data / "busi", counts, size=16)
    ds = load_dataset("busi", root=data, size=8)  # root/busi
    assert ds.name == "busi" and ds.image_shape == (3, 8, 8) and ds.num_classes == 3
    assert ds.class_counts("test") == [1, 1, 1]
    direct = load_dataset("busi", root=data / "busi", size=8)  # root is the dataset itself
    assert direct.source_id == ds.source_id
    monkeypatch.setenv("MEDDISTILL_DATA", str(data))
    assert load_dataset("busi", resize_to=8).source_id == ds.source_id
    assert load_dataset("busi").image_shape == (3, 112, 112)  # the preset's default side
    monkeypatch.setenv("MEDDISTILL_DATA", str(tmp_path / "empty"))
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("busi")
    msg = str(err.value)
    assert str(tmp_path / "empty" / "busi") in msg and "scholar.cu.edu.eg" in msg


def test_preset_checks_class_names(tmp_path: Path) -> None:
    class_folders(tmp_path / "busi", {"benign": 2, "cancer": 2}, size=4)
    with pytest.raises(DatasetCorruptError, match="should have benign, malignant, normal"):
        load_dataset("busi", root=tmp_path)


def test_covid_preset_uses_imagenet_stats(tmp_path: Path) -> None:
    counts = {"COVID": 3, "Lung_Opacity": 3, "Normal": 3, "Viral Pneumonia": 3}
    class_folders(tmp_path / "COVID-19_Radiography_Dataset", counts, size=8)
    ds = load_dataset("covid19-cxr", root=tmp_path, size=8)
    assert ds.normalization == IMAGENET and ds.num_classes == 4
    grey = load_dataset("covid19-cxr", root=tmp_path, size=8, channels=1)
    assert len(grey.normalization.mean) == 1 and grey.info["normalization_source"] == "train split"
    mine = Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert (
        load_dataset("covid19-cxr", root=tmp_path, size=8, normalization=mine).normalization == mine
    )


def test_generic_folder_and_size_conflict(tmp_path: Path) -> None:
    root = class_folders(tmp_path / "imgs", {"x": 3, "y": 3}, size=8)
    ds = load_dataset(f"folder:{root}", split_seed=1)
    assert ds.image_shape == (3, 8, 8) and ds.name == f"folder:{root.resolve()}"
    assert load_dataset("folder:", root=root, channels=1).channels == 1
    with pytest.raises(ConfigError, match="give one"):
        load_dataset(f"folder:{root}", size=8, resize_to=6)
    with pytest.raises(ConfigError, match="verify_md5 do not apply"):
        load_dataset(f"folder:{root}", verify_md5=False)
    with pytest.raises(ConfigError, match="needs a path"):
        load_dataset("folder:")


def test_preset_folder_aliases_documented() -> None:
    assert "Dataset_BUSI_with_GT" in registry.PRESETS["busi"].aliases
    assert registry.folder_search_dirs(registry.PRESETS["busi"], "/r")[-1] == Path("/r")
