from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from datafakes import class_folders, png
from PIL import Image

from meddistill.data import folder_decode
from meddistill.data.dataset import Normalization
from meddistill.data.folder import load_image_folder
from meddistill.errors import ConfigError, DatasetCorruptError, DatasetNotFoundError

ID3 = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
ID1 = Normalization((0.0,), (1.0,))


def _pixel_levels(split_images: torch.Tensor) -> list[int]:
    """The grey level (0..255) of each solid image, read back from [0, 1] pixels."""
    return [round(float(v) * 255) for v in split_images[:, 0, 0, 0]]


def test_class_folders_sorted_and_decoded(tmp_path: Path) -> None:
    root = class_folders(tmp_path / "ds", {"b": 5, "a": 5, "c": 5})
    ds = load_image_folder(root, normalization=ID3, test_fraction=0.2, val_fraction=0.0)
    assert ds.class_names == ["a", "b", "c"]
    assert ds.image_shape == (3, 8, 8) and ds.train.images.dtype == torch.float32
    assert ds.class_counts("train") == [4, 4, 4] and ds.class_counts("test") == [1, 1, 1]
    assert ds.val is None
    # image i of class k has level 10*k + i: labels and pixels must agree
    for split in (ds.train, ds.test):
        levels = _pixel_levels(split.images)
        assert [lv // 10 for lv in levels] == split.labels.tolist()
    assert ds.info["layout"] == "class-folders" and ds.task == "multi-class"


def test_split_is_deterministic_and_seeded(tmp_path: Path) -> None:
    root = class_folders(tmp_path / "ds", {"a": 10, "b": 6})
    a = load_image_folder(root, normalization=ID3, split_seed=3)
    b = load_image_folder(root, normalization=ID3, split_seed=3)
    assert torch.equal(a.test.images, b.test.images) and torch.equal(a.test.labels, b.test.labels)
    assert a.source_id == b.source_id
    tests = {
        tuple(_pixel_levels(load_image_folder(root, normalization=ID3, split_seed=s).test.images))
        for s in range(4)
    }
    assert len(tests) > 1
    c = load_image_folder(root, normalization=ID3, split_seed=4)
    assert c.source_id != a.source_id  # the split is part of the identity


def test_val_fraction_gives_stratified_val(tmp_path: Path) -> None:
    root = class_folders(tmp_path / "ds", {"a": 10, "b": 10})
    ds = load_image_folder(root, normalization=ID3, test_fraction=0.2, val_fraction=0.1)
    assert ds.class_counts("test") == [2, 2] and ds.class_counts("val") == [1, 1]
    assert ds.class_counts("train") == [7, 7]
    seen = sorted(
        _pixel_levels(ds.train.images)
        + _pixel_levels(ds.val.images)
        + _pixel_levels(ds.test.images)
    )
    assert seen == list(range(10)) + list(range(10, 20))


def test_train_test_subfolders_are_kept(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    class_folders(root / "train", {"x": 4, "y": 3})
    class_folders(root / "test", {"x": 2, "y": 1})
    ds = load_image_folder(root, normalization=ID3, test_fraction=0.5, val_fraction=0.0)
    assert ds.info["layout"] == "train-test-folders" and ds.info["split"] == "official folders"
    assert ds.class_counts("train") == [4, 3] and ds.class_counts("test") == [2, 1]
    assert sorted(_pixel_levels(ds.test.images)) == [0, 1, 10]
    carved = load_image_folder(root, normalization=ID3, val_fraction=0.34)
    assert carved.class_counts("val") == [1, 1] and carved.class_counts("train") == [3, 2]
    (root / "test" / "z").mkdir()
    png(root / "test" / "z" / "z.png", 5)
    with pytest.raises(DatasetCorruptError, match="class folders z"):
        load_image_folder(root)


def test_busi_masks_ignored(tmp_path: Path) -> None:
    root = tmp_path / "busi"
    for cls, level in (("benign", 10), ("malignant", 20)):
        for i in range(3):
            png(root / cls / f"{cls} ({i}).png", level, mode="L")
            png(root / cls / f"{cls} ({i})_mask.png", 255, mode="L")
            png(root / cls / f"{cls} ({i})_mask_1.png", 255, mode="L")
    ds = load_image_folder(root, normalization=ID3, test_fraction=0.34)
    assert len(ds.train) + len(ds.test) == 6
    assert set(_pixel_levels(torch.cat([ds.train.images, ds.test.images]))) == {10, 20}


def test_covid_images_subfolder_used(tmp_path: Path) -> None:
    root = tmp_path / "covid"
    for cls, level in (("COVID", 30), ("Normal", 40)):
        for i in range(3):
            png(root / cls / "images" / f"{cls}-{i}.png", level, mode="L")
            png(root / cls / "masks" / f"{cls}-{i}.png", 255, mode="L")
    (root / "COVID.metadata.xlsx").write_bytes(b"top-level files are not class folders")
    ds = load_image_folder(root, normalization=ID1, channels=1, test_fraction=0.34)
    assert ds.class_names == ["COVID", "Normal"] and ds.image_shape == (1, 8, 8)
    assert set(_pixel_levels(torch.cat([ds.train.images, ds.test.images]))) == {30, 40}


def test_non_image_and_unreadable_files_reported(tmp_path: Path) -> None:
    root = class_folders(tmp_path / "ds", {"a": 3, "b": 3})
    (root / "a" / "notes.txt").write_text("hello")
    (root / "a" / ".DS_Store").write_bytes(b"ignored")
    (root / "a" / "Thumbs.db").write_bytes(b"ignored")
    with pytest.raises(DatasetCorruptError) as err:
        load_image_folder(root)
    msg = str(err.value)
    assert "1 file(s)" in msg and str(root / "a" / "notes.txt") in msg
    (root / "a" / "notes.txt").unlink()
    for i in range(7):
        (root / "b" / f"broken{i}.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetCorruptError) as err:
        load_image_folder(root)
    msg = str(err.value)
    assert "7 file(s) cannot be read" in msg and "and 2 more" in msg
    assert str(root / "b" / "broken0.png") in msg


def test_empty_class_folder_named(tmp_path: Path) -> None:
    root = class_folders(tmp_path / "ds", {"a": 3})
    (root / "empty").mkdir()
    with pytest.raises(DatasetCorruptError, match="holds no images") as err:
        load_image_folder(root)
    assert str(root / "empty") in str(err.value)


def test_missing_or_flat_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "nowhere")
    flat = tmp_path / "flat"
    png(flat / "x.png", 1)
    with pytest.raises(DatasetNotFoundError, match="no class folders"):
        load_image_folder(flat)


def _ham(root: Path) -> Path:
    dx = {"ISIC_0001": "nv", "ISIC_0002": "mel", "ISIC_0003": "nv", "ISIC_0004": "bkl"}
    dx |= {"ISIC_0005": "mel", "ISIC_0006": "bkl"}
    levels = {"nv": 10, "mel": 20, "bkl": 30}
    for i, (iid, lab) in enumerate(sorted(dx.items())):
        part = "HAM10000_images_part_1" if i < 3 else "HAM10000_images_part_2"
        png(root / part / f"{iid}.jpg", levels[lab] + i % 3, mode="L")
    lines = ["lesion_id,image_id,dx,dx_type"] + [
        f"HAM_{i},{iid},{lab},histo" for i, (iid, lab) in enumerate(dx.items())
    ]
    (root / "HAM10000_metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def test_ham_style_csv(tmp_path: Path) -> None:
    root = _ham(tmp_path / "ham")
    png(root / "HAM10000_images_part_1" / "ISIC_9999.jpg", 0)  # not in the csv: ignored
    ds = load_image_folder(
        root, labels_csv="HAM10000_metadata.csv", normalization=ID3, test_fraction=0.5
    )
    assert ds.class_names == ["bkl", "mel", "nv"] and ds.info["layout"] == "labels-csv"
    assert ds.class_counts("train") == [1, 1, 1] and ds.class_counts("test") == [1, 1, 1]
    for split in (ds.train, ds.test):
        levels = _pixel_levels(split.images)
        # grey level 10/20/30 (+0..2) -> nv/mel/bkl -> index 2/1/0
        assert [{1: 2, 2: 1, 3: 0}[lv // 10] for lv in levels] == split.labels.tolist()


def test_ham_csv_missing_image_and_columns(tmp_path: Path) -> None:
    root = _ham(tmp_path / "ham")
    (root / "HAM10000_images_part_2" / "ISIC_0005.jpg").unlink()
    with pytest.raises(DatasetNotFoundError, match="ISIC_0005"):
        load_image_folder(root, labels_csv="HAM10000_metadata.csv")
    with pytest.raises(ConfigError, match="csv_label_column='diagnosis'"):
        load_image_folder(
            root, labels_csv=root / "HAM10000_metadata.csv", csv_label_column="diagnosis"
        )
    with pytest.raises(DatasetNotFoundError, match="labels_csv"):
        load_image_folder(root, labels_csv="nope.csv")


def test_ham_duplicate_copies_ignored(tmp_path: Path) -> None:
    root = _ham(tmp_path / "ham")
    dup = root / "ham10000_images_part_1"  # Kaggle ships lower-case duplicate folders
    shutil.copytree(root / "HAM10000_images_part_1", dup)
    ds = load_image_folder(root, labels_csv="HAM10000_metadata.csv", test_fraction=0.5)
    assert len(ds.train) + len(ds.test) == 6 and ds.info["duplicates_ignored"] == 3
    png(dup / "ISIC_0001.jpg", 99, size=9)  # a different file under the same id
    with pytest.raises(DatasetCorruptError, match="ISIC_0001 matches two different files"):
        load_image_folder(root, labels_csv="HAM10000_metadata.csv")


def test_cache_hit_skips_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = class_folders(tmp_path / "ds", {"a": 4, "b": 4}, size=12)
    first = load_image_folder(root, size=6)
    assert first.info["cache"] == "miss"
    monkeypatch.setattr(folder_decode, "decode_image", lambda *a: pytest.fail("decoded again"))
    second = load_image_folder(root, size=6)
    assert second.info["cache"] == "hit"
    assert torch.equal(first.train.images, second.train.images)
    assert first.normalization == second.normalization and first.source_id == second.source_id
    monkeypatch.undo()
    f = root / "a" / "a_0.png"
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert load_image_folder(root, size=6).info["cache"] == "miss"  # a touched file re-decodes
    assert load_image_folder(root, size=5).info["cache"] == "miss"  # so does another option
    assert load_image_folder(root, size=6).info["cache"] == "hit"
    assert load_image_folder(root, size=6, use_cache=False).info["cache"] == "off"


def test_corrupt_cache_is_rebuilt(tmp_path: Path, isolated_cache: Path) -> None:
    root = class_folders(tmp_path / "ds", {"a": 3, "b": 3})
    first = load_image_folder(root)
    (tensors,) = (isolated_cache / "folders").glob("*.safetensors")
    tensors.write_bytes(b"garbage")
    again = load_image_folder(root)
    assert again.info["cache"] == "miss" and torch.equal(again.train.images, first.train.images)


def test_source_id_survives_a_copy(tmp_path: Path) -> None:
    root = class_folders(tmp_path / "ds", {"a": 3, "b": 3})
    copy = tmp_path / "elsewhere"
    shutil.copytree(root, copy)
    a, b = load_image_folder(root), load_image_folder(copy)
    assert a.source_id == b.source_id and b.info["cache"] == "miss"
    assert load_image_folder(root, channels=1).source_id != a.source_id


def test_resize_uses_pillow_resample(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    rng = np.random.default_rng(0)
    arrays = []
    for cls in ("a", "b"):
        for i in range(2):
            arr = rng.integers(0, 256, size=(10, 14, 3), dtype=np.uint8)  # not square
            (root / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / cls / f"{i}.png")
            arrays.append(arr)
    for resample, mode in (
        ("bicubic", Image.Resampling.BICUBIC),
        ("nearest", Image.Resampling.NEAREST),
    ):
        ds = load_image_folder(
            root, size=7, resample=resample, normalization=ID3, test_fraction=0.5
        )
        want = np.asarray(Image.fromarray(arrays[0]).resize((7, 7), mode))
        got = torch.cat([ds.train.images, ds.test.images])
        got_u8 = (got * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        assert any(np.array_equal(g, want) for g in got_u8)
        assert ds.image_shape == (3, 7, 7)
    with pytest.raises(ConfigError, match="different sizes"):
        png(root / "a" / "small.png", 3, size=4)
        load_image_folder(root)
    with pytest.raises(ConfigError, match="resample='cubic'"):
        load_image_folder(root, size=7, resample="cubic")


def test_16bit_grey_scaled_not_clipped(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for cls, value in (("a", 65535), ("b", 257 * 100)):
        (root / cls).mkdir(parents=True)
        Image.fromarray(np.full((4, 4), value, np.uint16)).save(root / cls / "x.png")
        png(root / cls / "y.png", 7, size=4, mode="L")
    ds = load_image_folder(root, channels=1, normalization=ID1, test_fraction=0.5)
    levels = sorted(_pixel_levels(torch.cat([ds.train.images, ds.test.images])))
    assert levels == [7, 7, 100, 255]


def test_normalisation_from_train_split_hand_computed(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    # train: per class one black and one white image; test: grey 51
    for cls in ("a", "b"):
        png(root / "train" / cls / "0.png", 0, size=2, mode="L")
        png(root / "train" / cls / "1.png", 255, size=2, mode="L")
        png(root / "test" / cls / "0.png", 51, size=2, mode="L")
    ds = load_image_folder(root, channels=1, val_fraction=0.0)
    n = 4 * 4
    std = (0.25 * n / (n - 1)) ** 0.5
    assert ds.normalization.mean == pytest.approx((0.5,))
    assert ds.normalization.std == pytest.approx((std,))
    assert torch.allclose(ds.test.images, torch.full((2, 1, 2, 2), (0.2 - 0.5) / std))
    imagenet = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    rgb = load_image_folder(root, normalization=imagenet)
    assert rgb.normalization == imagenet
    want = torch.tensor([(0.2 - m) / s for m, s in zip(imagenet.mean, imagenet.std, strict=True)])
    assert torch.allclose(rgb.test.images[0, :, 0, 0], want)


def test_a_folder_without_val_gets_one_carved_from_train_by_default(tmp_path: Path) -> None:
    """Every choice is made on val: 10 % of each class (rounded) goes to val, seeded and
    stratified; a class too small to give one image leaves no val split at all."""
    root = class_folders(tmp_path / "ds", {"a": 20, "b": 10})
    ds = load_image_folder(root, normalization=ID3)
    assert ds.class_counts("test") == [4, 2] and ds.class_counts("val") == [2, 1]
    assert ds.class_counts("train") == [14, 7]
    again = load_image_folder(root, normalization=ID3)
    assert torch.equal(again.val.images, ds.val.images)  # seeded
    levels = _pixel_levels(torch.cat([ds.train.images, ds.val.images, ds.test.images]))
    assert sorted(levels) == sorted(list(range(20)) + list(range(10, 20)))  # a partition
    tiny = class_folders(tmp_path / "tiny", {"a": 3, "b": 3})
    assert load_image_folder(tiny, normalization=ID3).val is None
