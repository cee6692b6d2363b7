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
import io
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from meddistill.errors import ConfigError, DatasetCorruptError, DatasetNotFoundError
from meddistill.utils import read_utf8

IMAGE_EXTS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm"}
)
JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini"})
MASK_DIRS = frozenset({"mask", "masks"})
SPLIT_DIRS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
ID_COLUMNS = ("image_id", "image", "id", "file", "filename", "file_name", "path")
LABEL_COLUMNS = ("dx", "label", "class", "diagnosis", "target")
MAX_LISTED = 5
MAX_CSV_BYTES = 256 << 20  # HAM10000's metadata is 0.5 MB; anything this big is the wrong file


@dataclass
class FileEntry:
    """One image: where it is, what it is, and which official split (if any) holds it."""

    path: Path
    rel: str
    size: int
    mtime_ns: int
    label: int
    group: str  # "all" (no official split), "train", "val" or "test"
    ident: tuple[int, int] | None = None  # (st_dev, st_ino): one file reached by two names


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


def _walk_error(exc: OSError) -> None:
    raise DatasetCorruptError(
        f"cannot list folder {exc.filename}: {exc.strerror or exc}; check its permissions"
    )


def _walk(folder: Path) -> list[Path]:
    """Every non-hidden file below `folder` (mask folders and mask files left out), sorted.
    Linked sub-folders are not followed (os.walk's default), so no link can loop."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=_walk_error):
        dirnames[:] = sorted(d for d in dirnames if not _skip(d) and d.lower() not in MASK_DIRS)
        for fn in sorted(filenames):
            if _skip(fn):
                continue
            p = Path(dirpath) / fn
            if not _is_mask_file(p):
                out.append(p)
    return out


def _check_name(path: Path, what: str) -> None:
    """Refuse a path whose bytes are not UTF-8 or that holds control characters (a line
    break): it becomes a class or dataset name, written to results, reports and messages."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise DatasetCorruptError(
            f"{what} {os.fsencode(path)!r} has a name that is not valid UTF-8; rename it in "
            "UTF-8 (e.g. with convmv) so it can be written to results and reports"
        ) from None
    if not str(path).isprintable():
        raise DatasetCorruptError(
            f"{what} {str(path)!r} has a control character (a tab or line break) in its name; "
            "rename it"
        )


def _link_folder(p: Path, container: Path) -> bool:
    """Whether symlink `p` leads to a folder; a broken link, or one that leads back to
    `container` or above (its images would be read again as another class), is refused."""
    try:
        st = p.stat()
    except OSError as exc:
        raise DatasetCorruptError(
            f"{p} is a broken symbolic link ({exc.strerror or exc}); fix or remove it"
        ) from None
    if not stat.S_ISDIR(st.st_mode):
        return False
    real = Path(os.path.realpath(p))
    if Path(os.path.realpath(container)).is_relative_to(real):
        raise DatasetCorruptError(
            f"folder {p} is a symbolic link to {real}, which holds {container} itself; its "
            "images would be read again under another name; remove the link"
        )
    return True


def _subdirs(folder: Path) -> list[Path]:
    """Sub-folders of `folder` (sorted, hidden left out); links are checked by _link_folder."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise DatasetCorruptError(
            f"cannot list folder {folder}: {exc.strerror or exc}; check its permissions"
        ) from None
    out: list[Path] = []
    for p in entries:
        if _skip(p.name):
            continue
        if _link_folder(p, folder) if p.is_symlink() else p.is_dir():
            out.append(p)
    return out


def _class_dirs(folder: Path) -> dict[str, Path]:
    """Class name -> folder; names must be UTF-8 and no two may be the same real folder."""
    dirs: dict[str, Path] = {}
    real: dict[str, Path] = {}
    for p in _subdirs(folder):
        _check_name(p, "class folder")
        other = real.setdefault(os.path.realpath(p), p)
        if other is not p:
            raise DatasetCorruptError(
                f"class folders {other.name} and {p.name} in {folder} are the same folder "
                f"({os.path.realpath(p)}), so every image would have two labels; remove the link"
            )
        dirs[p.name] = p
    return dirs


def _class_files(class_dir: Path) -> list[Path]:
    images = [p for p in _subdirs(class_dir) if p.name.lower() == "images"]
    return _walk(images[0] if images else class_dir)


def _entry(root: Path, p: Path, label: int, group: str) -> FileEntry:
    st = p.stat()
    rel = p.relative_to(root).as_posix()
    return FileEntry(p, rel, st.st_size, st.st_mtime_ns, label, group, (st.st_dev, st.st_ino))


def _entries(root: Path, paths: list[Path], label: int, group: str) -> list[FileEntry]:
    """FileEntry of each path; files that cannot be opened (broken links) are refused together."""
    out: list[FileEntry] = []
    broken: list[Path] = []
    reasons: set[str] = set()
    for p in paths:
        try:
            out.append(_entry(root, p, label, group))
        except OSError as exc:
            broken.append(p)
            reasons.add(exc.strerror or type(exc).__name__)
    if broken:
        raise DatasetCorruptError(
            f"{len(broken)} image file(s) under {root} cannot be opened "
            f"({', '.join(sorted(reasons))}; broken or looping symbolic links?): "
            f"{format_paths(broken)}; fix or remove them"
        )
    return out


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
        listing.entries.extend(_entries(root, images, classes.index(name), group))


def _refuse_repeats(listing: Listing) -> None:
    """One file reached twice (a symbolic or hard link) would sit in two classes or in both
    train and test: refused, naming both paths."""
    seen: dict[tuple[int, int], FileEntry] = {}
    for e in listing.entries:
        if e.ident is None:
            continue
        first = seen.setdefault(e.ident, e)
        if first is not e:
            where = [f"{x.rel} (class {listing.class_names[x.label]})" for x in (first, e)]
            raise DatasetCorruptError(
                f"the same image file is listed twice in {listing.root}, as {where[0]} and "
                f"{where[1]} (a symbolic or hard link); remove one, or the image gets two "
                "labels or lands in both train and test"
            )


def scan_class_folders(root: Path) -> Listing:
    """Listing of the `<class>/` or `train|test/<class>/` layouts."""
    splits = _split_dirs(root)
    if splits:
        per_split = {s: _class_dirs(d) for s, d in splits.items()}
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
    dirs = _class_dirs(root)
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


def _image_id(value: str, root: Path, where: str) -> str:
    """The file stem a CSV id names; a path that leads out of `root` is refused."""
    text = value.strip()
    target = os.path.normpath(os.path.join(root, text))
    if os.path.commonpath([str(root), target]) != str(root):
        raise DatasetCorruptError(
            f"{where} names {text!r}, a path outside the dataset root {root}; give image ids "
            "(file names) or paths inside the root"
        )
    p = Path(text)
    return p.stem if p.suffix.lower() in IMAGE_EXTS else p.name


def _csv_text(labels_csv: Path, root: Path) -> str:
    """The CSV's text; a missing, special, huge or non-UTF-8 file is refused naming it."""
    try:
        st = labels_csv.stat()
    except OSError as exc:
        raise DatasetNotFoundError(
            f"labels_csv {labels_csv} not found ({exc.strerror or exc}); give the CSV path "
            f"(absolute or relative to {root})"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        what = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise DatasetCorruptError(f"labels_csv {labels_csv} is {what}; give the labels CSV file")
    if st.st_size > MAX_CSV_BYTES:
        raise DatasetCorruptError(
            f"labels_csv {labels_csv} is {st.st_size} bytes, over the {MAX_CSV_BYTES}-byte "
            "limit; check that it is the labels CSV"
        )
    return read_utf8(labels_csv, "labels_csv", DatasetCorruptError)


def _csv_rows(labels_csv: Path, text: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line number, fields)]); blank lines skipped, ragged rows refused."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            if not row:
                continue
            if header is None:
                header = row
            elif len(row) != len(header):
                raise DatasetCorruptError(
                    f"line {reader.line_num} of {labels_csv} has {len(row)} field(s) but the "
                    f"header has {len(header)}; fix the row (quote values that hold commas)"
                )
            else:
                rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise DatasetCorruptError(
            f"labels_csv {labels_csv} is not a valid CSV (line {reader.line_num}: {exc}); "
            "fix or re-export it"
        ) from None
    if header is None:
        raise DatasetCorruptError(
            f"labels_csv {labels_csv} is empty; it needs a header (e.g. image_id,dx) and a row "
            "per image"
        )
    return header, rows


def _read_csv(
    labels_csv: Path, root: Path, id_column: str | None, label_column: str | None
) -> tuple[list[tuple[int, str, str]], str, str]:
    """(rows of (line, id, label), id column, label column) of the labels CSV."""
    header, rows = _csv_rows(labels_csv, _csv_text(labels_csv, root))
    id_col = _pick_column(header, id_column, ID_COLUMNS, "image ids", "csv_id_column", labels_csv)
    lab_col = _pick_column(
        header, label_column, LABEL_COLUMNS, "labels", "csv_label_column", labels_csv
    )
    for col in (id_col, lab_col):
        if header.count(col) > 1:
            raise DatasetCorruptError(
                f"the header of {labels_csv} has column {col} twice; rename one"
            )
    i, j = header.index(id_col), header.index(lab_col)
    return [(line, r[i], r[j]) for line, r in rows], id_col, lab_col


def _wanted_labels(
    rows: list[tuple[int, str, str]], labels_csv: Path, root: Path, id_col: str, lab_col: str
) -> dict[str, str]:
    """Image id -> label; empty cells, paths out of root and an id given two labels are errors."""
    wanted: dict[str, str] = {}
    for line, raw_id, raw_label in rows:
        where = f"line {line} of {labels_csv}"
        if not raw_id.strip() or not raw_label.strip():
            raise DatasetCorruptError(f"{where} has an empty {id_col} or {lab_col}; fix the CSV")
        if not (raw_id.isprintable() and raw_label.isprintable()):
            raise DatasetCorruptError(
                f"{where} has a control character (a tab or a line break inside quotes) in its "
                f"{id_col} or {lab_col}; fix the CSV"
            )
        iid, lab = _image_id(raw_id, root, where), raw_label.strip()
        if wanted.setdefault(iid, lab) != lab:
            raise DatasetCorruptError(
                f"{labels_csv} gives image {iid} two labels ({wanted[iid]}, {lab}); fix the CSV"
            )
    if not wanted:
        raise DatasetCorruptError(f"{labels_csv} has no rows; it should list image ids and labels")
    return wanted


def _file_size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError as exc:
        raise DatasetCorruptError(
            f"image file {p} cannot be opened ({exc.strerror or exc}; a broken or looping "
            "symbolic link?); fix or remove it"
        ) from None


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
            if _file_size(found[p.stem]) != _file_size(p):
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
    wanted = _wanted_labels(rows, labels_csv, root, id_col, lab_col)
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
        listing.entries.extend(_entries(root, [found[iid]], classes.index(wanted[iid]), "all"))
    return listing


def _dataset_root(root: str | os.PathLike[str]) -> Path:
    """The real, absolute dataset folder; a missing, looping or non-UTF-8 path is refused."""
    path = Path(root).expanduser()
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DatasetNotFoundError(
            f"image folder {path.absolute()} does not exist; check the data root"
        ) from None
    except OSError as exc:
        raise DatasetNotFoundError(
            f"cannot open image folder {path}: {exc.strerror or exc}; check the data root"
        ) from None
    if not stat.S_ISDIR(st.st_mode):
        raise DatasetNotFoundError(f"image folder {path} is a file, not a folder; check the path")
    real = Path(os.path.realpath(path))
    _check_name(real, "image folder")
    return real


def scan(
    root: str | os.PathLike[str],
    *,
    labels_csv: str | os.PathLike[str] | None = None,
    csv_id_column: str | None = None,
    csv_label_column: str | None = None,
) -> Listing:
    """Scan `root` in the layout it has (see the module docstring); one file listed twice (a
    link) is refused, as it would get two labels or sit in both train and test."""
    base = _dataset_root(root)
    if labels_csv is not None:
        csv_path = Path(labels_csv).expanduser()
        csv_path = csv_path if csv_path.is_absolute() else base / csv_path
        listing = scan_csv(base, csv_path, csv_id_column, csv_label_column)
    else:
        listing = scan_class_folders(base)
    _refuse_repeats(listing)
    return listing
