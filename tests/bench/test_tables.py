"""Paper-style tables from hand-made database rows: exact Markdown, CSV and LaTeX text."""

from __future__ import annotations

from pathlib import Path

import pytest

from meddistill.bench.db import Artifact, Result, ResultsDB
from meddistill.bench.tables import cross_arch_table, ipc_vs_table, main_table, make_table
from meddistill.errors import ConfigError


class Rows:
    """Adds one artifact and one result row per accuracy (networks k = 0, 1, ...)."""

    def __init__(self, db: ResultsDB) -> None:
        self.db = db
        db.add_eval("ev", {})
        db.add_eval("ev2", {})

    def add(
        self,
        method: str,
        ipc: int | None,
        accs: list[float],
        *,
        seed: int = 0,
        arch: str = "convnet",
        dataset: str = "toy",
        setting: str | None = None,
        eval_id: str = "ev",
        val_accs: list[float] | None = None,
    ) -> str:
        art_id = f"{dataset}-{method}-{ipc}-{seed}-{setting}"
        if self.db.artifact(art_id) is None:
            self.db.add_artifact(
                Artifact(
                    id=art_id,
                    kind="baseline" if method in ("full", "random") else "synthetic",
                    dataset=dataset,
                    method=method,
                    ipc=ipc,
                    seed=seed,
                    setting=setting or f"{dataset}-{method}-{ipc}",
                )
            )
        for k, acc in enumerate(accs):
            self.db.add_result(
                Result(
                    artifact_id=art_id,
                    arch=arch,
                    eval_id=eval_id,
                    eval_seed=1000 * seed + k,
                    net_index=k,
                    acc=acc,
                    auc=0.5,
                    val_acc=None if val_accs is None else val_accs[k],
                    loss=1.0,
                    epochs=300,
                    lr=0.01,
                )
            )
        return art_id


@pytest.fixture
def db(tmp_path: Path) -> ResultsDB:
    database = ResultsDB(tmp_path / "results.sqlite")
    rows = Rows(database)
    rows.add("full", None, [0.90, 0.92])
    rows.add("random", 1, [0.30, 0.40])
    rows.add("random", 10, [0.50, 0.50])
    rows.add("mtt", 1, [0.5], seed=0)  # two seeds, one network each: pooled
    rows.add("mtt", 1, [0.7], seed=1)
    rows.add("mtt", 10, [0.70])
    rows.add("hoptm", 1, [0.62, 0.62])
    rows.add("hoptm", 10, [0.65, 0.75])
    rows.add("mtt", 1, [0.40], arch="lenet")
    rows.add("hoptm", 1, [0.45], arch="lenet")
    yield database
    database.close()


MAIN_MD = """\
| Method | toy IPC 1 | toy IPC 10 |
|---|---|---|
| Full dataset | 91.00 ± 1.00 |  |
| Random | 35.00 ± 5.00 | 50.00 ± 0.00 |
| MTT | 60.00 ± 10.00 | **70.00 ± 0.00** |
| HoP-TM | **62.00 ± 0.00** | **70.00 ± 5.00** |
"""

MAIN_CSV = """\
Method,toy IPC 1,toy IPC 10
Full dataset,91.00 ± 1.00,
Random,35.00 ± 5.00,50.00 ± 0.00
MTT,60.00 ± 10.00,70.00 ± 0.00
HoP-TM,62.00 ± 0.00,70.00 ± 5.00
"""

MAIN_TEX = r"""\begin{tabular}{lcc}
\toprule
 & \multicolumn{2}{c}{toy} \\
\cmidrule(lr){2-3}
Method & IPC 1 & IPC 10 \\
\midrule
Full dataset & \multicolumn{2}{c}{91.00 $\pm$ 1.00} \\
Random & 35.00 $\pm$ 5.00 & 50.00 $\pm$ 0.00 \\
\midrule
MTT & 60.00 $\pm$ 10.00 & \textbf{70.00 $\pm$ 0.00} \\
HoP-TM & \textbf{62.00 $\pm$ 0.00} & \textbf{70.00 $\pm$ 5.00} \\
\bottomrule
\end{tabular}
"""


def test_main_table_exact_text(db: ResultsDB) -> None:
    # MTT at IPC 1: networks 0.5 and 0.7 of two seeds -> 60 +- 10 (population std; the
    # sample std would read 14.14). Ties as printed (70.00 at IPC 10) are both bold.
    table = main_table(db)
    assert table.markdown() == MAIN_MD
    assert table.csv() == MAIN_CSV
    assert table.latex() == MAIN_TEX
    assert table.render("md") == MAIN_MD
    with pytest.raises(ConfigError, match="unknown table format"):
        table.render("html")


def test_main_table_filters_and_order(db: ResultsDB) -> None:
    table = main_table(db, methods=["hoptm", "mtt"], ipcs=[1])
    assert table.markdown() == (
        "| Method | toy IPC 1 |\n"
        "|---|---|\n"
        "| HoP-TM | **62.00 ± 0.00** |\n"
        "| MTT | 60.00 ± 10.00 |\n"
    )
    auc = main_table(db, metric="auc", methods=["mtt"], ipcs=[10])
    assert auc.csv() == "Method,toy IPC 10\nMTT,0.500 ± 0.000\n"
    with pytest.raises(ConfigError, match="no results"):
        main_table(db, arch="resnet18")


def test_cross_architecture_table(db: ResultsDB) -> None:
    table = cross_arch_table(db, dataset="toy", ipc=1, archs=["convnet", "lenet"])
    assert table.markdown() == (
        "| Method | ConvNet | LeNet |\n"
        "|---|---|---|\n"
        "| Full dataset | 91.00 ± 1.00 | - |\n"
        "| Random | 35.00 ± 5.00 | - |\n"
        "| MTT | 60.00 ± 10.00 | 40.00 ± 0.00 |\n"
        "| HoP-TM | **62.00 ± 0.00** | **45.00 ± 0.00** |\n"
    )
    assert "Random & 35.00 $\\pm$ 5.00 & -- \\\\\n\\midrule\nMTT" in table.latex()
    with pytest.raises(ConfigError, match="several of IPCs .*--ipc"):
        cross_arch_table(db, dataset="toy")


def test_ptm_table5_layout(tmp_path: Path) -> None:
    with ResultsDB(tmp_path / "r.sqlite") as db:
        rows = Rows(db)
        rows.add("mtt", 2, [0.50])
        rows.add("mtt", 4, [0.60])
        rows.add("ftd", 2, [0.52])
        rows.add("ptm", 2, [0.60, 0.62])
        rows.add("ptm", 4, [0.99])  # our other IPC is not part of the table
        table = ipc_vs_table(db, "ptm", 2, ["mtt", "ftd"], [2, 4])
        assert table.markdown() == (
            "| IPC | MTT | FTD |\n"
            "|---|---|---|\n"
            "| 2 | 50.00 ± 0.00 | 52.00 ± 0.00 |\n"
            "| 4 | 60.00 ± 0.00 | - |\n"
            "| PTM (IPC 2) | 61.00 ± 1.00 |  |\n"
        )
        assert table.latex() == (
            "\\begin{tabular}{lcc}\n"
            "\\toprule\n"
            "IPC & MTT & FTD \\\\\n"
            "\\midrule\n"
            "2 & 50.00 $\\pm$ 0.00 & 52.00 $\\pm$ 0.00 \\\\\n"
            "4 & 60.00 $\\pm$ 0.00 & -- \\\\\n"
            "\\midrule\n"
            "PTM (IPC 2) & \\multicolumn{2}{c}{61.00 $\\pm$ 1.00} \\\\\n"
            "\\bottomrule\n"
            "\\end{tabular}\n"
        )


def test_a_cell_mixing_two_settings_is_refused_unless_one_grid_is_chosen(db: ResultsDB) -> None:
    rows = Rows.__new__(Rows)
    rows.db = db
    other = rows.add("mtt", 10, [0.10], setting="more-iterations", eval_id="ev2")
    with pytest.raises(ConfigError, match=r"\(toy, mtt, IPC 10, convnet\) mixes .* --grid"):
        main_table(db)
    db.add_grid_cell("short", other, "ev2")
    table = main_table(db, grid="short")
    assert table.csv() == "Method,toy IPC 10\nMTT,10.00 ± 0.00\n"


def test_latex_escapes_labels(tmp_path: Path) -> None:
    with ResultsDB(tmp_path / "r.sqlite") as db:
        Rows(db).add("my_method", 1, [0.5], dataset="a&b")
        tex = main_table(db).latex()
        assert "\\multicolumn{1}{c}{a\\&b}" in tex
        assert "my\\_method & \\textbf{50.00 $\\pm$ 0.00}" in tex


def test_make_table_dispatches_to_each_kind(db: ResultsDB) -> None:
    assert make_table(db).markdown() == MAIN_MD
    cross = make_table(db, "cross-arch", datasets=["toy"], ipcs=[1], archs=["convnet", "lenet"])
    assert cross.markdown() == cross_arch_table(db, ipc=1, archs=["convnet", "lenet"]).markdown()
    vs = make_table(db, "ipc-vs", ours="hoptm", theirs=["mtt"], ipcs=[1, 10])
    assert vs.csv() == "IPC,MTT\n10,70.00 ± 0.00\nHoP-TM (IPC 1),62.00 ± 0.00\n"
    with pytest.raises(ConfigError, match="our IPC first"):
        make_table(db, "ipc-vs", ours="hoptm", theirs=["mtt"], ipcs=[1])
    with pytest.raises(ConfigError, match="unknown table kind"):
        make_table(db, "pie")


def test_val_metric_reads_the_val_split_and_cost_table_gives_percent_of_full(
    tmp_path: Path,
) -> None:
    database = ResultsDB(tmp_path / "results.sqlite")
    rows = Rows(database)
    rows.add("full", None, [0.80, 0.80], val_accs=[0.90, 0.90])
    rows.add("hoptm", 1, [0.60, 0.40], val_accs=[0.70, 0.50])
    val = main_table(database, metric="val_acc")
    assert val.title.startswith("ConvNet: val accuracy (%)")
    assert val.rows[1][1][0].text == "60.00 ± 10.00"  # val, not test (50.00 ± 10.00)
    cost = make_table(database, cost=True)
    share = cost.columns.index("% of full")
    by_method = {name: [c.text for c in cells] for name, cells in cost.rows}
    assert by_method["HoP-TM"][share] == "62.5"  # 50 / 80 by hand
    assert by_method["Full dataset"][share] == "100.0"
    assert make_table(database, cost=True, metric="val_acc").rows[1][1][share].text == "66.7"
    rows.add("random", 1, [0.30, 0.40])
    gains = make_table(database, cost=True)
    over = gains.columns.index("over random")
    by_method = {name: [c.text for c in cells] for name, cells in gains.rows}
    assert by_method["HoP-TM"][over] == "+15.00"  # 50 - 35, points, by hand
    assert by_method["Random"][over] == "-" and by_method["Full dataset"][over] == "-"
    database.close()


def test_shared_bytes_of_pixel_and_compact_sets(tmp_path):
    import torch

    from meddistill.bench.tables import _shared_bytes
    from meddistill.data.dataset import Normalization
    from meddistill.data.synthetic import SyntheticSet

    def made(folder, codes, meta):
        syn = SyntheticSet(torch.zeros(4, 1, 8, 8), torch.tensor([0, 0, 1, 1]),
                           Normalization((0.0,), (1.0,)), ["a", "b"], "toy", "src",
                           meta=meta, codes=codes)  # fmt: skip
        return syn.save(tmp_path / folder)

    pixel = made("pixel", {}, {})
    assert _shared_bytes(pixel) == (pixel / "synthetic.safetensors").stat().st_size
    dct = made("dct", {"codes": torch.zeros(4, 1, 4, 4)}, {"parameterization": {"name": "dct"}})
    assert _shared_bytes(dct) == 4 * 16 * 4 + 4 * 8  # codes + int64 labels, not the file
    assert _shared_bytes(tmp_path / "missing") is None


def test_audit_table_shows_a_grids_latest_audit_of_each_set(tmp_path):
    from meddistill.bench.db import Artifact, AuditRow, ResultsDB
    from meddistill.bench.tables import audit_table

    db = ResultsDB(tmp_path / "r.sqlite")
    db.add_artifact(Artifact(id="set1", kind="synthetic", dataset="toy", method="hoptm", ipc=1,
                             seed=0, setting="s", config={}))  # fmt: skip
    old = AuditRow("set1", "rules1", "green", near_copies_pixel=0, near_copies_features=0,
                   created="2026-11-30T10:00:00Z")  # fmt: skip
    new = AuditRow("set1", "rules2", "amber", near_copies_pixel=0, near_copies_features=0,
                   created="2026-11-30T11:00:00Z")  # fmt: skip
    db.add_audit(old, grid="g")
    db.add_audit(new, grid="g")
    rows = audit_table(db, grid="g").rows
    assert len(rows) == 1 and rows[0][1][3].text == "amber"
    with pytest.raises(ConfigError, match="several settings"):
        audit_table(db)
