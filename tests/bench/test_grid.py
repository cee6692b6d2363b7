"""Grid files, planning, identities and resuming; networks are faked (no training here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from meddistill.bench import run as runmod
from meddistill.bench import runners as runnersmod
from meddistill.bench.db import ResultsDB, measure_stage
from meddistill.bench.plan import Cell, cell_status, format_status, plan
from meddistill.bench.run import run_grid
from meddistill.bench.runners import Produced, RunContext, register_runner
from meddistill.bench.spec import grid_from_dict, load_grid
from meddistill.bench.tables import main_table
from meddistill.data.dataset import MedicalDataset, Normalization, Split
from meddistill.data.synthetic import SyntheticSet
from meddistill.errors import ConfigError
from meddistill.training.evaluate import NetResult
from meddistill.utils import derive_seed, make_generator


def toy_dataset() -> MedicalDataset:
    gen = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        y = torch.arange(n) % 3
        return Split(torch.randn(n, 1, 8, 8, generator=gen), y)

    return MedicalDataset(
        "toy", {"train": split(36), "test": split(12)}, ["a", "b", "c"],
        Normalization((0.0,), (1.0,)), source_id="toy-src",
    )  # fmt: skip


TOY = toy_dataset()
PRESET = {
    "dataset": {"name": "bloodmnist"},  # planning checks the name; data is faked
    "model": {"name": "convnet", "depth": 1, "width": 4},
    "experts": {"num_experts": 1, "epochs": 2},
    "expert_optimizer": "sgd",
    "eval": {"num_nets": 2, "epochs": 3, "batch_size": 16},
}


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def grid_dict(**extra: Any) -> dict[str, Any]:
    return {
        "name": "g",
        "datasets": [{"name": "toy", "preset": "toy.yaml"}],
        "methods": ["hoptm", "mtt"],
        "ipcs": [1, 2],
        "seeds": [0, 1],
        "eval_archs": ["convnet", "lenet"],
        **extra,
    }


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_yaml(tmp_path / "toy.yaml", PRESET)
    return tmp_path


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------


def test_load_grid_plans_cells_in_order(root: Path) -> None:
    data = {k: v for k, v in grid_dict().items() if k != "name"}
    data.update(seeds=[5], root="..", exclude=[{"method": "mtt", "ipc": 2}])  # presets in ../
    path = write_yaml(root / "grids" / "small.yaml", data)
    grid = load_grid(path, ["seeds=[0,1]"])  # overrides win over the file
    assert grid.name == "small"  # from the file name
    cells = plan(grid)
    assert [c.label() for c in cells] == [
        "toy full seed0", "toy full seed1",
        "toy random ipc1 seed0", "toy random ipc1 seed1",
        "toy hoptm ipc1 seed0", "toy hoptm ipc1 seed1",
        "toy mtt ipc1 seed0", "toy mtt ipc1 seed1",
        "toy random ipc2 seed0", "toy random ipc2 seed1",
        "toy hoptm ipc2 seed0", "toy hoptm ipc2 seed1",
    ]  # fmt: skip
    assert [c.index for c in cells] == list(range(12))
    assert [c.artifact_id for c in plan(grid)] == [c.artifact_id for c in cells]  # stable
    assert len({c.artifact_id for c in cells}) == 12
    hop0, hop1 = cells[4], cells[5]
    assert hop0.setting == hop1.setting and hop0.eval_id == hop1.eval_id  # seeds pool
    assert hop0.kind == "synthetic" and hop0.num_nets == 2 and cells[0].num_nets == 1
    cfg = hop0.config
    assert cfg["method"] == "hoptm" and cfg["match"]["ipc"] == 1 and "seed" not in cfg["match"]
    assert cfg["final_eval"] is False and cfg["out"] is None
    assert cfg["experts"]["model"] == cfg["model"]  # the buffer run_distill will make
    assert cfg["experts"]["train"]["optimizer"] == "sgd"
    base = derive_seed(0, "final-eval")
    assert hop0.networks() == [
        ("convnet", 0, derive_seed(base, "convnet", 0)),
        ("convnet", 1, derive_seed(base, "convnet", 1)),
        ("lenet", 0, derive_seed(base, "lenet", 0)),
        ("lenet", 1, derive_seed(base, "lenet", 1)),
    ]
    # the random subset and its networks use the seeds of `meddistill baseline` (subset 0)
    assert cells[2].eval_base_seed() == derive_seed(0, "random", 1, 0)


def test_identities_follow_what_produced_an_artifact(root: Path) -> None:
    def ids(**extra: Any) -> dict[str, tuple[str, str]]:
        cells = plan(grid_from_dict(grid_dict(**extra), root=root))
        return {c.label(): (c.artifact_id, c.eval_id) for c in cells}

    base = ids()
    # other evaluation settings: the same synthetic sets, evaluated again
    longer = ids(eval={"epochs": 7})
    for label, (art, ev) in longer.items():
        assert art == base[label][0]
        assert (ev == base[label][1]) == ("full" in label)  # full data has its own training
    # another distillation setting: new synthetic sets, untouched baselines
    more = ids(overrides=["match.iterations=3"])
    for label, (art, _) in more.items():
        assert (art == base[label][0]) == (" full " in f" {label} " or "random" in label)
    # where the job runs is not what it makes
    assert ids(device="cpu") == base
    # expert settings make new trajectory-matching sets, not new DM sets (DM uses no experts)
    objective = dict(methods=["mtt", "dm"], baselines=[], ipcs=[1], seeds=[0])
    short = {
        "datasets": [{"name": "toy", "preset": "toy.yaml", "config": {"experts": {"epochs": 1}}}]
    }
    before, after = ids(**objective), ids(**objective, **short)
    assert before["toy dm ipc1 seed0"] == after["toy dm ipc1 seed0"]
    assert before["toy mtt ipc1 seed0"][0] != after["toy mtt ipc1 seed0"][0]
    # one method's overrides touch only that method
    tuned = ids(**objective, method_overrides={"mtt": ["match.syn_steps=3"]})
    assert tuned["toy dm ipc1 seed0"] == before["toy dm ipc1 seed0"]
    assert tuned["toy mtt ipc1 seed0"] != before["toy mtt ipc1 seed0"]


def test_plan_refuses_bad_grids(root: Path) -> None:
    def make(**extra: Any) -> list[Cell]:
        return plan(grid_from_dict(grid_dict(**extra), root=root))

    with pytest.raises(ConfigError, match=r"unknown method 'nope' .*known: .*hoptm.*mtt"):
        make(methods=["nope"])
    with pytest.raises(ConfigError, match="baselines"):
        make(methods=["random"])
    with pytest.raises(ConfigError, match="unknown baseline"):
        make(baselines=["best"])
    with pytest.raises(ConfigError, match="unknown model 'nonet'"):
        make(eval_archs=["nonet"])
    with pytest.raises(ConfigError, match="unknown option.*grid.method"):
        make(method="hoptm")
    with pytest.raises(ConfigError, match="twice"):
        make(seeds=[0, 0])
    with pytest.raises(ConfigError, match="every cell .* excluded"):
        make(exclude=[{"dataset": "toy"}])
    with pytest.raises(ConfigError, match="grid.exclude"):
        make(exclude=[{"iterations": 3}])
    with pytest.raises(ConfigError, match=r"preset .*toy/hoptm/ipc1.yaml .* not found"):
        make(method_preset="{dataset}/{method}/ipc{ipc}.yaml")
    write_yaml(root / "toy" / "hoptm" / "ipc1.yaml", {"method": "ptm", "match": {"ipc": 1}})
    with pytest.raises(ConfigError, match="is for method 'ptm'"):
        make(method_preset="{dataset}/{method}/ipc{ipc}.yaml", ipcs=[1])
    write_yaml(root / "toy" / "hoptm" / "ipc1.yaml", {"method": "hoptm", "match": {"ipc": 2}})
    with pytest.raises(ConfigError, match="sets match.ipc=2"):
        make(method_preset="{dataset}/{method}/ipc{ipc}.yaml", ipcs=[1])
    with pytest.raises(ConfigError, match="unknown option"):
        make(overrides=["match.no_such_knob=1"])
    with pytest.raises(ConfigError, match="method_overrides names ptm, not in grid.methods"):
        make(method_overrides={"ptm": ["match.iterations=1"]})
    soft = {"method": "mtt", "overrides": ["match.soft_labels=true"]}
    with pytest.raises(ConfigError, match=r"unknown method 'mtt\+soft'"):
        make(methods=["mtt+soft"])  # a variant must be defined
    with pytest.raises(ConfigError, match=r"unknown method 'nope'"):
        make(methods=["x"], variants={"x": {"method": "nope"}})
    with pytest.raises(ConfigError, match=r"grid.variants.x must be \{method"):
        make(methods=["x"], variants={"x": {**soft, "iterations": 0}})
    with pytest.raises(ConfigError, match="grid.variants.x.overrides must be a list"):
        make(methods=["x"], variants={"x": {"method": "mtt", "overrides": "a=1"}})
    with pytest.raises(ConfigError, match="a label other than 'random'"):
        make(methods=["mtt"], variants={"random": soft})
    with pytest.raises(ConfigError, match="unknown option.*no_such"):
        make(methods=["x"], variants={"x": {"method": "mtt", "overrides": ["match.no_such=1"]}})


def test_a_variant_plans_its_method_with_its_overrides(root: Path) -> None:
    soft = {"method": "hoptm", "overrides": ["match.soft_labels=true", "match.syn_steps=3"]}
    grid = grid_from_dict(
        grid_dict(
            methods=["hoptm", "hoptm+soft"],
            variants={"HoPTM+Soft": soft},
            baselines=[],
            ipcs=[1],
            seeds=[0],
        ),
        root=root,
    )
    base, variant = plan(grid)
    assert (base.method, base.runner, variant.method, variant.runner) == (
        "hoptm", "hoptm", "hoptm+soft", "hoptm"
    )  # fmt: skip
    assert variant.config["method"] == "hoptm" and variant.config["match"]["soft_labels"]
    assert variant.config["match"]["syn_steps"] == 3 and not base.config["match"]["soft_labels"]
    assert variant.artifact_id != base.artifact_id and variant.eval_id == base.eval_id
    assert [c.method for c in plan(grid.subset(methods=["hoptm+soft"]))] == ["hoptm+soft"]


def test_method_presets_are_merged(root: Path) -> None:
    for method in ("hoptm", "mtt"):
        write_yaml(
            root / "toy" / method / "ipc1.yaml",
            {"include": "../../toy.yaml", "method": method, "match": {"ipc": 1, "syn_steps": 3}},
        )
    grid = grid_from_dict(
        grid_dict(method_preset="{dataset}/{method}/ipc{ipc}.yaml", ipcs=[1], baselines=[]),
        root=root,
    )
    cells = plan(grid)
    assert [c.method for c in cells] == ["hoptm", "hoptm", "mtt", "mtt"]
    assert all(c.config["match"]["syn_steps"] == 3 for c in cells)
    assert cells[0].config["model"]["width"] == 4


def test_dataset_method_overrides_and_dataset_shares(root: Path) -> None:
    write_yaml(
        root / "other.yaml", {**PRESET, "model": {"name": "convnet", "depth": 1, "width": 8}}
    )
    data = grid_dict(
        ipcs=[1], seeds=[0], baselines=[], method_overrides={"mtt": ["match.syn_steps=7"]}
    )
    data["datasets"] = [
        {"name": "toy", "preset": "toy.yaml", "method_overrides": {"MTT": ["match.syn_steps=2"]}},
        {"name": "other", "preset": "other.yaml"},
    ]
    grid = grid_from_dict(data, root=root)
    steps = {(c.dataset, c.method): c.config["match"]["syn_steps"] for c in plan(grid)}
    # the dataset's own override comes last; hoptm keeps its default (its method's 80 steps
    # shortened by nothing here)
    assert steps[("toy", "mtt")] == 2 and steps[("other", "mtt")] == 7
    assert steps[("toy", "hoptm")] == steps[("other", "hoptm")] != 2
    share = grid.subset(datasets=["other"])
    assert [c.dataset for c in plan(share)] == ["other", "other"]
    same = {c.label(): c.artifact_id for c in plan(grid)}
    assert all(same[c.label()] == c.artifact_id for c in plan(share))  # identities unchanged
    assert share.name == grid.name
    with pytest.raises(
        ConfigError, match=r"dataset\(s\) nope not in grid g; its datasets: toy, other"
    ):
        grid.subset(datasets=["nope"])
    only_mtt = grid.subset(methods=["MTT"])  # its overrides go with it, the others' are dropped
    assert [c.method for c in plan(only_mtt)] == ["mtt", "mtt"]
    assert {c.label(): c.artifact_id for c in plan(only_mtt)}.items() <= same.items()
    with pytest.raises(ConfigError, match=r"method\(s\) dm not in grid g"):
        grid.subset(methods=["dm"])
    data["datasets"][0]["method_overrides"] = {"dm": ["match.iterations=1"]}
    with pytest.raises(ConfigError, match=r"grid.datasets\[toy\].method_overrides names dm"):
        grid_from_dict(data, root=root)


# ---------------------------------------------------------------------------------------------
# Running and resuming, with a fake method and fake networks
# ---------------------------------------------------------------------------------------------


class Fakes:
    """A registered method writing a SyntheticSet, and networks that only record their calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made: list[str] = []
        self.trained: list[tuple[str, int, int, float, int]] = []
        self.fail_after: int | None = None
        monkeypatch.setattr(runnersmod, "_RUNNERS", {})
        monkeypatch.setattr(RunContext, "dataset", lambda ctx, cfg: TOY)
        monkeypatch.setattr(runmod, "evaluate_one_network", self.evaluate)
        register_runner("fake", self.run, self.resolve)

    @staticmethod
    def resolve(method: str, data: dict[str, Any]) -> dict[str, Any]:
        if "steps" not in data:
            raise ConfigError("fake needs steps")
        return {"dataset": data["dataset"], "steps": data["steps"], "ipc": data["match"]["ipc"]}

    def run(self, cell: Cell, ctx: RunContext) -> Produced:
        self.made.append(cell.label())
        gen = make_generator(cell.seed)
        n = 3 * cell.config["ipc"]
        syn = SyntheticSet(
            images=torch.randn(n, 1, 8, 8, generator=gen),
            labels=torch.arange(3).repeat_interleave(cell.config["ipc"]),
            normalization=TOY.normalization,
            class_names=TOY.class_names,
            dataset="toy",
            source_id="toy-src",
            syn_lr=0.0625,  # exact in float32, as it is stored
        )
        with measure_stage(ctx.device) as stage:
            path = syn.save(ctx.runs_root / "fake" / cell.artifact_id)
        return Produced(path=str(path), stage=stage)

    def evaluate(self, spec, dataset, images, labels, train_cfg, *, index, net_seed, **_):  # noqa: ANN001, ANN003, ANN202
        if self.fail_after is not None and len(self.trained) >= self.fail_after:
            raise KeyboardInterrupt
        self.trained.append((spec.name, net_seed, images.shape[0], train_cfg.lr, train_cfg.epochs))
        return NetResult(
            index, net_seed, acc=(net_seed % 1000) / 1000, auc=0.5, loss=1.0, train_loss=0.0
        )


def fake_grid(root: Path, **extra: Any) -> Any:
    data = grid_dict(methods=["fake"], ipcs=[1], seeds=[0], full_train={"epochs": 4}, **extra)
    data["datasets"] = [{"name": "toy", "preset": "toy.yaml", "config": {"steps": 5}}]
    return grid_from_dict(data, root=root)


def test_run_grid_records_every_network_and_resumes(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes = Fakes(monkeypatch)
    runs = root / "runs"
    lines: list[str] = []
    summary = run_grid(fake_grid(root), runs, progress=False, log=lines.append)
    # full: 1 net x 2 archs; random and fake: 2 nets x 2 archs
    assert summary["networks_trained"] == 10 and summary["cells"] == 3 and summary["skipped"] == 0
    assert fakes.made == ["toy fake ipc1 seed0"]
    assert lines[0] == "[1/3] toy full seed0"
    by_cell = {}
    for name, _, n, lr, epochs in fakes.trained:
        by_cell.setdefault((n, lr, epochs), []).append(name)
    assert by_cell == {
        (36, 0.01, 4): ["convnet", "lenet"],  # full data: its own training settings
        (3, 0.01, 3): ["convnet", "convnet", "lenet", "lenet"],  # random subset: lr 0.01
        (3, 0.0625, 3): ["convnet", "convnet", "lenet", "lenet"],  # synthetic: learned lr
    }
    with ResultsDB(runs / "results.sqlite") as db:
        rows = db.results()
        assert len(rows) == 10 and db.count("artifacts") == 3
        assert all(r.wall_s is not None and r.wall_s >= 0 and r.mem_kind for r in rows)
        assert {(r.method, r.acc) for r in rows} == {
            (r.method, (r.eval_seed % 1000) / 1000) for r in rows
        }
        fake_art = db.artifact(plan(fake_grid(root))[2].artifact_id)
        assert fake_art is not None and Path(fake_art.path).is_dir() and fake_art.wall_s >= 0
        assert db.count("grid_cells") == 3
        table = main_table(db, grid="g")
        assert [label for label, _ in table.rows] == ["Full dataset", "Random", "fake"]

    # the same grid again: nothing to do, the method is not run again
    fakes.trained.clear()
    again = run_grid(fake_grid(root), runs, progress=False, log=None)
    assert again["networks_trained"] == 0 and again["skipped"] == 3
    assert fakes.made == ["toy fake ipc1 seed0"] and fakes.trained == []

    # one more architecture: only its networks, on the kept synthetic set
    more = run_grid(
        fake_grid(root, eval_archs=["convnet", "lenet", "alexnet"]), runs, progress=False, log=None
    )
    assert more["networks_trained"] == 5
    assert {t[0] for t in fakes.trained} == {"alexnet"} and fakes.made == ["toy fake ipc1 seed0"]


def test_a_killed_grid_resumes_where_it_stopped(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes = Fakes(monkeypatch)
    runs = root / "runs"
    fakes.fail_after = 4
    with pytest.raises(KeyboardInterrupt):
        run_grid(fake_grid(root), runs, progress=False, log=None)
    first = [t[1] for t in fakes.trained]
    with ResultsDB(runs / "results.sqlite") as db:
        assert db.count("results") == 4
        status = cell_status(plan(fake_grid(root)), db)
        # full (2 nets) done; random 2 of 4; the fake method not made yet
        assert [(c.method, made, done, need) for c, made, done, need in status] == [
            ("full", True, 2, 2),
            ("random", True, 2, 4),
            ("fake", False, 0, 4),
        ]
        text = format_status(status)
        assert text.splitlines()[-1] == "6 of 10 networks to train"
        assert "toy fake ipc1 seed0" in text and "to make" in text
    fakes.fail_after = None
    fakes.trained.clear()
    summary = run_grid(fake_grid(root), runs, progress=False, log=None)
    second = [t[1] for t in fakes.trained]
    assert summary["networks_trained"] == 6 and not set(first) & set(second)
    with ResultsDB(runs / "results.sqlite") as db:
        assert {r.eval_seed for r in db.results()} == set(first) | set(second)
        assert db.count("results") == 10


def test_a_deleted_synthetic_set_is_made_again_when_networks_are_missing(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes = Fakes(monkeypatch)
    runs = root / "runs"
    run_grid(fake_grid(root, baselines=[]), runs, progress=False, log=None)
    for f in (runs / "fake").rglob("*"):
        if f.is_file():
            f.unlink()
    for d in sorted((runs / "fake").rglob("*"), reverse=True):
        d.rmdir()
    run_grid(fake_grid(root, baselines=[]), runs, progress=False, log=None)
    assert fakes.made == ["toy fake ipc1 seed0"]  # all results there: nothing needed it
    run_grid(fake_grid(root, baselines=[], eval_archs=["vgg11"]), runs, progress=False, log=None)
    assert fakes.made == ["toy fake ipc1 seed0"] * 2


def test_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runnersmod, "_RUNNERS", {})
    with pytest.raises(ConfigError, match="baseline name"):
        register_runner("random", lambda cell, ctx: Produced(path=""))
    register_runner("DC", lambda cell, ctx: Produced(path=""))
    assert "dc" in runnersmod.known_methods() and "hoptm" in runnersmod.known_methods()


def test_identities_leave_out_label_knobs_at_their_hard_label_defaults() -> None:
    from meddistill.bench.plan import _identity

    hard = {"soft_labels": False, "learn_labels": True, "lr_y": 2.0, "momentum_y": 0.9}
    config = {
        "match": {"ipc": 1, **hard, "label_expert_epoch": -1, "eval": {"hard_labels": False}},
        "eval": {"epochs": 3, "hard_labels": False},
    }
    # as recorded before every trajectory method had these knobs: ids unchanged
    assert _identity(config) == {"match": {"ipc": 1, "eval": {}}, "eval": {"epochs": 3}}
    soft = {**config, "match": {**config["match"], "soft_labels": True}}
    assert _identity(soft)["match"]["soft_labels"] is True and "lr_y" in _identity(soft)["match"]
    epoch = {**config, "match": {**config["match"], "label_expert_epoch": 3}}
    assert _identity(epoch)["match"]["label_expert_epoch"] == 3  # real_correct init reads it
    assert _identity({"eval": {"hard_labels": True}}) == {"eval": {"hard_labels": True}}


def test_the_readme_results_grid_keeps_the_ids_its_database_was_recorded_with() -> None:
    """The README's results table reproduces from `meddistill bench configs/bench/results.yaml`
    only while its cells keep the ids they were recorded under (options added since are left
    out of identities while unset); these ids were recorded at f597a55."""
    repo = Path(__file__).resolve().parents[2]
    cells = {c.label(): c.artifact_id for c in plan(load_grid(repo / "configs/bench/results.yaml"))}
    assert cells["bloodmnist random ipc1 seed0"] == "e42da5818bfe"
    assert cells["bloodmnist dm ipc1 seed0"] == "5685fe82b6d3"
    assert cells["bloodmnist hoptm ipc1 seed0"] == "432fe1e266eb"
    assert cells["breastmnist datm ipc10 seed0"] == "b15095ee63af"
    assert cells["pneumoniamnist ptm ipc10 seed0"] == "6072804d2e4a"


def test_the_readme_privacy_and_compact_grids_keep_their_ids() -> None:
    """The epsilon table (configs/bench/privacy.yaml, recorded at e1ce3f6) and the storage
    comparison (configs/bench/compact.yaml, at df87452) reproduce while their cells keep
    these ids; the compact grid's pixel rows are the results grid's cells."""
    repo = Path(__file__).resolve().parents[2]
    privacy = {
        c.label(): c.artifact_id for c in plan(load_grid(repo / "configs/bench/privacy.yaml"))
    }
    assert privacy["bloodmnist hoptm+dp8 ipc10 seed0"] == "1c1329654a63"
    assert privacy["bloodmnist hoptm+noise ipc10 seed0"] == "1e82cc10c25e"
    assert privacy["breastmnist hoptm ipc10 seed0"] == "4c825945c7df"
    assert privacy["breastmnist hoptm+dp1 ipc10 seed0"] == "64922be057c0"
    compact = {
        c.label(): c.artifact_id for c in plan(load_grid(repo / "configs/bench/compact.yaml"))
    }
    assert compact["bloodmnist hoptm ipc1 seed0"] == "432fe1e266eb"
    assert compact["bloodmnist hoptm+dct ipc1 seed0"] == "82bb4840751b"
    assert compact["bloodmnist dm+latent ipc1 seed0"] == "2a083694f7f1"


def test_the_readme_busi_results_grid_keeps_its_ids_and_shares_the_compact_cells() -> None:
    """The README's BUSI rows (configs/bench/results_busi.yaml, recorded from 01563b5) reproduce
    while their cells keep these ids; its IPC-1 random, DM and HoP-TM cells are the compact-busi
    grid's, so the two tables report the same networks."""
    repo = Path(__file__).resolve().parents[2]
    busi = {
        c.label(): c.artifact_id for c in plan(load_grid(repo / "configs/bench/results_busi.yaml"))
    }
    compact = {
        c.label(): c.artifact_id for c in plan(load_grid(repo / "configs/bench/compact_busi.yaml"))
    }
    for shared in ("busi random ipc1 seed0", "busi dm ipc1 seed0", "busi hoptm ipc1 seed0"):
        assert busi[shared] == compact[shared]
    assert busi["busi hoptm ipc1 seed0"] == "79822f1add2c"
    assert busi["busi ptm ipc10 seed0"] == "bd5ee9c3a02c"
    assert busi["busi datm ipc50 seed0"] == "f3de7f631326"
    assert len(busi) == 22  # full + 7 rows x IPC 1, 10, 50


def test_the_readme_expert_recipe_grid_keeps_its_ids_and_its_experts() -> None:
    """The README's expert-recipe comparison (configs/bench/experts_val.yaml, recorded at cca7c2c)
    reproduces while its cells keep these ids; each cell matches the lr-0.03 x 15-epoch experts
    and starts its student at their learning rate."""
    repo = Path(__file__).resolve().parents[2]
    cells = plan(load_grid(repo / "configs/bench/experts_val.yaml"))
    ids = {c.label(): c.artifact_id for c in cells}
    assert ids["bloodmnist mtt ipc1 seed0"] == "e359cff16ec2"
    assert ids["bloodmnist datm ipc10 seed0"] == "e92660375997"
    assert ids["bloodmnist hoptm ipc10 seed0"] == "8e85910fdf40"
    for cell in cells:
        experts = cell.config["experts"]
        assert (experts["epochs"], experts["train"]["epochs"], experts["train"]["lr"]) == (
            15,
            15,
            0.03,
        )
        assert cell.config["match"]["syn_lr_init"] == 0.03
