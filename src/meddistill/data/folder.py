"""Image-folder datasets (BUSI, COVID-19 Radiography, HAM10000, any ImageFolder layout).

Scanning (folder_scan) finds files and labels; decoding (folder_decode) turns them into one
uint8 tensor, cached; this module splits, scales and normalises. The split is not cached: it
depends only on the labels and `split_seed`, so changing the seed never re-decodes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import torch

from meddistill.data.dataset import MedicalDataset, Normalization
from meddistill.data.folder_decode import (
    CACHE_VERSION,
    GROUP_CODES,
    check_options,
    decode_all,
    load_cached,
    save_cached,
)
from meddistill.data.folder_scan import Listing, format_paths, scan
from meddistill.data.preprocess import build_splits, stratified_split
from meddistill.errors import DatasetCorruptError
from meddistill.utils import derive_seed, make_generator, stable_hash


def _split_indices(
    listing: Listing,
    labels: torch.Tensor,
    groups: torch.Tensor,
    test_fraction: float,
    val_fraction: float,
    split_seed: int,
) -> dict[str, torch.Tensor]:
    gen = make_generator(derive_seed(split_seed, "folder-split"))
    if listing.layout != "train-test-folders":
        parts = stratified_split(labels, test_fraction, val_fraction, gen)
        return {k: v for k, v in parts.items() if k != "val" or v.numel() > 0}
    idx = {
        s: torch.nonzero(groups == GROUP_CODES[s], as_tuple=False).flatten()
        for s in ("train", "val", "test")
    }
    if idx["val"].numel() == 0:
        del idx["val"]
        if val_fraction > 0:  # carve val out of the official train split, stratified
            sub = stratified_split(labels[idx["train"]], val_fraction, 0.0, gen)
            if sub["test"].numel() > 0:  # too few images per class: no val split
                idx["val"] = idx["train"][sub["test"]]
                idx["train"] = idx["train"][sub["train"]]
    return idx


def _decoded(
    listing: Listing,
    key: str,
    size: int | None,
    channels: int,
    resample: str,
    use_cache: bool,
    workers: int | None,
) -> tuple[torch.Tensor, str]:
    """(uint8 images, 'hit' | 'miss' | 'off') for the listing."""
    labels = torch.tensor([e.label for e in listing.entries], dtype=torch.int64)
    groups = torch.tensor([GROUP_CODES[e.group] for e in listing.entries], dtype=torch.uint8)
    if use_cache:
        hit = load_cached(key, len(listing.entries))
        if hit is not None and torch.equal(hit[1], labels) and torch.equal(hit[2], groups):
            return hit[0], "hit"
    images = decode_all(listing.entries, size, channels, resample, workers)
    if use_cache:
        meta = {
            "root": str(listing.root),
            "layout": listing.layout,
            "class_names": listing.class_names,
            "count": len(listing.entries),
            "size": size,
            "channels": channels,
            "resample": resample,
        }
        save_cached(key, images, labels, groups, meta)
    return images, "miss" if use_cache else "off"


def _check_listing(
    listing: Listing, expected_classes: Sequence[str] | None, name: str | None
) -> None:
    """Refuse stray non-image files and, for a preset, a folder holding other classes."""
    if listing.bad:
        raise DatasetCorruptError(
            f"{len(listing.bad)} file(s) in the class folders of {listing.root} are not images: "
            f"{format_paths(listing.bad)}; move them out of the class folders"
        )
    if expected_classes is not None and sorted(expected_classes) != listing.class_names:
        raise DatasetCorruptError(
            f"{listing.root} has classes {', '.join(listing.class_names)} but "
            f"{name or 'this dataset'} should have {', '.join(sorted(expected_classes))}; "
            "point the data root at the dataset's own folder"
        )


def _identities(
    listing: Listing,
    prep: dict[str, object],
    test_fraction: float,
    val_fraction: float,
    split_seed: int,
) -> tuple[str, str]:
    """(source_id, cache key): the id ignores where and when, the key ignores the split."""
    split_opts = (
        "official"
        if listing.layout == "train-test-folders" and val_fraction == 0
        else [test_fraction, val_fraction, split_seed]
    )
    source_id = stable_hash([listing.fingerprint(with_times=False), prep, split_opts], length=32)
    key = stable_hash([listing.fingerprint(with_times=True), prep], length=32)
    return source_id, key


def _split_images(
    listing: Listing,
    images_u8: torch.Tensor,
    test_fraction: float,
    val_fraction: float,
    split_seed: int,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(float images in [0, 1], labels) per split; the split itself is never cached."""
    labels = torch.tensor([e.label for e in listing.entries], dtype=torch.int64)
    groups = torch.tensor([GROUP_CODES[e.group] for e in listing.entries], dtype=torch.uint8)
    idx = _split_indices(listing, labels, groups, test_fraction, val_fraction, split_seed)
    images01 = {s: images_u8[i].to(torch.float32).div_(255.0) for s, i in idx.items()}
    split_labels = {s: labels[i] for s, i in idx.items()}
    return images01, split_labels


def _folder_info(
    listing: Listing,
    prep: dict[str, object],
    split: tuple[float, float, int],
    cache_state: str,
    key: str,
    normalization: Normalization | None,
    t0: float,
) -> dict[str, object]:
    """The dataset's info record: layout, preprocessing, split, cache state and load time."""
    test_fraction, val_fraction, split_seed = split
    return {
        "format": "folder",
        "root": str(listing.root),
        "layout": listing.layout,
        "size": prep["size"],
        "channels": prep["channels"],
        "resample": prep["resample"],
        "split": "official folders"
        if listing.layout == "train-test-folders"
        else {"test_fraction": test_fraction, "val_fraction": val_fraction, "seed": split_seed},
        "cache": cache_state,
        "cache_key": key,
        "duplicates_ignored": listing.duplicates_ignored,
        "normalization_source": "explicit" if normalization is not None else "train split",
        "load_seconds": round(time.perf_counter() - t0, 4),
    }


def load_image_folder(
    root: str | os.PathLike[str],
    *,
    name: str | None = None,
    size: int | None = None,
    channels: int = 3,
    resample: str = "bicubic",
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    normalization: Normalization | None = None,
    labels_csv: str | os.PathLike[str] | None = None,
    csv_id_column: str | None = None,
    csv_label_column: str | None = None,
    expected_classes: Sequence[str] | None = None,
    use_cache: bool = True,
    workers: int | None = None,
) -> MedicalDataset:
    """Load an image folder as a MedicalDataset (layouts: see data/folder_scan.py).

    Images are decoded with Pillow, converted to RGB (channels=3) or grey (channels=1) and,
    when `size` is given, resized to size x size with `resample` (bicubic default; non-square
    images are stretched, as torchvision's Resize((s, s)) does). Without `size` all images must
    share one size. Official train/test(/val) folders are kept; otherwise a stratified split,
    seeded by `split_seed`, puts `test_fraction` and `val_fraction` of each class aside. A
    folder without its own val folder gets one carved from train (val_fraction 0.1, seeded,
    stratified, recorded in info and in the dataset's id): every choice is made on val, the
    test split is read once per final configuration. val_fraction=0 keeps no val split.
    Normalisation: the train split's per-channel statistics unless `normalization` is given.

    source_id hashes the relative paths, sizes and labels of the files, the preprocessing and
    the split options (a buffer trained on one split must not be reused with another, whose
    test images it may have seen), so a copy of the same dataset elsewhere has the same id;
    the cache key (decoding only, split-independent) also includes the
    absolute root and mtimes, so any edit re-decodes. info["cache"] is "hit", "miss" or "off".
    """
    t0 = time.perf_counter()
    size = None if size is None else int(size)
    check_options(size, channels, resample)
    listing = scan(
        root, labels_csv=labels_csv, csv_id_column=csv_id_column, csv_label_column=csv_label_column
    )
    _check_listing(listing, expected_classes, name)
    prep = {"size": size, "channels": channels, "resample": resample, "version": CACHE_VERSION}
    split = (test_fraction, val_fraction, split_seed)
    source_id, key = _identities(listing, prep, *split)
    images_u8, cache_state = _decoded(listing, key, size, channels, resample, use_cache, workers)
    images01, split_labels = _split_images(listing, images_u8, *split)
    splits, norm = build_splits(images01, split_labels, normalization)

    return MedicalDataset(
        name=name or listing.root.name,
        splits=splits,
        class_names=list(listing.class_names),
        normalization=norm,
        source_id=source_id,
        task="multi-class" if len(listing.class_names) > 2 else "binary-class",
        info=_folder_info(listing, prep, split, cache_state, key, normalization, t0),
    )
