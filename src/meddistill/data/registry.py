"""The front door: one `load_dataset(name)` for every MedMNIST subset and image-folder dataset.

Names: every MedMNIST subset in the json (pathmnist, ..., organmnist3d, ...), the folder
presets "busi", "covid19-cxr" and "ham10000", and "folder:/any/path" for a generic image folder.

Where folder presets are looked for (first existing folder wins):
  1. an explicit `root` (CLI --data-root): `root/<alias>` for each alias of the preset
     (e.g. busi, BUSI, Dataset_BUSI_with_GT), then `root` itself (root = the dataset folder);
  2. else `$MEDDISTILL_DATA/<alias>`;
  3. else `~/.meddistill/data/<alias>`.
So one data root (like ../shared/data, holding medmnist/ and busi/) serves every dataset.
Folder datasets cannot be downloaded (their hosts need a login or a licence click): a missing
one is a DatasetNotFoundError naming the folders searched and the official page.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meddistill.data import medmnist as mm
from meddistill.data.dataset import MedicalDataset, Normalization
from meddistill.data.folder import load_image_folder
from meddistill.errors import ConfigError, DatasetNotFoundError

IMAGENET = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
FULL_DSA = "color_crop_cutout_flip_scale_rotate"
NO_FLIP_DSA = "color_crop_cutout_scale_rotate"
FOLDER_PREFIX = "folder:"
DEFAULT_FOLDER_HOME = Path("~/.meddistill/data")

# Flips are dropped where left and right carry meaning: chest X-rays (the heart sits on the
# left; a mirrored film looks like dextrocardia) and the abdominal CT organ sets, whose labels
# name sides (kidney-left/right, femur-left/right, lung-left/right), so a flip changes the
# class. Pathology, blood smears, dermoscopy, ultrasound, OCT, fundus and the other 3D sets are
# mirror-symmetric in meaning and keep flips.
NO_FLIP = frozenset(
    {
        "chestmnist",
        "pneumoniamnist",
        "covid19-cxr",
        "organamnist",
        "organcmnist",
        "organsmnist",
        "organmnist3d",
    }
)


@dataclass(frozen=True)
class FolderPreset:
    """Defaults and facts of a known image-folder dataset."""

    name: str
    title: str
    classes: tuple[str, ...]
    aliases: tuple[str, ...]
    url: str
    size: int = 112
    channels: int = 3
    test_fraction: float = 0.2
    normalization: Normalization | None = None
    options: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, FolderPreset] = {
    p.name: p
    for p in (
        FolderPreset(
            name="busi",
            title="BUSI breast ultrasound (Al-Dhabyani et al. 2020)",
            classes=("benign", "malignant", "normal"),
            aliases=("busi", "BUSI", "Dataset_BUSI_with_GT"),
            url="https://scholar.cu.edu.eg/?q=afahmy/pages/dataset",
        ),
        FolderPreset(
            name="covid19-cxr",
            title="COVID-19 Radiography Database (chest X-ray)",
            classes=("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"),
            aliases=(
                "covid19-cxr",
                "COVID-19_Radiography_Dataset",
                "COVID-19 Radiography Database",
            ),
            url="https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database",
            normalization=IMAGENET,
        ),
        FolderPreset(
            name="ham10000",
            title="HAM10000 dermoscopy (Tschandl et al. 2018)",
            classes=("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"),
            aliases=("ham10000", "HAM10000", "skin-cancer-mnist-ham10000"),
            url="https://doi.org/10.7910/DVN/DBW86T",
            options={
                "labels_csv": "HAM10000_metadata.csv",
                "csv_id_column": "image_id",
                "csv_label_column": "dx",
            },
        ),
    )
}

MEDMNIST_KW = ("verify_md5", "resize_mode")
FOLDER_KW = (
    "resample",
    "test_fraction",
    "val_fraction",
    "labels_csv",
    "csv_id_column",
    "csv_label_column",
    "use_cache",
    "workers",
)


def dataset_names() -> list[str]:
    """Every name load_dataset accepts (besides 'folder:<path>')."""
    return mm.medmnist_names() + list(PRESETS)


def _unknown(name: str) -> ConfigError:
    return ConfigError(
        f"unknown dataset '{name}'; valid names: {', '.join(dataset_names())}, or "
        "folder:/path/to/images"
    )


def default_dsa_strategy(name: str) -> str:
    """The DSA strategy string suited to a dataset: no flip where laterality matters."""
    key = name.lower()
    if key.startswith(FOLDER_PREFIX):
        return FULL_DSA
    if key not in dataset_names():
        raise _unknown(name)
    return NO_FLIP_DSA if key in NO_FLIP else FULL_DSA


def dsa_strategy_for(dataset: MedicalDataset) -> str:
    """The DSA strategy of a loaded dataset: the one it records, else its name's default, else
    the full strategy (a dataset a user built from tensors)."""
    recorded = dataset.info.get("dsa_strategy") if dataset.info else None
    if recorded:
        return str(recorded)
    try:
        return default_dsa_strategy(dataset.name)
    except ConfigError:
        return FULL_DSA


def folder_search_dirs(preset: FolderPreset, root: str | os.PathLike[str] | None) -> list[Path]:
    """The folders tried for a preset, in order (see the module docstring)."""
    if root is not None:
        base = Path(root).expanduser()
        return [base / a for a in preset.aliases] + [base]
    env = os.environ.get(mm.DATA_ENV)
    base = Path(env).expanduser() if env else DEFAULT_FOLDER_HOME.expanduser()
    return [base / a for a in preset.aliases]


def find_folder_root(preset: FolderPreset, root: str | os.PathLike[str] | None) -> Path:
    dirs = folder_search_dirs(preset, root)
    for d in dirs:
        if d.is_dir():
            return d
    raise DatasetNotFoundError(
        f"{preset.name} not found; searched {', '.join(map(str, dirs))}; point at its folder "
        f"(or the folder holding it) with --data-root DIR, dataset.root=DIR in a config (root= "
        f"in Python) or ${mm.DATA_ENV} (default {DEFAULT_FOLDER_HOME}), or download it from "
        f"{preset.url} and unpack it to {dirs[0]} (--download cannot fetch it: its host needs "
        "a login or a licence click)"
    )


def _check_kw(name: str, kw: dict[str, Any], allowed: tuple[str, ...]) -> None:
    extra = sorted(set(kw) - set(allowed))
    if extra:
        raise ConfigError(
            f"option(s) {', '.join(extra)} do not apply to dataset '{name}'; "
            f"accepted: {', '.join(allowed) or 'none'}"
        )


def _folder_size(name: str, size: int | None, resize_to: int | None) -> int | None:
    if size is not None and resize_to is not None and int(size) != int(resize_to):
        raise ConfigError(
            f"for image-folder dataset '{name}', size ({size}) and resize_to ({resize_to}) both "
            "set the image side; give one"
        )
    return resize_to if resize_to is not None else size


def _load_folder_path(
    name: str,
    root: str | Path | None,
    size: int | None,
    resize_to: int | None,
    channels: int | None,
    split_seed: int,
    normalization: Normalization | None,
    kw: dict[str, Any],
) -> MedicalDataset:
    """A generic 'folder:<path>' dataset (an empty path means `root`), with folder defaults."""
    path = name.strip()[len(FOLDER_PREFIX) :] or (str(root) if root is not None else "")
    if not path:
        raise ConfigError("dataset 'folder:' needs a path, e.g. folder:/data/my_images")
    _check_kw(name, kw, FOLDER_KW)
    return load_image_folder(
        path,
        name=f"folder:{os.path.realpath(os.path.expanduser(path))}",  # no raise on a link loop
        size=_folder_size(name, size, resize_to),
        channels=3 if channels is None else int(channels),
        split_seed=split_seed,
        normalization=normalization,
        **kw,
    )


def _load_preset(
    key: str,
    root: str | Path | None,
    size: int | None,
    resize_to: int | None,
    channels: int | None,
    split_seed: int,
    normalization: Normalization | None,
    kw: dict[str, Any],
) -> MedicalDataset:
    """A known folder dataset: found under the data root, with the preset's defaults under `kw`."""
    preset = PRESETS[key]
    _check_kw(key, kw, FOLDER_KW)
    folder = find_folder_root(preset, root)
    chans = preset.channels if channels is None else int(channels)
    side = _folder_size(key, size, resize_to)
    preset_norm = preset.normalization if chans == len(IMAGENET.mean) else None
    opts: dict[str, Any] = {"test_fraction": preset.test_fraction, **preset.options, **kw}
    return load_image_folder(
        folder,
        name=key,
        size=preset.size if side is None else side,
        channels=chans,
        split_seed=split_seed,
        normalization=normalization or preset_norm,
        expected_classes=preset.classes,
        **opts,
    )


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    size: int | None = None,
    resize_to: int | None = None,
    download: bool = False,
    channels: int | None = None,
    split_seed: int = 0,
    normalization: Normalization | None = None,
    **kw: Any,
) -> MedicalDataset:
    """Load any known dataset by name as a MedicalDataset.

    MedMNIST: `size` picks the published file (28 default), `resize_to` resizes after loading,
    `channels` converts grey <-> RGB, `download` fetches a missing file, extra options
    verify_md5 and resize_mode (see load_medmnist); `split_seed` is unused (official splits).
    Image folders: `size` or `resize_to` is the side images are resized to (presets: 112),
    `channels` 3 (default) or 1, `split_seed` seeds the stratified split; extra options
    resample, test_fraction, val_fraction, labels_csv, csv_id_column, csv_label_column,
    use_cache, workers (see load_image_folder). Presets use ImageNet statistics for
    covid19-cxr (as HoP-TM) when channels is 3, else the train split's.
    """
    key = name.strip().lower()
    folder_args = (root, size, resize_to, channels, split_seed, normalization, kw)
    if key.startswith(FOLDER_PREFIX):
        return _load_folder_path(name, *folder_args)
    if key in PRESETS:
        return _load_preset(key, *folder_args)
    if key in mm.medmnist_names():
        _check_kw(key, kw, MEDMNIST_KW)
        return mm.load_medmnist(
            key,
            root=root,
            size=size,
            resize_to=resize_to,
            channels=channels,
            download=download,
            normalization=normalization,
            **kw,
        )
    raise _unknown(name)


def describe_known(name: str) -> dict[str, Any]:
    """Facts about a dataset without loading it (for `meddistill info`)."""
    key = name.strip().lower()
    if key in PRESETS:
        p = PRESETS[key]
        return {
            "name": p.name,
            "format": "folder",
            "title": p.title,
            "task": "multi-class" if len(p.classes) > 2 else "binary-class",
            "n_classes": len(p.classes),
            "class_names": list(p.classes),
            "channels": p.channels,
            "default_size": p.size,
            "split": f"stratified, {p.test_fraction:.0%} of each class to test and 10 % to val "
            "(carved from train), seeded by split_seed",
            "normalization": p.normalization.to_dict() if p.normalization else "train split",
            "url": p.url,
            "folder_names": list(p.aliases),
            "dsa_strategy": default_dsa_strategy(key),
            **({"options": dict(p.options)} if p.options else {}),
        }
    if key in mm.medmnist_names():
        facts = mm.medmnist_info(key)
        return {
            "name": key,
            "format": "medmnist",
            "task": facts["task"],
            "supported": facts["task"] in mm.SUPPORTED_TASKS,
            "spatial_dims": 3 if mm.is_3d(key) else 2,
            "channels": facts["n_channels"],
            "n_classes": facts["n_classes"],
            "class_names": [facts["label"][str(i)] for i in range(int(facts["n_classes"]))],
            "n_samples": dict(facts["n_samples"]),
            "license": facts.get("license"),
            "sizes": mm.medmnist_sizes(key),
            "files": {
                s: {"file": mm.file_name(key, int(s)), **v} for s, v in facts["files"].items()
            },
            "dsa_strategy": default_dsa_strategy(key),
        }
    raise _unknown(name)
