"""The report page's HTML structure, parsed with the stdlib: titles, sections, images, tables."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from pageparse import local_file, read_page
from reportfakes import CLASS_NAMES, EVIL, make_baseline_run, make_benchmark, make_run

from meddistill.data.results import SCHEMA_VERSION
from meddistill.errors import ArtifactError
from meddistill.report.html import REPORT_FILE, build_report, report_kind
from meddistill.report.page import duration, esc

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def run_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = make_run(tmp_path_factory.mktemp("runs") / "toy-hoptm-ipc2")
    return build_report(folder)


def test_run_page_title_sections_and_key_numbers(run_report: Path) -> None:
    assert run_report.name == REPORT_FILE
    page = read_page(run_report)
    assert page.title == "HoP-TM · toy · IPC 2"
    assert page.headings[0] == ("h1", "HoP-TM · toy · IPC 2")
    assert [h for tag, h in page.headings if tag == "h2"] == [
        "Key numbers",
        "Compared with real data",
        "Synthetic images per class",
        "Analysis",
        "Evaluation",
        "Configuration",
    ]
    assert "script" not in page.tags  # static: no JavaScript at all
    text = run_report.read_text()
    assert "62.50 ± 2.04" in text and "20 / 20" in text and "10 s" in text and "0.0123" in text


def test_every_image_and_link_is_a_relative_file_that_exists(run_report: Path) -> None:
    page = read_page(run_report)
    folder = run_report.parent
    srcs = [img["src"] for img in page.imgs]
    assert srcs[:2] == [
        "grids/class_00_alpha.png",
        "grids/class_01_beta_script_alert_x_script_co.png",
    ]
    assert {
        "analysis/loss_curves.png",
        "analysis/accuracy_vs_time.png",
        "analysis/stability.png",
        "analysis/class_mmd.png",
    } <= set(srcs)
    for src in srcs + [h for h in page.links]:
        assert local_file(folder, src).is_file(), src
    assert all(img.get("alt") for img in page.imgs)


def test_page_still_works_after_the_folder_moves(run_report: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(run_report.parent, moved)
    page = read_page(moved / REPORT_FILE)
    for img in page.imgs:
        assert local_file(moved, img["src"]).is_file()


def test_class_names_are_escaped_not_interpreted(run_report: Path) -> None:
    page = read_page(run_report)
    assert f"class 1: {EVIL}" in page.figcaptions
    text = run_report.read_text()
    assert "<script>" not in text and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    log_pre = [p for p in page.pres if "started" in p]
    assert log_pre == ["2026-01-01 INFO started <run>"]  # escaped in the file, text when parsed


def test_evaluation_and_mmd_tables(run_report: Path) -> None:
    page = read_page(run_report)
    final = page.tables["final-eval"]
    assert final.head[0][:7] == ["set", "IPC", "architecture", "networks", "test accuracy (%)",
                                 "test AUC", "val accuracy (%)"]  # fmt: skip
    assert final.body == [
        [
            "HoP-TM",
            "2",
            "ConvNet",
            "3",
            "62.50 ± 2.04",
            "0.800 ± 0.000",
            "-",
            "0.0123",
            "60.0, 65.0, 62.5",
        ]
    ]
    periodic = page.tables["periodic-eval"]
    assert periodic.body == [["10", "5 s", "ConvNet", "50.00 ± 2.00", "0.700 ± 0.010"]]
    mmd = page.tables["class-mmd"]
    assert [row[:2] for row in mmd.body] == [[CLASS_NAMES[0], "2"], [CLASS_NAMES[1], "2"]]
    assert mmd.body[0][2:] == ["0.0000", "1.0000"]  # class 0 is one solid colour


def test_config_is_shown_in_details(run_report: Path) -> None:
    page = read_page(run_report)
    assert page.summaries[0] == "Resolved configuration (config.yaml)"
    assert "lr_img: 100.0" in page.pres[0]


def test_unfinished_run_and_no_figures(tmp_path: Path) -> None:
    folder = make_run(tmp_path / "partial", finished=False, snapshots=False)
    page = read_page(build_report(folder, figures=False))
    assert page.imgs == []
    assert not (folder / "analysis").exists()
    text = (folder / REPORT_FILE).read_text()
    assert "no results.json yet" in text and "8 / 20" in text
    assert "no synthetic set yet" in text


def test_run_without_matplotlib_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    folder = make_run(tmp_path / "run", snapshots=False)
    page = read_page(build_report(folder))
    text = (folder / REPORT_FILE).read_text()
    assert "pip install matplotlib" in text and "meddistill[plots]" not in text
    assert all(img["src"].startswith("grids/") for img in page.imgs)


def test_grids_are_made_when_the_run_folder_has_none(tmp_path: Path) -> None:
    folder = make_run(tmp_path / "run", snapshots=False)
    shutil.rmtree(folder / "grids")
    page = read_page(build_report(folder, figures=False))
    assert [img["src"] for img in page.imgs][:1] == ["analysis/grids/class_00_alpha.png"]
    assert all(local_file(folder, img["src"]).is_file() for img in page.imgs)


def test_report_is_written_atomically_and_replaces_the_old_one(tmp_path: Path) -> None:
    folder = make_run(tmp_path / "run", snapshots=False)
    (folder / REPORT_FILE).write_text("old")
    build_report(folder, figures=False)
    assert (folder / REPORT_FILE).read_text().startswith("<!DOCTYPE html>")
    assert not list(folder.glob(".*.tmp"))


def test_baseline_page_shows_the_networks_of_the_baseline_report(tmp_path: Path) -> None:
    page = read_page(build_report(make_baseline_run(tmp_path / "baseline"), figures=False))
    assert page.title == "Baseline · toy"
    assert page.tables["final-eval"].body == [
        [
            "Full dataset",
            "-",
            "ConvNet",
            "2",
            "85.00 ± 5.00",
            "0.900 ± 0.000",
            "-",
            "-",
            "90.0, 80.0",
        ],
        ["Random", "2", "ConvNet", "2", "85.00 ± 5.00", "0.900 ± 0.000", "-", "-", "40.0, 50.0"],
    ]


def test_results_json_is_read_through_its_schema(tmp_path: Path) -> None:
    folder = make_run(tmp_path / "run", snapshots=False)
    results = json.loads((folder / "results.json").read_text())
    assert results["schema_version"] == SCHEMA_VERSION
    del results["schema_version"]  # a file from before versioning renders the same page
    before = build_report(folder, figures=False).read_text()
    (folder / "results.json").write_text(json.dumps(results))
    assert build_report(folder, figures=False).read_text() == before
    results["schema_version"] = SCHEMA_VERSION + 1
    (folder / "results.json").write_text(json.dumps(results))
    with pytest.raises(ArtifactError, match="upgrade meddistill"):
        build_report(folder, figures=False)
    results["schema_version"] = SCHEMA_VERSION
    results["rows"][0]["archs"]["convnet"]["acc_mean"] = "62%"
    (folder / "results.json").write_text(json.dumps(results))
    with pytest.raises(ArtifactError, match=r"results.json: rows\[0\]\.archs\.convnet\.acc_mean"):
        build_report(folder, figures=False)


def test_not_a_run_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="neither a run folder"):
        build_report(tmp_path / "empty")
    with pytest.raises(ArtifactError, match="does not exist"):
        report_kind(tmp_path / "missing")


def test_helpers() -> None:
    assert esc('<a href="x">&</a>') == "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
    assert [duration(s) for s in (12.4, 246.1, 7500)] == ["12 s", "4 min 6 s", "2 h 05 min"]


# ------------------------------------------------------------------------------ benchmark


@pytest.fixture(scope="module")
def bench_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = make_benchmark(tmp_path_factory.mktemp("bench") / "runs")
    assert report_kind(folder) == "benchmark"
    return build_report(folder)


def test_benchmark_main_table_rows_and_values(bench_report: Path) -> None:
    page = read_page(bench_report)
    assert page.title == "Benchmark · runs"
    table = page.tables["main-all-convnet-acc"]
    assert table.head == [["", "toy"], ["Method", "IPC 2"]]
    assert table.body == [
        ["Full dataset", "91.00 ± 1.00"],
        ["Random", "35.00 ± 5.00"],
        ["MTT", "55.00 ± 5.00"],
        ["HoP-TM", "71.00 ± 1.00"],
    ]
    lenet = page.tables["main-all-lenet-acc"]
    assert lenet.body[3] == ["HoP-TM", "61.00 ± 1.00"]
    assert "<strong>71.00 ± 1.00</strong>" in bench_report.read_text()  # best method in bold
    assert page.tables["main-all-convnet-auc"].body[0] == ["Full dataset", "0.500 ± 0.000"]


def test_benchmark_dataset_section(bench_report: Path) -> None:
    page = read_page(bench_report)
    assert ("h2", "Dataset: toy") in page.headings
    cross = page.tables["cross-arch-toy-ipc2"]
    assert cross.head == [["Method", "ConvNet", "LeNet"]]
    assert cross.body[-1] == ["HoP-TM", "71.00 ± 1.00", "61.00 ± 1.00"]
    srcs = [img["src"] for img in page.imgs]
    assert srcs == [
        "analysis/stability_toy_ipc2.png",
        "analysis/loss_toy_ipc2.png",
        "distill/toy-mtt/grids/all.png",
        "distill/toy-hoptm/grids/all.png",
    ]
    for src in srcs:
        assert local_file(bench_report.parent, src).is_file()
    assert "MTT, seed 0" in page.figcaptions and "HoP-TM, seed 0" in page.figcaptions
