"""Analysis figures: the numbers written beside each PNG, hand-computed on tiny data."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from reportfakes import metrics_records

from meddistill.data.snapshots import load_snapshots, save_snapshot
from meddistill.errors import ArtifactError, ConfigError
from meddistill.matching.losses import median_sigma
from meddistill.report import analyses

pytest.importorskip("matplotlib")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def assert_png(path: Path) -> None:
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.width > 100 and img.height > 100
        # not a blank canvas: a figure has dark axes and coloured lines
        arr = np.asarray(img.convert("RGB"))
        assert (arr.min(axis=2) < 128).mean() > 0.005


# ------------------------------------------------------------------------------ metrics files


def test_read_metrics_skips_a_torn_last_line_and_refuses_damage(tmp_path: Path) -> None:
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"stage": "distill", "iteration": 0}\n\n{"stage": "distill", "itera')
    assert analyses.read_metrics(p) == [{"stage": "distill", "iteration": 0}]
    p.write_text('{"a": 1}\nnot json\n{"b": 2}\n')
    with pytest.raises(ArtifactError, match="line 2"):
        analyses.read_metrics(p)
    with pytest.raises(ArtifactError, match="missing"):
        analyses.read_metrics(tmp_path / "absent.jsonl")


def test_distill_records_keep_the_last_record_of_a_resumed_iteration() -> None:
    recs = [
        {"stage": "distill", "iteration": 0, "loss": 1.0},
        {"stage": "distill", "iteration": 1, "loss": 2.0},
        {"stage": "eval", "iteration": 1},
        {"stage": "distill", "iteration": 1, "loss": 3.0},  # after a resume
    ]
    assert [r["loss"] for r in analyses.distill_records(recs)] == [1.0, 3.0]


# ------------------------------------------------------------------------------ loss curves


def test_loss_curves_write_raw_values_and_leave_out_zero_terms(tmp_path: Path) -> None:
    recs = metrics_records(iterations=6)
    res = analyses.loss_curves(recs, tmp_path / "loss_curves")
    assert res.png == tmp_path / "loss_curves.png" and res.data == tmp_path / "loss_curves.csv"
    assert_png(res.png)
    rows = read_csv(res.data)
    assert list(rows[0]) == ["run", "iteration", "skipped", "loss", "match_loss", "shape_loss"]
    assert [int(r["iteration"]) for r in rows] == list(range(6))
    assert float(rows[3]["loss"]) == pytest.approx(0.25)
    assert float(rows[3]["match_loss"]) == pytest.approx(0.225)


def test_loss_curves_overlay_runs(tmp_path: Path) -> None:
    runs = {"MTT": metrics_records(4), "PTM": metrics_records(3)}
    res = analyses.loss_curves(runs, tmp_path / "cmp.png", keys=["match_loss"])
    rows = read_csv(res.data)
    assert [(r["run"], r["iteration"]) for r in rows] == [
        ("MTT", "0"),
        ("MTT", "1"),
        ("MTT", "2"),
        ("MTT", "3"),
        ("PTM", "0"),
        ("PTM", "1"),
        ("PTM", "2"),
    ]
    assert list(rows[0]) == ["run", "iteration", "skipped", "match_loss"]


def test_loss_curves_need_distill_records(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no 'distill' records"):
        analyses.loss_curves([{"stage": "eval", "iteration": 3}], tmp_path / "x")


def test_missing_matplotlib_is_a_config_error_saying_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    assert not analyses.have_matplotlib()
    with pytest.raises(ConfigError, match=r"pip install matplotlib`$"):
        analyses.loss_curves(metrics_records(3), tmp_path / "x")
    assert not (tmp_path / "x.png").exists()


# ------------------------------------------------------------------------------ accuracy vs time


def test_eval_points_use_the_step_time_before_each_evaluation() -> None:
    recs = metrics_records(iterations=10, eval_at=(4, 8))  # 0.5 s per iteration
    recs.insert(3, {"stage": "distill", "iteration": 1, "loss": 1.0, "seconds": 2.5})  # resumed
    pts = analyses.eval_points(recs)
    assert [(p["iteration"], p["seconds"], p["final"]) for p in pts] == [
        (4, 0.5 + 2.5 + 0.5 + 0.5, False),
        (8, 4.0 + 4 * 0.5, False),
        (10, 4.0 + 6 * 0.5, True),
    ]
    assert pts[0]["acc_mean"] == 0.5 and pts[-1]["acc_mean"] == 0.625


def test_accuracy_vs_time_files(tmp_path: Path) -> None:
    res = analyses.accuracy_vs_time(metrics_records(10, eval_at=(5,)), tmp_path / "acc")
    assert_png(res.png)
    rows = read_csv(res.data)
    assert [(r["arch"], r["iteration"], r["seconds"], r["final"]) for r in rows] == [
        ("convnet", "5", "2.5", "False"),
        ("convnet", "10", "5.0", "True"),
    ]
    with pytest.raises(ConfigError, match="eval_every"):
        analyses.accuracy_vs_time([{"stage": "distill", "iteration": 0}], tmp_path / "none")


# ------------------------------------------------------------------------------ MMD


def test_mmd_within_class_matches_hand_computation() -> None:
    # class 0: points 0, 1, 3 (foundation = first ceil(3/2) = 2); class 1: a single image
    images = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    labels = torch.tensor([0, 0, 0, 1])
    out = analyses.mmd_within_class(images, labels, sigma=1.0)
    assert set(out) == {0}  # a class of one image has no pair
    e = math.exp
    k01, k02, k12 = e(-0.5), e(-4.5), e(-2.0)
    mmd2 = (2 + 2 * k01) / 4 + 1.0 - (k02 + k12)  # mean k(f,f') + mean k(c,c') - 2 mean k(f,c)
    assert out[0]["mmd2"] == pytest.approx(mmd2, rel=1e-6)
    assert out[0]["similarity"] == pytest.approx((k01 + k02 + k12) / 3, rel=1e-6)
    assert out[0]["n"] == 3


def test_mmd_default_sigma_is_the_median_heuristic() -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(6, 1, 4, 4, generator=gen)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    sigma = median_sigma(images, labels)
    assert analyses.mmd_within_class(images, labels) == analyses.mmd_within_class(
        images, labels, sigma
    )
    with pytest.raises(ConfigError, match="sigma"):
        analyses.mmd_within_class(images, labels, sigma=0.0)


def test_identical_images_have_zero_mmd_and_similarity_one() -> None:
    images = torch.ones(4, 1, 2, 2)
    out = analyses.mmd_within_class(images, torch.tensor([0, 0, 1, 1]), sigma=1.0)
    for c in (0, 1):
        assert out[c]["mmd2"] == pytest.approx(0.0, abs=1e-7)
        assert out[c]["similarity"] == pytest.approx(1.0)


def test_class_mmd_over_run_uses_one_sigma_for_every_snapshot(tmp_path: Path) -> None:
    labels = torch.tensor([0, 0, 1, 1])
    base = torch.tensor([[0.0], [1.0], [0.0], [2.0]])
    snaps = [(10, base * 2), (0, base)]  # out of order on purpose
    res = analyses.class_mmd_over_run(snaps, labels, tmp_path / "mmd", class_names=["a", "b"])
    assert_png(res.png)
    data = json.loads(res.data.read_text())
    assert data["iterations"] == [0, 10]
    assert data["sigma"] == pytest.approx(median_sigma(base, labels))  # of the first snapshot
    s = data["sigma"]

    def mmd(d: float) -> float:
        return 2 - 2 * math.exp(-(d * d) / (2 * s * s))

    assert data["classes"]["a"] == pytest.approx([mmd(1.0), mmd(2.0)])
    assert data["classes"]["b"] == pytest.approx([mmd(2.0), mmd(4.0)])
    assert data["mean"] == pytest.approx([(mmd(1) + mmd(2)) / 2, (mmd(2) + mmd(4)) / 2])
    with pytest.raises(ConfigError, match="IPC >= 2"):
        analyses.class_mmd_over_run([(0, base[:2])], torch.tensor([0, 1]), tmp_path / "one")


def test_snapshots_round_trip_sorted_by_iteration(tmp_path: Path) -> None:
    labels = torch.tensor([0, 1])
    for it in (30, 5):
        save_snapshot(tmp_path, it, torch.full((2, 1, 2, 2), float(it)), labels)
    snaps = load_snapshots(tmp_path)
    assert [s[0] for s in snaps] == [5, 30]
    assert torch.equal(snaps[1][1], torch.full((2, 1, 2, 2), 30.0))
    assert torch.equal(snaps[0][2], labels)
    assert load_snapshots(tmp_path / "nothing") == []
    (tmp_path / "snapshots" / "iter_0000001.safetensors").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="iter_0000001"):
        load_snapshots(tmp_path)


# ------------------------------------------------------------------------------ stability


def test_stability_summary_uses_population_std(tmp_path: Path) -> None:
    res = analyses.stability({"MTT": [0.5, 0.7], "HoP-TM": [0.6, 0.6, 0.9]}, tmp_path / "st")
    assert_png(res.png)
    data = json.loads(res.data.read_text())
    assert data["MTT"]["mean"] == pytest.approx(0.6) and data["MTT"]["std"] == pytest.approx(0.1)
    assert data["HoP-TM"]["median"] == pytest.approx(0.6)
    assert data["HoP-TM"]["std"] == pytest.approx(math.sqrt(0.02))
    assert data["HoP-TM"]["n"] == 3 and data["HoP-TM"]["max"] == pytest.approx(0.9)
    with pytest.raises(ConfigError, match="finite"):
        analyses.stability({"x": [0.5, float("nan")]}, tmp_path / "bad")
    with pytest.raises(ConfigError, match="no per-network"):
        analyses.stability({"x": []}, tmp_path / "empty")


# ------------------------------------------------------------------------------ t-SNE


def clustered(seed: int, n_per_class: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n_per_class)
    centres = np.eye(3, 8) * 20.0
    return centres[labels] + rng.normal(size=(labels.size, 8)), labels


def test_tsne_is_reproducible_and_keeps_clusters(tmp_path: Path) -> None:
    feats, labels = clustered(0)
    other, _ = clustered(1)
    sets = {"PTM": feats, "FTD": torch.from_numpy(other)}
    res = analyses.tsne_features(sets, labels, tmp_path / "tsne", class_names=["a", "b", "c"])
    assert_png(res.png)
    rows = read_csv(res.data)
    assert len(rows) == 2 * labels.size and {r["set"] for r in rows} == {"PTM", "FTD"}
    again = analyses.tsne_features(sets, labels, tmp_path / "tsne2")
    assert again.data.read_text() == res.data.read_text()  # fixed random_state
    xy = np.array([[float(r["x"]), float(r["y"])] for r in rows if r["set"] == "PTM"])
    d = np.linalg.norm(xy[:, None] - xy[None], axis=2)
    same = labels[:, None] == labels[None]
    off = ~np.eye(labels.size, dtype=bool)
    assert d[same & off].mean() < 0.5 * d[~same].mean()


def test_tsne_checks_its_input(tmp_path: Path) -> None:
    feats, labels = clustered(0)
    with pytest.raises(ConfigError, match="rows"):
        analyses.tsne_features({"a": feats[:5]}, labels, tmp_path / "x")
    with pytest.raises(ConfigError, match="NaN"):
        bad = feats.copy()
        bad[0, 0] = np.nan
        analyses.tsne_features({"a": bad}, labels, tmp_path / "x")
