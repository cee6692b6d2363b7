"""Find the images and labels of an image-folder dataset without decoding anything.

Layouts understood (class names are sorted alphabetically to give class indices):
- `root/<class>/...`: one folder per class (BUSI, COVID-19 Radiography, any ImageFolder).
- `root/train/<class>/...` and `root/test/<class>/...` (optionally `root/val/<class>/...`):
  official splits are kept.
- `labels_csv`: a CSV with an image-id column and a label column (HAM10000_metadata.csv with
  image_id, dx); images are found anywhere under root by file stem.

Inside a class folder: when it has an `images/` subfolder (COVID-19 Radiography ships
`<class>/images` beside `<class>/masks`) only that is read; otherwise every file below it is,
except folders named `mask`/`masks` and files whose stem contains `_mask` (original BUSI has
`benign (1)_mask.png` beside `benign (1).png`). Hidden files and OS droppings (Thumbs.db,
desktop.ini) are skipped; any other file without an image extension is reported as bad.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from meddistill.errors import ConfigError, DatasetCorruptError, DatasetNotFoundError

IMAGE_EXTS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm"}
)
JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini"})
MASK_DIRS = frozenset({"mask", "masks"})
SPLIT_DIRS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
ID_COLUMNS = ("image_id", "image", "id", "file", "filename", "file_name", "path")
LABEL_COLUMNS = ("dx", "label", "class", "diagnosis", "target")
MAX_LISTED = 5


@dataclass
class FileEntry:
    """One image: where it is, what it is, and which official split (if any) holds it."""

    path: Path
    rel: str
    size: int
    mtime_ns: int
    label: int
    group: str  # "all" (no official split), "train", "val" or "test"


@dataclass
class Listing:
    """Everything known about a folder dataset before decoding."""

    root: Path
    layout: str
    class_names: list[str]
    entries: list[FileEntry]
    bad: list[Path] = field(default_factory=list)
    extra: list[dict[str, object]] = field(default_factory=list)  # e.g. the csv file's stat
    duplicates_ignored: int = 0

    def fingerprint(self, with_times: bool) -> list[object]:
        """The listing as plain data: hashed for source_id (no times) or the cache key."""
        rows: list[object] = [
            [e.rel, e.size, e.label, e.group] + ([e.mtime_ns] if with_times else [])
            for e in self.entries
        ]
        extra = [{k: v for k, v in x.items() if with_times or k != "mtime_ns"} for x in self.extra]
        head = {"layout": self.layout, "classes": self.class_names, "extra": extra}
        if with_times:
            head["root"] = str(self.root)
        return [head, *rows]


def format_paths(paths: list[Path]) -> str:
    shown = ", ".join(str(p) for p in paths[:MAX_LISTED])
    more = f" and {len(paths) - MAX_LISTED} more" if len(paths) > MAX_LISTED else ""
    return shown + more


def _skip(name: str) -> bool:
    return name.startswith(".") or name.lower() in JUNK_NAMES


def _is_mask_file(p: Path) -> bool:
    return "_mask" in p.stem.lower()


def _walk(folder: Path) -> list[Path]:
    """Every non-hidden file below `folder` (mask folders and mask files left out), sorted."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not _skip(d) and d.lower() not in MASK_DIRS)
        for fn in sorted(filenames):
            if _skip(fn):
                continue
            p = Path(dirpath) / fn
            if not _is_mask_file(p):
                out.append(p)
    return out


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _skip(p.name))


def _class_files(class_dir: Path) -> list[Path]:
    images = [p for p in _subdirs(class_dir) if p.name.lower() == "images"]
    return _walk(images[0] if images else class_dir)


def _entry(root: Path, p: Path, label: int, group: str) -> FileEntry:
    st = p.stat()
    return FileEntry(p, p.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns, label, group)


def _split_dirs(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    by_lower = {p.name.lower(): p for p in _subdirs(root)}
    for split, names in SPLIT_DIRS.items():
        for n in names:
            if n in by_lower:
                found[split] = by_lower[n]
                break
    return found if "train" in found and "test" in found else {}


def _collect(
    root: Path, class_dirs: dict[str, Path], classes: list[str], group: str, listing: Listing
) -> None:
    for name, cdir in class_dirs.items():
        files = _class_files(cdir)
        images = [p for p in files if p.suffix.lower() in IMAGE_EXTS]
        listing.bad.extend(p for p in files if p.suffix.lower() not in IMAGE_EXTS)
        if not images:
            raise DatasetCorruptError(
                f"class folder {cdir} holds no images; add images or remove the folder"
            )
        label = classes.index(name)
        listing.entries.extend(_entry(root, p, label, group) for p in images)


def scan_class_folders(root: Path) -> Listing:
    """Listing of the `<class>/` or `train|test/<class>/` layouts."""
    splits = _split_dirs(root)
    if splits:
        per_split = {s: {p.name: p for p in _subdirs(d)} for s, d in splits.items()}
        classes = sorted(per_split["train"])
        if not classes:
            raise DatasetNotFoundError(
                f"{splits['train']} has no class folders; expected {splits['train']}/<class>/..."
            )
        for s, dirs in per_split.items():
            unknown = sorted(set(dirs) - set(classes))
            if unknown:
                raise DatasetCorruptError(
                    f"{splits[s]} has class folders {', '.join(unknown)} that {splits['train']} "
                    "lacks; every class needs training images"
                )
        listing = Listing(root, "train-test-folders", classes, [])
        for s, dirs in per_split.items():
            _collect(root, dirs, classes, s, listing)
        return listing
    dirs = {p.name: p for p in _subdirs(root)}
    if not dirs:
        raise DatasetNotFoundError(
            f"{root} has no class folders; expected {root}/<class>/<image files> "
            "(or train/ and test/ folders, or a labels_csv)"
        )
    classes = sorted(dirs)
    listing = Listing(root, "class-folders", classes, [])
    _collect(root, dirs, classes, "all", listing)
    return listing


def _pick_column(
    header: list[str],
    given: str | None,
    candidates: tuple[str, ...],
    what: str,
    option: str,
    csv_path: Path,
) -> str:
    if given is not None:
        if given not in header:
            raise ConfigError(
                f"{option}='{given}' is not a column of {csv_path} (columns: {', '.join(header)})"
            )
        return given
    lower = {h.lower(): h for h in header}
    for c in candidates:
        if c in lower:
            return lower[c]
    raise ConfigError(
        f"cannot tell which column of {csv_path} holds the {what} (columns: "
        f"{', '.join(header)}); set {option}"
    )


def _image_id(value: str) -> str:
    p = Path(value.strip())
    return p.stem if p.suffix.lower() in IMAGE_EXTS else p.name


def _read_csv(
    labels_csv: Path, root: Path, id_column: str | None, label_column: str | None
) -> tuple[list[tuple[str | None, str | None]], str, str]:
    """(rows of (id, label), id column, label column) of the labels CSV."""
    if not labels_csv.is_file():
        raise DatasetNotFoundError(
            f"labels_csv {labels_csv} not found; give the CSV path (absolute or relative to {root})"
        )
    try:
        with open(labels_csv, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            id_col = _pick_column(
                header, id_column, ID_COLUMNS, "image ids", "csv_id_column", labels_csv
            )
            lab_col = _pick_column(
                header, label_column, LABEL_COLUMNS, "labels", "csv_label_column", labels_csv
            )
            rows = [(r[id_col], r[lab_col]) for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetCorruptError(f"cannot read labels_csv {labels_csv}: {exc}") from exc
    return rows, id_col, lab_col


def _wanted_labels(
    rows: list[tuple[str | None, str | None]], labels_csv: Path, id_col: str, lab_col: str
) -> dict[str, str]:
    """Image id -> label; empty cells and an id given two labels are errors in the CSV."""
    wanted: dict[str, str] = {}
    for raw_id, raw_label in rows:
        if raw_id is None or raw_label is None or not raw_id.strip() or not raw_label.strip():
            raise DatasetCorruptError(
                f"{labels_csv} has a row with an empty {id_col} or {lab_col}; fix the CSV"
            )
        iid, lab = _image_id(raw_id), raw_label.strip()
        if wanted.setdefault(iid, lab) != lab:
            raise DatasetCorruptError(
                f"{labels_csv} gives image {iid} two labels ({wanted[iid]}, {lab}); fix the CSV"
            )
    if not wanted:
        raise DatasetCorruptError(f"{labels_csv} has no rows; it should list image ids and labels")
    return wanted


def _match_images(
    root: Path, wanted: dict[str, str], labels_csv: Path
) -> tuple[dict[str, Path], int]:
    """(image id -> file, identical copies ignored); every listed id must have a file."""
    found: dict[str, Path] = {}
    duplicates = 0
    for p in _walk(root):
        if p.suffix.lower() not in IMAGE_EXTS or p.stem not in wanted:
            continue
        if p.stem in found:
            if found[p.stem].stat().st_size != p.stat().st_size:
                raise DatasetCorruptError(
                    f"image id {p.stem} matches two different files, {found[p.stem]} and {p}; "
                    "remove one"
                )
            duplicates += 1
            continue
        found[p.stem] = p
    missing = sorted(set(wanted) - set(found))
    if missing:
        shown = ", ".join(missing[:MAX_LISTED])
        raise DatasetNotFoundError(
            f"{len(missing)} image(s) listed in {labels_csv} are not under {root} (e.g. {shown}); "
            "make sure every image folder of the dataset is there"
        )
    return found, duplicates


def scan_csv(
    root: Path, labels_csv: Path, id_column: str | None = None, label_column: str | None = None
) -> Listing:
    """Listing from a labels CSV; images are matched by stem anywhere under root."""
    rows, id_col, lab_col = _read_csv(labels_csv, root, id_column, label_column)
    wanted = _wanted_labels(rows, labels_csv, id_col, lab_col)
    found, duplicates = _match_images(root, wanted, labels_csv)
    classes = sorted(set(wanted.values()))
    st = labels_csv.stat()
    listing = Listing(
        root,
        "labels-csv",
        classes,
        [],
        extra=[
            {
                "csv": labels_csv.name,
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "id_column": id_col,
                "label_column": lab_col,
            }
        ],
        duplicates_ignored=duplicates,
    )
    for iid in sorted(found, key=lambda k: found[k].relative_to(root).as_posix()):
        listing.entries.append(_entry(root, found[iid], classes.index(wanted[iid]), "all"))
    return listing


def scan(
    root: str | os.PathLike[str],
    *,
    labels_csv: str | os.PathLike[str] | None = None,
    csv_id_column: str | None = None,
    csv_label_column: str | None = None,
) -> Listing:
    """Scan `root` in the layout it has (see the module docstring)."""
    base = Path(root).expanduser().resolve()
    if not base.is_dir():
        raise DatasetNotFoundError(f"image folder {base} does not exist; check the data root")
    if labels_csv is not None:
        csv_path = Path(labels_csv).expanduser()
        csv_path = csv_path if csv_path.is_absolute() else base / csv_path
        return scan_csv(base, csv_path, csv_id_column, csv_label_column)
    return scan_class_folders(base)
