"""The report page of one run folder: key numbers, the synthetic images per class, analysis
figures, the evaluation tables and the configuration, in that order.

Figures are drawn by report/analyses.py into DIR/analysis/ (PNG + CSV/JSON); without
matplotlib the page is still made, with a note where the figures would be.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from meddistill.bench.tables import arch_name, method_name
from meddistill.costs import read_costs
from meddistill.data.results import ResultRow
from meddistill.data.snapshots import load_snapshots
from meddistill.errors import ConfigError
from meddistill.report import analyses
from meddistill.report.page import (
    ANALYSIS_DIR,
    block,
    cards,
    details,
    duration,
    figure,
    frac,
    grid_figure,
    html_table,
    note,
    page,
    pct,
    section,
)
from meddistill.report.run_context import context_section, full_data_card
from meddistill.report.run_folder import RunFolder

LOG_TAIL = 60


def run_page(folder: Path, figures: bool) -> str:
    """The whole page of a run folder; sections without content are left out."""
    run = RunFolder.read(folder)
    out_dir = folder / ANALYSIS_DIR
    title, subtitle = _run_title(run)
    ctx, full_card = full_data_card(run)
    items = _run_cards(run)
    at = 2 if run.rows() and run.rows()[0].archs else 0  # after the headline accuracy and AUC
    body = [section("summary", "Key numbers", [cards(items[:at] + full_card + items[at:])])]
    for part in (
        context_section(run, ctx),
        _images_section(run, out_dir),
        _analysis_section(run, out_dir, figures),
        _evaluation_section(run),
        _audit_section(run),
        _experts_section(run),
        costs_section(run),
        config_section(run),
    ):
        if part:
            body.append(part)
    return page(title, subtitle, body)


def _run_title(run: RunFolder) -> tuple[str, str]:
    method, dataset, ipc = run.method(), run.dataset(), run.ipc()
    parts = []
    if method:
        parts.append(method_name(method))
    elif run.rows():
        parts.append("Baseline" if any(r.set == "full" for r in run.rows()) else "Evaluation")
    if dataset:
        parts.append(str(dataset))
    if ipc is not None:
        parts.append(f"IPC {ipc}")
    title = " · ".join(parts) or run.path.name
    return title, f"run folder {run.path.name}"


def _run_cards(run: RunFolder) -> list[tuple[str, Any]]:
    """Accuracy and AUC of the first row (up to three architectures), progress and timings."""
    items: list[tuple[str, Any]] = []
    rows = run.rows()
    if rows:
        for arch, stats in list(rows[0].archs.items())[:3]:
            name = arch_name(arch)
            items.append((f"accuracy, {name} (%)", pct(stats.acc_mean, stats.acc_std)))
            items.append((f"AUC, {name}", frac(stats.auc_mean, stats.auc_std)))
    steps = analyses.distill_records(run.records)
    planned = run.planned_iterations()
    if steps:
        done = int(steps[-1]["iteration"]) + 1
        items.append(("iterations", f"{done} / {planned}" if planned else str(done)))
    res = run.results
    total = sum(float(r.get("seconds") or 0.0) for r in steps)
    if res is not None and res.distill_s is not None:
        # A resumed run's distill_s counts its last session only; its steps count them all.
        items.append(("distillation time", duration(max(res.distill_s, total))))
    elif steps:
        items.append(("distillation time", duration(total)))
    if res is not None and res.buffer_s is not None and res.buffer_s > 0:
        items.append(("expert buffer time", duration(res.buffer_s)))
    syn_lr = res.syn_lr if res is not None else None
    if syn_lr is None:  # none in results.json (a coreset): the saved set's
        syn_lr = (run.meta or {}).get("syn_lr")
    if isinstance(syn_lr, int | float):
        learned = any("syn_lr" in r for r in steps)  # trajectory methods learn it; DM keeps it
        label = "learned step size" if learned else "evaluation step size (not learned)"
        items.append((label, f"{syn_lr:.4g}"))
    if run.meta and isinstance(run.meta.get("num_images"), int):
        shape = "×".join(str(s) for s in run.meta.get("image_shape", []))
        items.append(("synthetic images", f"{run.meta['num_images']} of {shape}"))
    items += _storage_items(run.meta or {})
    if res is None:
        items.append(("status", "no results.json yet: running or stopped"))
    return items


def _storage_items(meta: dict[str, Any]) -> list[tuple[str, str]]:
    """What sharing the set takes, and in which form (pixels, dct coefficients, latent codes
    plus their decoder)."""
    items = []
    param = meta.get("parameterization") or {}
    name = param.get("name")
    if name == "dct":
        items.append(("stored as", f"{param['keep']}×{param['keep']} lowest DCT frequencies "
                                   "per channel (dct)"))  # fmt: skip
    elif name == "latent":
        code = "×".join(str(s) for s in param.get("code_shape", []))
        items.append(("stored as", f"{code} latent codes + a decoder of "
                                   f"{param.get('decoder_values')} values (latent)"))  # fmt: skip
    if isinstance(meta.get("stored_bytes"), int):
        items.append(("bytes to share", f"{meta['stored_bytes']:,}"))
    return items


# ------------------------------------------------------------------------------ images


def _images_section(run: RunFolder, out_dir: Path) -> str | None:
    files, captions = _class_grids(run, out_dir)
    heading = "Synthetic images per class"
    if files:
        grids = [grid_figure(run.path, f, c) for f, c in zip(files, captions, strict=True)]
        return section("images", heading, [block("grids", grids)])
    if run.meta is None and analyses.distill_records(run.records):
        return section("images", heading, [note("no synthetic set yet: the run has not finished")])
    return None


def _class_grids(run: RunFolder, out_dir: Path) -> tuple[list[Path], list[str]]:
    """The per-class grid PNGs and their captions; made into analysis/grids from the
    synthetic set when the run folder has none."""
    grid_dir = run.path / "grids"
    files = sorted(grid_dir.glob("class_*.png")) if grid_dir.is_dir() else []
    if not files and run.meta is not None:
        from meddistill.data.grids import save_class_grids
        from meddistill.data.synthetic import SyntheticSet

        syn = SyntheticSet.load(run.path / "synthetic")
        made = save_class_grids(
            syn.images, syn.labels, syn.class_names, syn.normalization, out_dir / "grids"
        )
        files = [p for p in made if p.name.startswith("class_")]
    names = list(run.meta.get("class_names", [])) if run.meta else []
    return files, [_grid_caption(f, names) for f in files]


def _grid_caption(png: Path, names: list[str]) -> str:
    """'class 1: <name>' from class_<index>_<safe name>.png; the file's name part otherwise."""
    stem = png.stem.split("_", 2)
    index = int(stem[1]) if len(stem) > 1 and stem[1].isdigit() else None
    if index is not None and index < len(names):
        return f"class {index}: {names[index]}"
    return stem[2].replace("_", " ") if len(stem) > 2 else png.stem


# ------------------------------------------------------------------------------ analysis


def _analysis_section(run: RunFolder, out_dir: Path, figures: bool) -> str | None:
    parts: list[str] = []
    if figures and analyses.have_matplotlib():
        figs = _run_figures(run, out_dir)
        if figs:
            parts.append(block("figures", figs))
    elif figures:
        parts.append(
            note(
                "no figures: matplotlib, a dependency of meddistill, cannot be imported here; "
                "repair it with `pip install matplotlib`"
            )
        )
    mmd = _final_set_mmd(run)
    if mmd:
        parts.append(mmd)
    return section("analysis", "Analysis", parts) if parts else None


def _run_figures(run: RunFolder, out_dir: Path) -> list[str]:
    folder = run.path
    parts: list[str] = []
    if analyses.distill_records(run.records):
        parts += _step_figures(run, out_dir)
    if any(not p["final"] for p in analyses.eval_points(run.records)):
        res = analyses.accuracy_vs_time(run.records, out_dir / "accuracy_vs_time")
        parts.append(figure(folder, res, "Test accuracy against distillation time"))
    accs = {
        _row_label(run, row, arch): nets
        for row in run.rows()
        for arch in row.archs
        if (nets := [n.acc for n in row.nets(arch)])
    }
    if any(len(v) > 1 for v in accs.values()):
        res = analyses.stability(accs, out_dir / "stability")
        parts.append(figure(folder, res, "Evaluation stability: one dot per trained network"))
    mmd = _mmd_over_run(run, out_dir)
    if mmd:
        parts.append(mmd)
    return parts


def _step_figures(run: RunFolder, out_dir: Path) -> list[str]:
    """The loss terms (linear axes), then the mask coverage and learned step size if recorded."""
    folder = run.path
    step = analyses.step_keys(run.records)
    caption = "Loss terms by iteration (linear axes)"
    if "mask_utilisation" in step:
        caption += (
            ". With a mask, the matching loss is measured over the masked (easy) parameters "
            "only: it starts near 0 and rises as the mask admits harder ones (see the mask "
            "coverage), which is expected, not divergence"
        )
    parts = [figure(folder, analyses.loss_curves(run.records, out_dir / "loss_curves"), caption)]
    if step:
        res = analyses.step_curves(run.records, out_dir / "step_curves", keys=step)
        names = [analyses.STEP_CURVES[k][0].split(" (")[0] for k in step]
        parts.append(figure(folder, res, f"{' and '.join(names).capitalize()} by iteration"))
    return parts


def _mmd_over_run(run: RunFolder, out_dir: Path) -> str | None:
    """The within-class MMD along the run, from its image snapshots (two or more needed)."""
    snaps = load_snapshots(run.path)
    if len(snaps) < 2:
        return None
    names = run.meta.get("class_names") if run.meta else None
    pairs = [(it, images) for it, images, _ in snaps]
    try:
        res = analyses.class_mmd_over_run(pairs, snaps[-1][2], out_dir / "class_mmd", None, names)
    except ConfigError as exc:  # IPC 1: no class has two images
        return note(f"no within-class MMD curve: {exc}")
    return figure(run.path, res, "MMD² among the synthetic images of each class")


def _row_label(run: RunFolder, row: ResultRow, arch: str) -> str:
    """'ConvNet' for a run with one row, else 'Random, IPC 10' (+ the architecture if several)."""
    if len(run.rows()) == 1:
        return arch_name(arch)
    label = method_name(row.set)
    if row.ipc is not None:
        label += f", IPC {row.ipc}"
    many = any(len(r.archs) > 1 for r in run.rows())
    return f"{label} ({arch_name(arch)})" if many else label


def _final_set_mmd(run: RunFolder) -> str | None:
    if run.meta is None:
        return None
    from meddistill.data.synthetic import SyntheticSet

    syn = SyntheticSet.load(run.path / "synthetic")
    values = analyses.mmd_within_class(syn.images, syn.hard_labels)
    if not values:
        return None
    rows = [
        [
            syn.class_names[c] if c < len(syn.class_names) else c,
            v["n"],
            f"{v['mmd2']:.4f}",
            f"{v['similarity']:.4f}",
        ]
        for c, v in sorted(values.items())
    ]
    return html_table(
        ["class", "images", "MMD² foundation vs complement", "mean kernel similarity"],
        rows,
        table_id="class-mmd",
        caption="Within-class diversity of the final synthetic set (Gaussian kernel, median "
        "bandwidth): a small MMD² and a high similarity mean the images of a class look alike.",
    )


# ------------------------------------------------------------------------------ evaluation


def _evaluation_section(run: RunFolder) -> str | None:
    tables = [_final_eval_table(run), _periodic_table(analyses.eval_points(run.records))]
    present = [t for t in tables if t]
    return section("evaluation", "Evaluation", present) if present else None


def _final_eval_table(run: RunFolder) -> str | None:
    header = [
        "set",
        "IPC",
        "architecture",
        "networks",
        "test accuracy (%)",
        "test AUC",
        "val accuracy (%)",
        "lr",
        "per network test accuracy (%)",
    ]
    rows = [_final_eval_row(row, arch) for row in run.rows() for arch in row.archs]
    if not rows:
        return None
    return html_table(header, rows, table_id="final-eval", row_headers=False)


def _final_eval_row(row: ResultRow, arch: str) -> list[Any]:
    stats = row.archs[arch]
    nets = [n.acc for n in row.nets(arch)]
    count = len(nets) or ("-" if stats.num_nets is None else stats.num_nets)
    return [
        method_name(row.set),
        "-" if row.ipc is None else row.ipc,
        arch_name(arch),
        count,
        pct(stats.acc_mean, stats.acc_std),
        frac(stats.auc_mean, stats.auc_std),
        pct(stats.extra.get("val_acc_mean"), stats.extra.get("val_acc_std")),
        "-" if row.lr is None else f"{row.lr:.4g}",
        ", ".join(f"{100 * a:.1f}" for a in nets) or "-",
    ]


def _periodic_table(points: list[dict[str, Any]]) -> str | None:
    during = [p for p in points if not p["final"]]
    if not during:
        return None
    rows = [
        [
            p["iteration"],
            duration(p["seconds"]),
            arch_name(p["arch"]),
            pct(p["acc_mean"], p["acc_std"]),
            frac(p["auc_mean"], p["auc_std"]),
        ]
        for p in during
    ]
    header = [
        "iteration",
        "distillation time",
        "architecture",
        f"{analyses.split_label(during)} (%)",
    ]
    header.append("AUC")
    return html_table(header, rows, table_id="periodic-eval", row_headers=False)


def _audit_section(run: RunFolder) -> str | None:
    """The privacy audits kept in the run folder (RUN/audit*/: `meddistill bench` puts them
    there, `meddistill audit RUN --out RUN/audit` too)."""
    from meddistill.report.audit_page import audits_section  # it draws with this module's parts

    return audits_section(run.path)


# ------------------------------------------------------------------------------ cost


def _experts_section(run: RunFolder) -> str | None:
    """The experts the set was matched against, as buffer.json records them: accuracy per
    epoch on the held-out (validation) split, the test split read once at the end."""
    meta = run.buffer_meta()
    experts = (meta or {}).get("experts")
    if not isinstance(experts, list) or not experts:
        return None
    rows = [
        [e.get("index"), e.get("held_out") or "-", _percent(e.get("final_train_acc")),
         _percent(e.get("final_val_acc")), _percent(e.get("final_test_acc")),
         ", ".join(f"{100 * v:.1f}" for v in e.get("val_acc") or [] if isinstance(v, float))]
        for e in experts if isinstance(e, dict)
    ]  # fmt: skip
    header = ["expert", "held out", "train acc (%)", "val acc (%)", "test acc (%)",
              "val acc per epoch (%)"]  # fmt: skip
    caption = (
        "Each expert's accuracy after its last epoch; the per-epoch curve is measured on the "
        "validation split (epoch 0 = the initial network); the test split is read once, at the end."
    )
    return section("experts", "Expert buffer", [html_table(header, rows, table_id="experts",
                                                           caption=caption)])  # fmt: skip


def _percent(value: Any) -> str:
    return f"{100 * value:.2f}" if isinstance(value, int | float) else "-"


def costs_section(run: RunFolder) -> str | None:
    """What each stage cost (costs.json: every session of a stage added up), when recorded."""
    data = read_costs(run.path)
    stages = data.get("stages")
    if not isinstance(stages, dict) or not stages:
        return None
    rows = [_cost_row(name, t) for name, t in stages.items() if isinstance(t, dict)]
    header = ["stage", "sessions", "wall time", "CPU user (s)", "CPU system (s)",
              "peak RSS (MB)", "peak GPU (MB)"]  # fmt: skip
    device = " ".join(str(data[k]) for k in ("device", "device_name") if data.get(k))
    caption = f"On {device or 'an unknown device'}, {data.get('threads', '?')} threads; CPU "
    caption += "time counts every thread and worker process, so it can exceed the wall time."
    table = html_table(header, rows, table_id="costs", caption=caption)
    return section("costs", "Cost", [table])


def _cost_row(name: str, total: dict[str, Any]) -> list[Any]:
    def number(key: str, digits: int) -> str:
        value = total.get(key)
        return f"{value:.{digits}f}" if isinstance(value, int | float) else "-"

    wall = total.get("wall_s")
    if isinstance(wall, int | float):
        wall = f"{wall:.1f} s" if wall < 60 else duration(wall)
    return [
        name.replace("_", " "),
        total.get("sessions", "-"),
        wall if isinstance(wall, str) else "-",
        number("cpu_user_s", 1),
        number("cpu_sys_s", 1),
        number("peak_rss_mb", 0),
        number("peak_gpu_mb", 0),
    ]


# ------------------------------------------------------------------------------ configuration


def config_section(run: RunFolder) -> str | None:
    parts = []
    if run.config_text:
        parts.append(details("Resolved configuration (config.yaml)", run.config_text))
    if run.env is not None:
        parts.append(details("Environment (env.json)", json.dumps(run.env, indent=2)))
    log = run.path / "log.txt"
    if log.is_file():
        lines = log.read_text(errors="replace").splitlines()
        parts.append(
            details(
                f"Log (last {min(len(lines), LOG_TAIL)} lines of log.txt)",
                "\n".join(lines[-LOG_TAIL:]),
            )
        )
    return section("config", "Configuration", parts) if parts else None
