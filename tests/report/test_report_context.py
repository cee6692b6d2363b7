"""What a newcomer needs to read a run page: the headline accuracy against the random subset
and the full data (found where meddistill wrote them, or the command that makes them), loss
curves on a linear axis with the mask coverage and step size beside them, labelled grids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pageparse import read_page
from PIL import Image
from reportfakes import (
    CLASS_NAMES,
    NORM,
    make_baseline_run,
    make_benchmark,
    make_run,
    synthetic_images,
)
from reportfakes import metrics_records as records

from meddistill.data.grids import LABEL_PAD, save_class_grids
from meddistill.report import analyses
from meddistill.report.html import build_report

HEADER = ["set", "IPC", "architecture", "accuracy (%)", "% of full data", "networks"]


def page_of(run: Path) -> Any:
    return read_page(build_report(run, figures=False))


def notes(run: Path) -> str:
    return (run / "report.html").read_text()


# ------------------------------------------------------------------------------ references


def test_references_from_a_baseline_folder(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run = make_run(runs / "distill" / "toy-hoptm-ipc2", snapshots=False)
    base = make_baseline_run(runs / "baseline" / "toy-1234", full=0.80, random=0.40)
    page = page_of(run)
    table = page.tables["references"]
    assert table.head[0][:6] == HEADER
    source = str((base / "results.json").resolve())
    assert table.body == [
        ["HoP-TM (this run)", "2", "ConvNet", "62.50 ± 2.04", "78.1 %", "3", "-",
         "toy-hoptm-ipc2/results.json"],
        ["Random real subset", "2", "ConvNet", "40.00 ± 5.00", "50.0 %", "2", "300", source],
        ["Full training set", "-", "ConvNet", "80.00 ± 5.00", "100.0 %", "2", "30", source],
    ]  # fmt: skip
    assert ("h2", "Compared with real data") in page.headings
    text = notes(run)
    assert "share of full-data accuracy, ConvNet" in text and "meddistill baseline" not in text


def test_references_from_a_results_database(tmp_path: Path) -> None:
    runs = make_benchmark(tmp_path / "runs")  # full 0.90/0.92, random 0.30/0.40, ConvNet
    page = page_of(runs / "distill" / "toy-hoptm")
    body = page.tables["references"].body
    db = str((runs / "results.sqlite").resolve())
    assert [row[:7] for row in body] == [
        ["HoP-TM (this run)", "2", "ConvNet", "62.50 ± 2.04", "68.7 %", "3", "-"],
        ["Random real subset", "2", "ConvNet", "35.00 ± 5.00", "38.5 %", "2", "2"],
        ["Full training set", "-", "ConvNet", "91.00 ± 1.00", "100.0 %", "2", "2"],
    ]
    assert body[1][7].startswith(db + " (setting ") and body[2][7].startswith(db)


def test_no_reference_says_which_command_makes_it(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run = make_run(runs / "distill" / "toy-hoptm-ipc2", snapshots=False)
    page = page_of(run)
    assert len(page.tables["references"].body) == 1
    text = notes(run)
    assert "No accuracy of the random real subset at IPC 2 or of the full training set" in text
    assert (
        f"<code>meddistill baseline --dataset toy --ipc 2 --runs-dir {runs.resolve()}</code>"
        in text
    )
    assert "share of full-data accuracy" not in text  # no card without a full-data number


def test_only_the_missing_reference_is_asked_for(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run = make_run(runs / "distill" / "toy-hoptm-ipc2", snapshots=False)
    make_baseline_run(runs / "baseline" / "toy-1234", ipc=3)  # another IPC: full data only
    page = page_of(run)
    assert [row[0] for row in page.tables["references"].body][1:] == ["Full training set"]
    text = notes(run)
    assert "No accuracy of the random real subset at IPC 2 was found" in text
    assert f"--ipc 2 --runs-dir {runs.resolve()} --no-full</code>" in text


def test_a_baseline_of_other_data_is_not_used(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run = make_run(runs / "distill" / "toy-hoptm-ipc2", snapshots=False)  # source toy-source
    make_baseline_run(runs / "baseline" / "toy-1234", source_id="other")
    page = page_of(run)
    assert len(page.tables["references"].body) == 1
    text = notes(run)
    assert "made from other toy data (source other, this run toy-source)" in text
    assert "<code>meddistill baseline --dataset toy" in text


def test_a_baseline_page_has_no_references(tmp_path: Path) -> None:
    page = page_of(make_baseline_run(tmp_path / "runs" / "baseline" / "toy-1"))
    assert "references" not in page.tables


# ------------------------------------------------------------------------------ curves


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The matplotlib figures the analyses save, to look at their axes."""
    figs: list[Any] = []
    save = analyses._save_figure
    monkeypatch.setattr(
        analyses, "_save_figure", lambda fig, png: (figs.append(fig), save(fig, png))
    )
    return figs


def test_loss_axis_is_linear_from_zero(tmp_path: Path, drawn: list[Any]) -> None:
    analyses.loss_curves(records(30, mask=True), tmp_path / "loss")
    axes = drawn[0].axes
    assert [ax.get_title() for ax in axes] == ["loss", "match loss", "shape loss"]
    assert all(ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0 for ax in axes)
    analyses.loss_curves(records(30), tmp_path / "log", log=True)
    assert drawn[1].axes[0].get_yscale() == "log"
    assert drawn[1].axes[0].get_title() == "loss (log scale)"


def test_coverage_and_step_size_curves(tmp_path: Path, drawn: list[Any]) -> None:
    assert analyses.step_keys(records(5, mask=True)) == ["mask_utilisation", "syn_lr"]
    assert analyses.step_keys(records(5)) == ["syn_lr"]  # coverage 1.0 throughout: no mask
    assert analyses.step_keys([{"stage": "distill", "iteration": 0, "loss": 1.0}]) == []
    res = analyses.step_curves(records(30, mask=True), tmp_path / "steps")
    titles = [ax.get_title() for ax in drawn[0].axes]
    assert titles == ["mask coverage (% of parameters matched)", "learned step size"]
    coverage = drawn[0].axes[0].lines[0].get_ydata()
    assert coverage[0] == pytest.approx(3.0) and coverage[-1] == pytest.approx(100.0)
    header = res.data.read_text().splitlines()[0]
    assert header == "run,iteration,skipped,mask_utilisation,syn_lr"


def test_run_page_shows_loss_coverage_and_step_size(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", snapshots=False, mask=True)
    page = read_page(build_report(run))
    srcs = [img["src"] for img in page.imgs]
    assert "analysis/loss_curves.png" in srcs and "analysis/step_curves.png" in srcs
    captions = " ".join(page.figcaptions)
    assert "Loss terms by iteration (linear axes)" in captions
    assert "rises as the mask admits harder ones" in captions
    assert "Mask coverage and learned step size by iteration" in captions


def test_no_coverage_curve_without_a_mask(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", snapshots=False)
    page = read_page(build_report(run))
    assert "Learned step size by iteration" in " ".join(page.figcaptions)
    assert "mask" not in " ".join(page.figcaptions)


# ------------------------------------------------------------------------------ grids


def test_all_png_names_each_row_in_a_left_margin(tmp_path: Path) -> None:
    images, labels = synthetic_images(ipc=2)
    save_class_grids(images, labels, CLASS_NAMES, NORM, tmp_path)
    full = np.asarray(Image.open(tmp_path / "all.png").convert("RGB"))
    row0 = np.asarray(Image.open(tmp_path / "class_00_alpha.png").convert("RGB"))
    margin = full.shape[1] - row0.shape[1]  # a row of all.png is the class grid (IPC 2)
    assert margin > 2 * LABEL_PAD and full.shape[0] == 2 * row0.shape[0]
    assert np.array_equal(full[: row0.shape[0], margin:], row0)
    text = full[:, :margin] < 128  # dark pixels: the class names
    assert text[: row0.shape[0]].any() and text[row0.shape[0] :].any()
    assert (full[:, : LABEL_PAD - 1] == 255).all()  # the padding stays white


def test_class_names_appear_on_the_page(tmp_path: Path) -> None:
    page = page_of(make_run(tmp_path / "run", snapshots=False))
    assert [f"class {i}: {n}" for i, n in enumerate(CLASS_NAMES)] == page.figcaptions[:2]
