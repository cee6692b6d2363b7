"""Issue 9: hostile image folders and labels CSVs.

Root causes: (1) symbolic links that loop or dangle gave an OSError from deep inside the scan;
(2) links that reach a folder or file twice (a class folder linked to the dataset root or its
parent, two class folders that are one folder, one image under two classes or in train and
test) silently became extra classes of duplicated images: label noise and a train/test leak;
(3) a tiny PNG whose header promises 144 megapixels was decoded (0.7 GB); (4) a class folder
whose name is not UTF-8 crashed `report` long after loading; (5) a labels CSV that is not
UTF-8, has ragged rows or names paths out of the dataset root was half-read.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from faulthelpers import hostile
from imagefolders import image_folder
from PIL import Image

from meddistill.data.folder_decode import MAX_IMAGE_PIXELS

HAM_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")


def _info(capsys: pytest.CaptureFixture[str], workdir: Path, root: Path, *contains: str) -> str:
    """`meddistill info folder:<root>` must be refused with a message holding `contains`."""
    return hostile(capsys, workdir, ["info", f"folder:{root}"], contains=contains)


def _ham(capsys, workdir: Path, csv_text: bytes | str, *contains: str) -> str:
    """A tiny HAM10000 layout with `csv_text` as its metadata; `baseline` must refuse it."""
    root = workdir / "data" / "ham10000"
    pixels = image_folder(workdir / "px", {"x": len(HAM_CLASSES) * 2})
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(f"{c}_{k}" for c in HAM_CLASSES for k in range(2)):
        shutil.copy(pixels / "x" / f"{i}.png", root / "images" / f"{name}.jpg")
    raw = csv_text if isinstance(csv_text, bytes) else csv_text.encode()
    (root / "HAM10000_metadata.csv").write_bytes(raw)
    argv = ["baseline", "--dataset", "ham10000", "--data-root", str(workdir / "data")]
    return hostile(capsys, workdir, [*argv, "--no-progress", "--device", "cpu"], contains=contains)


def _ham_rows() -> str:
    return "image_id,dx\n" + "".join(f"{c}_{k},{c}\n" for c in HAM_CLASSES for k in range(2))


# (1) links that loop or lead nowhere ----------------------------------------------------------


def test_image_linked_to_itself(capsys, workdir: Path) -> None:
    root = image_folder(workdir / "ds", {"a": 4, "b": 4})
    (root / "a" / "loop.png").symlink_to("loop.png")
    _info(capsys, workdir, root, str(root / "a" / "loop.png"), "symbolic link", "fix or remove")


def test_dangling_image_links_deep_and_shallow(capsys, workdir: Path) -> None:
    root = image_folder(workdir / "ds", {"a": 4, "b": 4})
    (root / "a" / "gone.png").symlink_to(workdir / "deleted.png")
    _info(capsys, workdir, root, str(root / "a" / "gone.png"), "broken symbolic link")
    (root / "a" / "gone.png").unlink()
    (root / "b" / "sub").mkdir()
    (root / "b" / "sub" / "gone.png").symlink_to("nowhere.png")
    _info(capsys, workdir, root, "1 image file(s)", "sub/gone.png", "cannot be opened")


def test_looping_or_dangling_class_folder(capsys, workdir: Path) -> None:
    root = image_folder(workdir / "ds", {"a": 4, "b": 4})
    (root / "c").symlink_to("c")
    _info(capsys, workdir, root, str(root / "c"), "symbolic link")
    (root / "c").unlink()
    (root / "c").symlink_to(workdir / "moved-away")
    _info(capsys, workdir, root, str(root / "c"), "broken symbolic link")


def test_dataset_root_that_is_a_file(capsys, workdir: Path) -> None:
    (workdir / "ds").write_text("not a folder")
    _info(capsys, workdir, workdir / "ds", "is a file, not a folder")


# (2) one folder or file reached twice ---------------------------------------------------------


@pytest.mark.parametrize("target", [".", "..", "../.."])
def test_class_folder_linked_to_root_or_above(capsys, workdir: Path, target: str) -> None:
    root = image_folder(workdir / "sets" / "ds", {"a": 4, "b": 4})
    (root / "c").symlink_to(target)
    _info(capsys, workdir, root, str(root / "c"), "symbolic link", "remove the link")


def test_two_class_folders_are_one_folder(capsys, workdir: Path) -> None:
    root = image_folder(workdir / "ds", {"a": 4, "b": 4})
    (root / "c").symlink_to(root / "a")
    _info(capsys, workdir, root, "class folders a and c", "same folder")


def test_one_image_under_two_classes(capsys, workdir: Path) -> None:
    root = image_folder(workdir / "ds", {"a": 4, "b": 4})
    (root / "b" / "copy.png").symlink_to(root / "a" / "0.png")
    _info(capsys, workdir, root, "a/0.png (class a)", "b/copy.png (class b)", "twice")
    (root / "b" / "copy.png").unlink()
    os.link(root / "a" / "1.png", root / "b" / "hard.png")
    _info(capsys, workdir, root, "a/1.png (class a)", "b/hard.png (class b)", "hard link")


def test_hard_link_across_train_and_test(capsys, workdir: Path) -> None:
    root = workdir / "ds"
    image_folder(root / "train", {"a": 4, "b": 4})
    image_folder(root / "test", {"a": 2, "b": 2}, seed=1)
    os.link(root / "train" / "a" / "0.png", root / "test" / "b" / "leak.png")
    _info(capsys, workdir, root, "train/a/0.png", "test/b/leak.png", "train and test")


def test_images_subfolder_linked_to_root(capsys, workdir: Path) -> None:
    root = image_folder(workdir / "ds", {"a": 4, "b": 4})
    (root / "b" / "images").symlink_to("..")
    _info(capsys, workdir, root, str(root / "b" / "images"), "symbolic link")


# (3) decompression bombs: header checked before decoding ---------------------------------------


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """1-bit PNGs of a few KB whose headers promise 66, 144 and 196 megapixels."""
    folder = tmp_path_factory.mktemp("bombs")
    out = {}
    for name, side in (("just-over", 8_100), ("warned", 12_000), ("pillow-error", 14_000)):
        Image.new("1", (side, side)).save(folder / f"{name}.png")
        out[name] = folder / f"{name}.png"
    return out


@pytest.mark.parametrize("name", ["just-over", "warned", "pillow-error"])
def test_huge_png_refused_before_decoding(capsys, workdir: Path, bombs, name: str) -> None:
    root = image_folder(workdir / "ds", {"a": 4, "b": 4})
    shutil.copy(bombs[name], root / "a" / "big.png")
    assert (root / "a" / "big.png").stat().st_size < 200_000
    side = {"just-over": "8100 x 8100", "warned": "12000 x 12000"}.get(name, "over 178")
    limit = f"limit of {MAX_IMAGE_PIXELS // 1_000_000} megapixels"
    _info(capsys, workdir, root, str(root / "a" / "big.png"), side, limit)


# (4) names that cannot be written out ---------------------------------------------------------


def test_non_utf8_class_folder(capsys, workdir: Path) -> None:
    root = image_folder(workdir / "ds", {"a": 4, "b": 4})
    bad = os.fsdecode(bytes(root / "b")[:-1] + b"caf\xe9")
    os.rename(root / "b", bad)
    _info(capsys, workdir, root, "class folder", r"caf\xe9'", "not valid UTF-8")


def test_non_utf8_class_folder_in_split_layout(capsys, workdir: Path) -> None:
    root = workdir / "ds"
    image_folder(root / "train", {"a": 4, "b": 4})
    image_folder(root / "test", {"a": 2, "b": 2}, seed=1)
    for split in ("train", "test"):
        os.rename(root / split / "b", os.fsdecode(bytes(root / split) + b"/\xff"))
    _info(capsys, workdir, root, r"/train/\xff'", "not valid UTF-8")


def test_line_break_in_class_folder_name(capsys, workdir: Path) -> None:
    root = image_folder(workdir / "ds", {"a": 4, "b\nc": 4})
    _info(capsys, workdir, root, "class folder", r"b\nc'", "control character")


def test_non_utf8_dataset_root(capsys, workdir: Path) -> None:
    root = Path(os.fsdecode(bytes(workdir) + b"/d\xe9"))
    image_folder(root, {"a": 4, "b": 4})
    _info(capsys, workdir, root, "image folder", r"d\xe9'", "not valid UTF-8")


# (5) labels CSV --------------------------------------------------------------------------------


def test_csv_not_utf8(capsys, workdir: Path) -> None:
    _ham(capsys, workdir, _ham_rows().encode() + b"caf\xe9_0,akiec\n", "not UTF-8", "line 16")


@pytest.mark.parametrize("row", ["akiec_0,akiec,extra\n", "akiec_0\n"])
def test_csv_ragged_row(capsys, workdir: Path, row: str) -> None:
    fields = str(row.count(",") + 1)
    _ham(capsys, workdir, _ham_rows() + row, "line 16", f"has {fields} field(s)", "header has 2")


@pytest.mark.parametrize("path", ["../outside.jpg", "images/../../outside.jpg", "/etc/passwd"])
def test_csv_path_out_of_root(capsys, workdir: Path, path: str) -> None:
    _ham(capsys, workdir, _ham_rows() + f"{path},akiec\n", "line 16", "outside the dataset root")


def test_csv_line_break_in_a_label(capsys, workdir: Path) -> None:
    _ham(capsys, workdir, _ham_rows() + 'akiec_0,"ak\niec"\n', "line 17", "control character")


def test_csv_empty_or_with_a_doubled_column(capsys, workdir: Path) -> None:
    _ham(capsys, workdir, "", "HAM10000_metadata.csv", "is empty")
    shutil.rmtree(workdir / "data")
    _ham(capsys, workdir, "image_id,dx,dx\nakiec_0,akiec,bcc\n", "column dx twice")


def test_csv_ids_that_are_one_file(capsys, workdir: Path) -> None:
    root = workdir / "data" / "ham10000"
    (root / "images").mkdir(parents=True)
    (root / "images" / "alias.jpg").symlink_to("akiec_0.jpg")
    _ham(capsys, workdir, _ham_rows() + "alias,bcc\n", "images/akiec_0.jpg (class akiec)")
