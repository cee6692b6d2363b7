"""Every shipped preset resolves to a valid job; the published HoP-TM rows are reproduced."""

from pathlib import Path

import pytest

from meddistill.app.config import BaselineJob, BufferJob, DistillJob, resolve
from meddistill.app.distill import resolve_distill
from meddistill.config import load_yaml


def match_config(job):
    return resolve_distill(job).config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DISTILL_PRESETS = sorted(p for p in CONFIGS.rglob("ipc*.yaml") if p.parent.name != "cpu")


def test_presets_exist_for_every_cpu_dataset_and_method():
    for ds in ("bloodmnist", "breastmnist", "pneumoniamnist", "busi"):
        for method in ("hoptm", "ptm", "mtt", "ftd", "datm", "tesla", "att", "dm", "dsa", "dc"):
            for ipc in (1, 10):
                assert (CONFIGS / ds / method / f"ipc{ipc}.yaml").is_file()


@pytest.mark.parametrize("path", DISTILL_PRESETS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_distill_preset_resolves(path):
    job = resolve(DistillJob, load_yaml(path))
    cfg = match_config(job)
    assert cfg.ipc == int(path.stem.removeprefix("ipc"))
    assert job.method == path.parent.name
    # windows must fit in the expert buffer the preset makes
    if getattr(cfg, "schedule", None) in ("random", "growing"):
        assert cfg.max_start - 1 + cfg.expert_epochs <= job.experts.epochs
    assert path.read_text().startswith("#")  # every preset says what it is


def test_published_hoptm_rows():
    pm = match_config(resolve(DistillJob, load_yaml(CONFIGS / "paper/pathmnist/hoptm/ipc10.yaml")))
    assert (pm.syn_steps, pm.expert_epochs, pm.lr_img, pm.syn_lr_init, pm.lr_lr, pm.batch_syn) == (
        80,
        2,
        10.0,
        0.01,
        1e-7,
        10,
    )
    assert (pm.min_start, pm.max_start, pm.kappa_base, pm.kappa_mu, pm.shape_lambda) == (
        0,
        4,
        5e-9,
        1.5,
        0.5,
    )
    assert pm.iterations == 10000 and pm.kappa_period == 500 and pm.kappa_mode == "absolute"
    cx = match_config(
        resolve(DistillJob, load_yaml(CONFIGS / "paper/covid19-cxr/hoptm/ipc50.yaml"))
    )
    assert (cx.expert_epochs, cx.lr_img, cx.syn_lr_init, cx.lr_lr, cx.batch_syn) == (
        3,
        100.0,
        0.001,
        1e-5,
        20,
    )
    assert (cx.max_start, cx.kappa_base, cx.kappa_mu, cx.shape_lambda) == (20, 1e-10, 1.6, 1.0)
    job = resolve(DistillJob, load_yaml(CONFIGS / "paper/covid19-cxr/hoptm/ipc1.yaml"))
    assert job.model.depth == 5 and job.model.width == 128 and job.dataset.resize_to == 112
    assert job.experts.num_experts == 100 and job.expert_optimizer == "gsam"


def test_baseline_and_buffer_presets_resolve():
    for name in ("cpu", "paper"):
        job = resolve(BaselineJob, load_yaml(CONFIGS / "baseline" / f"{name}.yaml"))
        assert job.ipcs == [1, 10, 50]
    buf = resolve(BufferJob, load_yaml(CONFIGS / "buffer/cpu.yaml"))
    assert buf.buffer.num_experts == 5 and buf.buffer.model.width == 32


def test_cpu_bench_grid_plans():
    from meddistill.bench.plan import plan
    from meddistill.bench.spec import load_grid

    cells = plan(load_grid(CONFIGS / "bench/cpu.yaml"))
    methods = {c.method for c in cells}
    assert {"hoptm", "ptm", "mtt", "datm", "dm", "dsa", "random", "full"} <= methods
    assert {c.dataset for c in cells} == {"bloodmnist", "breastmnist", "pneumoniamnist", "busi"}


def test_baselines_bench_grid_plans_one_row_per_baseline():
    from meddistill.bench.plan import plan
    from meddistill.bench.spec import load_grid

    cells = plan(load_grid(CONFIGS / "bench/baselines.yaml"))
    assert [c.method for c in cells] == [
        "random", "dc", "dsa", "dm", "idm", "cafe", "smdd", "seqmatch", "haba", "herding", "kcenter"
    ]  # fmt: skip
    assert {c.ipc for c in cells} == {2}
    haba = next(c for c in cells if c.method == "haba")
    assert haba.config["match"]["haba_hallucinators"] == 2
