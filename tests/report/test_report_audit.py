"""`meddistill report` on an audit folder: the traffic light and its paragraph, the numbers,
the closest pairs and the attacks' ROC curves; and a distill run folder showing the audit it
keeps (RUN/audit/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pageparse import local_file, read_page
from reportfakes import make_run
from toydata import noise_dataset

import meddistill as md
from meddistill.data.synthetic import SyntheticSet
from meddistill.models import ModelSpec
from meddistill.report.html import build_report, report_kind

FAST = dict(num_nets=1, epochs=5, full_epochs=1, bootstrap=20, pairs=2, device="cpu",
            model=ModelSpec(depth=1, width=4), progress=False)  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    return one_thread


def copied_set(ds, index: list[int]) -> SyntheticSet:
    return SyntheticSet(
        images=ds.train.images[index].clone(), labels=ds.train.labels[index].clone(),
        normalization=ds.normalization, class_names=list(ds.class_names), dataset=ds.name,
        source_id=ds.source_id, syn_lr=0.01, meta={"method": "mtt"},
    )  # fmt: skip


def audit_into(folder: Path) -> dict:
    ds = noise_dataset(n_train=24, n_val=24)
    md.audit(copied_set(ds, [0, 1, 2]), ds, out=folder, **FAST)
    return json.loads((folder / "audit.json").read_text())


def test_audit_page_shows_the_light_numbers_pairs_and_roc_curves(tmp_path: Path) -> None:
    folder = tmp_path / "aud"
    audit = audit_into(folder)
    assert report_kind(folder) == "audit"
    page = read_page(build_report(folder))
    assert page.title.startswith("Privacy audit · MTT · noise")
    assert "light-red" in page.ids and "verdict-paragraph" in page.ids
    text = (folder / "report.html").read_text()
    assert "RED" in text and "Red: do not share this synthetic set as it is." in text
    attacks = page.tables["attacks"]
    assert [r[0] for r in attacks.body][:1] == ["the set (loss attack)"]
    auc = audit["attack"]["synthetic"]["auc"]
    assert attacks.body[0][2].startswith(f"{auc:.3f} [")
    assert page.tables["memorisation"].body[0][:2] == ["pixel", "3 of 3"]
    srcs = {Path(img["src"]).name for img in page.imgs}
    assert {"pairs.png", "pairs_features.png", "attack_roc.png"} <= srcs
    for img in page.imgs:
        assert local_file(folder, img["src"]).is_file()
    curves = json.loads((folder / "analysis" / "attack_roc.json").read_text())
    assert {"the set (loss attack)", "full data (loss attack)"} <= set(curves)
    assert curves["the set (loss attack)"] == audit["attack"]["synthetic"]["roc"]
    no_figures = read_page(build_report(folder, figures=False))
    assert "roc" not in no_figures.ids and "attacks" in no_figures.tables


def test_a_distill_run_page_shows_the_audit_it_keeps(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    page = read_page(build_report(run))
    assert "audit" not in page.ids  # no audit yet: no section
    audit_into(run / "audit")
    assert report_kind(run) == "run"
    page = read_page(build_report(run))
    assert ("h2", "Privacy audit") in page.headings and "light-red" in page.ids
    assert any(local_file(run, h).name == "audit.json" for h in page.links)
    assert any(Path(img["src"]).name == "pairs.png" for img in page.imgs)
    assert not (run / "audit" / "report.html").exists()
