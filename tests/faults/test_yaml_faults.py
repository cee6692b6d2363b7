"""Issue 9: hostile YAML config files and `key=value` overrides.

Root causes: (1) a config path that is not a readable UTF-8 file holding one document gave a
traceback or was silently taken as empty; (2) a repeated key silently replaced the first (a
whole `match:` section lost); (3) aliases were expanded without bound (a 350-byte "billion
laughs" file hung for minutes in the deep copy of the merged config), and an alias inside its
own anchor made a self-containing value. Config files and override values share one loader
(safe_load semantics: tags never run code) and the same limits.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest
from faulthelpers import hostile

from meddistill.config import MAX_YAML_NODES, load_yaml, parse_override

QUIET = ["--no-progress", "--device", "cpu"]


def _baseline(*extra: str) -> list[str]:
    return ["baseline", *QUIET, *extra]


def _config(
    capsys: pytest.CaptureFixture[str], root: Path, text: bytes | str, *contains: str
) -> str:
    """Write `text` to root/job.yaml and check that `baseline --config job.yaml` refuses it
    with a message holding `contains` (by default the file's name first)."""
    path = root / "job.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return hostile(capsys, root, _baseline("--config", str(path)), contains=contains or ("job",))


def _laughs(levels: int = 9, width: int = 9) -> list[str]:
    """The billion-laughs mapping items: each level a list of `width` aliases of the one below
    (9 levels of 9: 387 million strings once expanded)."""
    names = "abcdefghijklmnop"[:levels]
    items = [f"a: &a [{', '.join(['lol'] * width)}]"]
    for prev, cur in zip(names, names[1:], strict=False):
        items.append(f"{cur}: &{cur} [{', '.join([f'*{prev}'] * width)}]")
    return items


# (1) the file itself: encoding, kind, emptiness, document count -----------------------------


def test_non_utf8_file_names_the_byte_and_line(capsys, workdir: Path) -> None:
    _config(capsys, workdir, b"seed: 1\nname: caf\xe9\n", "not UTF-8", "0xe9", "job.yaml", "line 2")


def test_folder_fifo_and_symlink_loop_are_not_config_files(capsys, workdir: Path) -> None:
    (workdir / "dir.yaml").mkdir()
    hostile(capsys, workdir, _baseline("--config", "dir.yaml"), contains=("dir.yaml", "folder"))
    os.mkfifo(workdir / "pipe.yaml")  # reading it would block forever
    hostile(capsys, workdir, _baseline("--config", "pipe.yaml"), contains=("not a regular file",))
    (workdir / "loop.yaml").symlink_to("loop.yaml")
    hostile(capsys, workdir, _baseline("--config", "loop.yaml"), contains=("loop.yaml", "symbolic"))
    (workdir / "dangling.yaml").symlink_to("gone.yaml")
    hostile(capsys, workdir, _baseline("--config", "dangling.yaml"), contains=("not found",))


def test_unreadable_file_is_one_line(capsys, workdir: Path, monkeypatch) -> None:
    path = workdir / "job.yaml"
    path.write_text("seed: 1\n")

    def denied(self: Path) -> bytes:
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)  # as root, chmod 000 would not stop a read
    hostile(capsys, workdir, _baseline("--config", str(path)), contains=("Permission denied",))


@pytest.mark.parametrize("text", ["", "\n\n", "# every line commented out\n# seed: 3\n"])
def test_empty_file_is_refused(capsys, workdir: Path, text: str) -> None:
    _config(capsys, workdir, text, "job.yaml", "is empty")


def test_two_documents_are_refused(capsys, workdir: Path) -> None:
    _config(
        capsys,
        workdir,
        "seed: 1\n---\nseed: 2\n",
        "more than one YAML document",
        "job.yaml",
        "line 2",
    )


def test_include_that_is_not_a_file_name(capsys, workdir: Path) -> None:
    _config(capsys, workdir, "include: 5\nseed: 1\n", "job.yaml", "include must be a file name")
    (workdir / "inner.yaml").write_bytes(b"seed: \xff\n")
    _config(capsys, workdir, "include: inner.yaml\n", "inner.yaml", "not UTF-8")


# (2) duplicate keys -------------------------------------------------------------------------


def test_duplicate_section_is_refused_with_both_lines(capsys, workdir: Path) -> None:
    text = "match:\n  iterations: 5\nseed: 1\nmatch:\n  lr_img: 10\n"
    _config(capsys, workdir, text, "key 'match' twice", "job.yaml", "line 1 and line 4")


def test_duplicate_key_at_depth_and_in_flow_style(capsys, workdir: Path) -> None:
    _config(
        capsys, workdir, "eval:\n  train:\n    lr: 1\n    lr: 2\n", "job.yaml", "key 'lr' twice"
    )
    _config(
        capsys, workdir, "eval: {num_nets: 1, num_nets: 2}\n", "job.yaml", "key 'num_nets' twice"
    )
    _config(capsys, workdir, 'seed: 1\n"seed": 2\n', "key 'seed' twice")  # same key, quoted


def test_duplicate_in_included_file_and_in_override(capsys, workdir: Path) -> None:
    (workdir / "base.yaml").write_text("seed: 1\nseed: 2\n")
    _config(capsys, workdir, "include: base.yaml\n", "base.yaml", "key 'seed' twice")
    hostile(capsys, workdir, _baseline("eval.x={a: 1, a: 2}"), contains=("override", "key 'a'"))


def test_merge_keys_and_a_repeated_include_still_work(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("x: 1\n")
    path = tmp_path / "a.yaml"
    path.write_text("base: &b {lr: 1, steps: 3}\nrun:\n  <<: *b\n  steps: 4\ninclude: [b.yaml]\n")
    assert load_yaml(path) == {"x": 1, "base": {"lr": 1, "steps": 3}, "run": {"lr": 1, "steps": 4}}


# (3) unbounded expansion: alias bombs, self-containing aliases, deep nesting, include fan-out --


def test_billion_laughs_file_is_refused_fast(capsys, workdir: Path) -> None:
    text = "\n".join(_laughs()) + "\n"
    assert len(text) < 500
    start = time.perf_counter()
    _config(capsys, workdir, text, f"more than {MAX_YAML_NODES} values", "job.yaml", "aliases")
    assert time.perf_counter() - start < 2.0  # was minutes and gigabytes before the bound


def test_billion_laughs_override_is_refused_fast(capsys, workdir: Path) -> None:
    body = ", ".join(_laughs())
    start = time.perf_counter()
    hostile(capsys, workdir, _baseline("eval.x={" + body + "}"), contains=("override", "expands"))
    assert time.perf_counter() - start < 2.0


def test_alias_inside_its_own_anchor(capsys, workdir: Path) -> None:
    _config(capsys, workdir, "a: &a [1, *a]\n", "job.yaml", "contains itself")
    _config(capsys, workdir, "a: &m {x: *m}\n", "job.yaml", "contains itself")
    hostile(capsys, workdir, _baseline("eval.x=&a [*a]"), contains=("override", "contains itself"))


def test_deep_nesting_is_refused_fast(capsys, workdir: Path) -> None:
    block = "".join(" " * i + f"k{i}:\n" for i in range(60)) + " " * 60 + "x: 1\n"
    _config(capsys, workdir, block, "job.yaml", "more than 40 levels deep")
    start = time.perf_counter()  # PyYAML's scanner is quadratic in `[` depth: 16 KB took 22 s
    _config(capsys, workdir, "a: " + "[" * 200_000 + "\n", "job.yaml", "more than 40 levels deep")
    assert time.perf_counter() - start < 2.0


def test_huge_flat_document_is_refused(capsys, workdir: Path) -> None:
    _config(capsys, workdir, "a: [" + ", ".join(["1"] * 20_500) + "]\n", f"{MAX_YAML_NODES}")
    _config(capsys, workdir, "a: " + "x" * 300_000 + "\n", "bytes", "limit")


def test_include_fan_out_is_bounded(capsys, workdir: Path) -> None:
    (workdir / "leaf.yaml").write_text("seed: 1\n")
    (workdir / "mid.yaml").write_text("include: [" + ", ".join(["leaf.yaml"] * 40) + "]\n")
    top = "include: [" + ", ".join(["mid.yaml"] * 40) + "]\n"
    start = time.perf_counter()
    _config(capsys, workdir, top, "job.yaml", "more than 64 files")
    assert time.perf_counter() - start < 2.0


# safe_load semantics are kept: tags never construct objects or run code ----------------------


def test_python_tags_never_run(capsys, workdir: Path) -> None:
    marker = workdir / "pwned"
    tag = f"!!python/object/apply:os.system ['touch {marker}']"
    _config(capsys, workdir, f"seed: {tag}\n", "job.yaml", "not valid YAML")
    assert parse_override(f"seed={tag}") == (["seed"], tag)  # kept as text, never run
    assert not marker.exists()
