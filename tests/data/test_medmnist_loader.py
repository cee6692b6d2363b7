from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datafakes import fake_medmnist, write_npz

from meddistill import utils
from meddistill.data import medmnist as mm
from meddistill.data.dataset import Normalization
from meddistill.errors import ConfigError, DatasetCorruptError, DatasetNotFoundError

IDENTITY1 = Normalization((0.0,), (1.0,))
IDENTITY3 = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def test_fake_pathmnist_loads_with_md5_override(tmp_path: Path) -> None:
    path, md5 = fake_medmnist(tmp_path)
    ds = mm.load_medmnist("pathmnist", root=tmp_path, verify_md5=md5)
    assert ds.train.images.shape == (6, 3, 28, 28)
    assert ds.val.images.shape == (3, 3, 28, 28)
    assert ds.test.images.shape == (4, 3, 28, 28)
    assert ds.train.images.dtype == torch.float32
    assert ds.train.labels.dtype == torch.int64 and ds.train.labels.dim() == 1
    assert ds.train.labels.tolist() == [0, 1, 2, 3, 4, 5]
    assert ds.class_names[0] == "adipose" and ds.num_classes == 9
    assert ds.source_id == md5
    assert ds.task == "multi-class"
    assert ds.info["format"] == "medmnist" and ds.info["size"] == 28
    assert ds.info["path"] == str(path.resolve())


def test_images_are_nhwc_transposed_and_scaled(tmp_path: Path) -> None:
    path, md5 = fake_medmnist(tmp_path)
    raw = np.load(path)["train_images"]
    ds = mm.load_medmnist("pathmnist", root=tmp_path, verify_md5=md5, normalization=IDENTITY3)
    want = torch.from_numpy(raw).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(ds.train.images, want)


def test_official_md5_mismatch_is_corrupt(tmp_path: Path) -> None:
    path, _ = fake_medmnist(tmp_path)
    with pytest.raises(DatasetCorruptError) as err:
        mm.load_medmnist("pathmnist", root=tmp_path)
    msg = str(err.value)
    assert str(path.resolve()) in msg and "a8b06965200029087d5bd730944a56c1" in msg
    assert "--download" in msg


def test_md5_override_mismatch_and_skip(tmp_path: Path) -> None:
    _, md5 = fake_medmnist(tmp_path)
    with pytest.raises(DatasetCorruptError, match="md5"):
        mm.load_medmnist("pathmnist", root=tmp_path, verify_md5="0" * 32)
    ds = mm.load_medmnist("pathmnist", root=tmp_path, verify_md5=False)
    assert ds.source_id == md5 and ds.info["md5_checked"] is False


def test_second_load_skips_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, md5 = fake_medmnist(tmp_path)
    calls: list[str] = []
    real = utils.md5_file

    def counting(p: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
        calls.append(str(p))
        if len(calls) > 1:
            raise AssertionError("md5 computed twice")
        return real(p, chunk)

    monkeypatch.setattr(utils, "md5_file", counting)
    first = mm.load_medmnist("pathmnist", root=tmp_path, verify_md5=md5)
    second = mm.load_medmnist("pathmnist", root=tmp_path, verify_md5=md5)
    assert len(calls) == 1
    assert first.info["md5_remembered"] is False and second.info["md5_remembered"] is True
    assert second.source_id == md5
    # a changed mtime invalidates the memory: hashing is needed (and here refused)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(AssertionError, match="twice"):
        mm.load_medmnist("pathmnist", root=tmp_path, verify_md5=md5)


def test_memory_lives_in_cache_not_data_folder(tmp_path: Path, isolated_cache: Path) -> None:
    data = tmp_path / "data"
    _, md5 = fake_medmnist(data)
    before = sorted(os.listdir(data))
    mm.load_medmnist("pathmnist", root=data, verify_md5=md5)
    assert sorted(os.listdir(data)) == before
    assert len(list((isolated_cache / "md5").glob("*.json"))) == 1


def test_remembered_wrong_md5_still_fails(tmp_path: Path) -> None:
    _, md5 = fake_medmnist(tmp_path)
    mm.load_medmnist("pathmnist", root=tmp_path, verify_md5=False)
    with pytest.raises(DatasetCorruptError):
        mm.load_medmnist("pathmnist", root=tmp_path, verify_md5="f" * 32)


@pytest.mark.parametrize("keep", [0.5, 0.1])
def test_truncated_npz_is_corrupt(tmp_path: Path, keep: float) -> None:
    path, _ = fake_medmnist(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(DatasetCorruptError) as err:
        mm.load_medmnist("pathmnist", root=tmp_path, verify_md5=False)
    assert str(path.resolve()) in str(err.value) and "--download" in str(err.value)


def test_garbage_file_is_corrupt(tmp_path: Path) -> None:
    (tmp_path / "pathmnist.npz").write_bytes(b"this is not a zip file at all")
    with pytest.raises(DatasetCorruptError, match="cannot be read as an npz"):
        mm.load_medmnist("pathmnist", root=tmp_path, verify_md5=False)


def test_missing_keys_are_named(tmp_path: Path) -> None:
    write_npz(tmp_path / "pathmnist.npz", {"train_images": np.zeros((1, 28, 28, 3), np.uint8)})
    with pytest.raises(DatasetCorruptError, match="lacks the keys train_labels"):
        mm.load_medmnist("pathmnist", root=tmp_path, verify_md5=False)


def test_wrong_shape_is_corrupt(tmp_path: Path) -> None:
    fake_medmnist(tmp_path, channels=1)  # grey images under an RGB name
    with pytest.raises(DatasetCorruptError, match=r"expected \(N, 28, 28, 3\)"):
        mm.load_medmnist("pathmnist", root=tmp_path, verify_md5=False)


def test_label_out_of_range_is_corrupt(tmp_path: Path) -> None:
    fake_medmnist(tmp_path, name="breastmnist", channels=1, n_classes=5)  # labels up to 4
    with pytest.raises(DatasetCorruptError, match="2 classes"):
        mm.load_medmnist("breastmnist", root=tmp_path, verify_md5=False)


def test_multilabel_labels_in_single_label_file(tmp_path: Path) -> None:
    fake_medmnist(tmp_path, name="pneumoniamnist", channels=1, n_classes=2, label_cols=14)
    with pytest.raises(DatasetCorruptError, match="multi-label"):
        mm.load_medmnist("pneumoniamnist", root=tmp_path, verify_md5=False)


def test_chestmnist_refused(tmp_path: Path) -> None:
    fake_medmnist(tmp_path, name="chestmnist", channels=1, n_classes=2, label_cols=14)
    with pytest.raises(ConfigError, match="multi-label") as err:
        mm.load_medmnist("chestmnist", root=tmp_path, verify_md5=False)
    assert "single-label" in str(err.value)


def test_missing_file_message(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        mm.load_medmnist("dermamnist", root=tmp_path, size=64)
    msg = str(err.value)
    assert "dermamnist_64.npz" in msg
    assert str(tmp_path) in msg and str(tmp_path / "medmnist") in msg
    assert "--download" in msg
    assert "https://zenodo.org/records/10519652/files/dermamnist_64.npz" in msg


def test_root_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_root, arg_root = tmp_path / "env", tmp_path / "arg"
    _, md5_env = fake_medmnist(env_root / "medmnist", seed=1)  # found in <root>/medmnist
    _, md5_arg = fake_medmnist(arg_root, seed=2)
    monkeypatch.setenv("MEDDISTILL_DATA", str(env_root))
    assert mm.load_medmnist("pathmnist", verify_md5=False).source_id == md5_env
    assert mm.load_medmnist("pathmnist", root=arg_root, verify_md5=False).source_id == md5_arg
    monkeypatch.delenv("MEDDISTILL_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert mm.search_dirs(None) == [tmp_path / "home" / ".medmnist"]


def test_file_names_and_sizes(tmp_path: Path) -> None:
    assert mm.file_name("pathmnist", 28) == "pathmnist.npz"
    assert mm.file_name("PathMNIST", 224) == "pathmnist_224.npz"
    assert mm.medmnist_sizes("organmnist3d") == [28, 64]
    with pytest.raises(ConfigError, match="available sizes: 28, 64"):
        mm.load_medmnist("organmnist3d", root=tmp_path, size=128)
    _, md5 = fake_medmnist(tmp_path, size=64)
    assert (tmp_path / "pathmnist_64.npz").is_file()
    ds = mm.load_medmnist("pathmnist", root=tmp_path, size=64, verify_md5=md5)
    assert ds.image_shape == (3, 64, 64) and ds.info["size"] == 64


def test_3d_uint8_volumes(tmp_path: Path) -> None:
    path, md5 = fake_medmnist(tmp_path, name="organmnist3d", channels=1, n_classes=11, d3=True)
    ds = mm.load_medmnist("organmnist3d", root=tmp_path, verify_md5=md5, normalization=IDENTITY1)
    assert ds.train.images.shape == (6, 1, 28, 28, 28) and ds.spatial_dims == 3
    raw = np.load(path)["test_images"]
    assert torch.equal(ds.test.images[:, 0], torch.from_numpy(raw).float() / 255)


def test_3d_float_volumes_in_unit_range_kept(tmp_path: Path) -> None:
    path, md5 = fake_medmnist(
        tmp_path, name="organmnist3d", channels=1, n_classes=11, d3=True, dtype="float64"
    )
    ds = mm.load_medmnist("organmnist3d", root=tmp_path, verify_md5=md5, normalization=IDENTITY1)
    raw = np.load(path)["train_images"]
    assert torch.allclose(ds.train.images[:, 0], torch.from_numpy(raw).float())
    assert float(ds.train.images.max()) <= 1.0


def test_3d_float_volumes_in_255_range_scaled(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 3), ("val", 2), ("test", 2)):
        arrays[f"{split}_images"] = rng.random((n, 28, 28, 28)) * 255.0
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1).astype(np.uint8)
    md5 = write_npz(tmp_path / "nodulemnist3d.npz", arrays)
    ds = mm.load_medmnist("nodulemnist3d", root=tmp_path, verify_md5=md5, normalization=IDENTITY1)
    want = torch.from_numpy(arrays["val_images"]).float() / 255
    assert torch.allclose(ds.val.images[:, 0], want, atol=1e-6)
    arrays["test_images"][0, 0, 0, 0] = 300.0
    md5 = write_npz(tmp_path / "nodulemnist3d.npz", arrays)
    with pytest.raises(DatasetCorruptError, match=r"neither \[0, 1\] nor \[0, 255\]"):
        mm.load_medmnist("nodulemnist3d", root=tmp_path, verify_md5=md5)


def test_resize_2d_bicubic_and_3d_trilinear(tmp_path: Path) -> None:
    path, md5 = fake_medmnist(tmp_path)
    ds = mm.load_medmnist(
        "pathmnist", root=tmp_path, verify_md5=md5, resize_to=32, normalization=IDENTITY3
    )
    assert ds.image_shape == (3, 32, 32) and ds.info["resize_mode"] == "bicubic"
    raw = torch.from_numpy(np.load(path)["train_images"]).permute(0, 3, 1, 2).float() / 255
    want = F.interpolate(raw, size=(32, 32), mode="bicubic", align_corners=False).clamp(0, 1)
    assert torch.allclose(ds.train.images, want, atol=1e-6)
    _, md5 = fake_medmnist(tmp_path, name="organmnist3d", channels=1, n_classes=11, d3=True)
    vol = mm.load_medmnist("organmnist3d", root=tmp_path, verify_md5=md5, resize_to=16)
    assert vol.image_shape == (1, 16, 16, 16) and vol.info["resize_mode"] == "trilinear"


def test_normalisation_from_train_split_hand_computed(tmp_path: Path) -> None:
    train = np.zeros((2, 28, 28), np.uint8)
    train[1] = 255  # one black and one white image: mean 0.5
    arrays = {
        "train_images": train,
        "train_labels": np.array([[0], [1]], np.uint8),
        "val_images": np.full((1, 28, 28), 255, np.uint8),
        "val_labels": np.array([[1]], np.uint8),
        "test_images": np.zeros((1, 28, 28), np.uint8),
        "test_labels": np.array([[0]], np.uint8),
    }
    md5 = write_npz(tmp_path / "breastmnist.npz", arrays)
    ds = mm.load_medmnist("breastmnist", root=tmp_path, verify_md5=md5)
    n = 2 * 28 * 28
    std = math.sqrt(0.25 * n / (n - 1))  # unbiased std of n/2 zeros and n/2 ones
    assert ds.normalization.mean == pytest.approx((0.5,), abs=1e-12)
    assert ds.normalization.std == pytest.approx((std,), rel=1e-12)
    assert torch.allclose(ds.val.images, torch.full((1, 1, 28, 28), 0.5 / std))
    assert torch.allclose(ds.test.images, torch.full((1, 1, 28, 28), -0.5 / std))
    assert ds.task == "binary-class"


def test_explicit_hoptm_normalisation(tmp_path: Path) -> None:
    path, md5 = fake_medmnist(tmp_path)
    hoptm = Normalization((0.741, 0.533, 0.706), (0.402, 0.821, 0.407))
    ds = mm.load_medmnist("pathmnist", root=tmp_path, verify_md5=md5, normalization=hoptm)
    raw = np.load(path)["train_images"][0, 0, 0]  # pixel (0, 0) of image 0, RGB
    want = [(raw[c] / 255 - hoptm.mean[c]) / hoptm.std[c] for c in range(3)]
    assert ds.train.images[0, :, 0, 0].tolist() == pytest.approx(want, rel=1e-5)
    assert ds.normalization == hoptm
    with pytest.raises(ConfigError, match="3 channels"):
        mm.load_medmnist(
            "pathmnist", root=tmp_path, verify_md5=md5, channels=1, normalization=hoptm
        )


def test_ordinal_task_accepted_and_channel_conversion(tmp_path: Path) -> None:
    _, md5 = fake_medmnist(tmp_path, name="retinamnist", n_classes=5)
    ds = mm.load_medmnist("retinamnist", root=tmp_path, verify_md5=md5)
    assert ds.task == "ordinal-regression" and ds.info["trained_as"] == "multi-class"
    assert ds.num_classes == 5
    _, md5 = fake_medmnist(tmp_path, name="octmnist", channels=1, n_classes=4)
    rgb = mm.load_medmnist(
        "octmnist", root=tmp_path, verify_md5=md5, channels=3, normalization=IDENTITY3
    )
    assert rgb.image_shape == (3, 28, 28)
    assert torch.equal(rgb.train.images[:, 0], rgb.train.images[:, 2])


def test_download_fetches_and_remembers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, md5 = fake_medmnist(tmp_path / "server")
    monkeypatch.setattr(mm, "file_facts", lambda name, size: {"url": src.as_uri(), "md5": md5})
    monkeypatch.setattr(utils, "md5_file", lambda *a, **k: pytest.fail("md5 recomputed"))
    root = tmp_path / "root"
    ds = mm.load_medmnist("pathmnist", root=root, download=True)
    assert (root / "pathmnist.npz").read_bytes() == src.read_bytes()
    assert ds.source_id == md5 and ds.info["md5_checked"] is True
    again = mm.load_medmnist("pathmnist", root=root)  # remembered from the download
    assert again.info["md5_remembered"] is True


def test_download_replaces_damaged_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, md5 = fake_medmnist(tmp_path / "server")
    monkeypatch.setattr(mm, "file_facts", lambda name, size: {"url": src.as_uri(), "md5": md5})
    root = tmp_path / "root"
    root.mkdir()
    (root / "pathmnist.npz").write_bytes(b"damaged")
    with pytest.raises(DatasetCorruptError):
        mm.load_medmnist("pathmnist", root=root)
    ds = mm.load_medmnist("pathmnist", root=root, download=True)
    assert ds.source_id == md5 and (root / "pathmnist.npz").read_bytes() == src.read_bytes()
