"""The run page shows the experts the set was matched against, as buffer.json records them."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from meddistill.report.run_folder import RunFolder
from meddistill.report.run_page import _experts_section


def test_the_page_lists_each_experts_val_and_test_accuracy(tmp_path: Path) -> None:
    buffer = tmp_path / "runs" / "buffers" / "b"
    buffer.mkdir(parents=True)
    expert = {"index": 0, "seed": 1, "held_out": "val", "final_train_acc": 0.5,
              "final_val_acc": 0.625, "final_test_acc": 0.75, "val_acc": [0.125, 0.625]}  # fmt: skip
    (buffer / "buffer.json").write_text(json.dumps({"experts": [expert]}))
    run = tmp_path / "runs" / "distill" / "r"
    (run / "synthetic").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"method": "hoptm", "buffer": None}))
    (run / "synthetic" / "meta.json").write_text(json.dumps({"buffer": str(buffer)}))
    html = _experts_section(RunFolder.read(run))
    assert html is not None and "Expert buffer" in html
    for cell in ("50.00", "62.50", "75.00", "12.5, 62.5", "val"):
        assert cell in html
    assert RunFolder.read(run).job()["method"] == "hoptm"  # the flat config.yaml is the job


def test_no_section_without_a_readable_buffer(tmp_path: Path) -> None:
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"method": "dm"}))
    assert _experts_section(RunFolder.read(run)) is None
