"""Analysis figures of a distillation, each a PNG plus the numbers behind it (CSV or JSON).

The figures of the papers' analysis sections: loss curves during matching (PTM Fig. 4a),
accuracy against wall time during distillation (PTM Fig. 3a), the MMD among the synthetic
images of a class over the run (PTM Fig. 5a), evaluation stability over K networks (PTM
Fig. 4b) and t-SNE of real test features (PTM Fig. 7).

Every function is pure: data in, two files out (`out` with suffix .png, and the same stem
with .csv or .json), written atomically. Numbers are saved beside each figure so that a
figure can be redrawn or checked without re-running anything.

matplotlib (a dependency of meddistill) is imported only here, through its object-oriented
API (Figure + Agg canvas): headless, and nothing changes pyplot's global state.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from meddistill.errors import ArtifactError, ConfigError
from meddistill.matching.losses import median_sigma, overlap_loss
from meddistill.utils import atomic_path

Records = Sequence[Mapping[str, Any]]
RunRecords = Records | Mapping[str, Records]
SINGLE_RUN = "run"


@dataclass(frozen=True)
class Analysis:
    """The two files of one analysis: the figure and the numbers it shows."""

    png: Path
    data: Path


# ---------------------------------------------------------------------------------------------
# Plumbing
# ---------------------------------------------------------------------------------------------


def have_matplotlib() -> bool:
    """Whether figures can be drawn here: matplotlib is a dependency, but a broken or partial
    install should cost the figures (with a note), not the whole page."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure on an Agg canvas, without pyplot (no global state)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError(
            "analysis figures need matplotlib, a dependency of meddistill that cannot be "
            "imported here; run `pip install matplotlib`"
        ) from None
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _paths(out: str | Path, data_suffix: str) -> tuple[Path, Path]:
    base = Path(out)
    png = base.with_suffix(".png")
    return png, png.with_suffix(data_suffix)


def _save_figure(fig: Any, png: Path) -> None:
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png")


def _save_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _save_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    _save_text(path, buf.getvalue())


def _save_json(path: Path, obj: Any) -> None:
    _save_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def _runs(records: RunRecords) -> dict[str, Records]:
    """One run's records, or {label: records} of several runs to overlay."""
    if isinstance(records, Mapping):
        return {str(k): v for k, v in records.items()}
    return {SINGLE_RUN: records}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file. A torn last line (a kill mid-write) is left out;
    an unreadable line elsewhere is an ArtifactError naming the file and line."""
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"metrics file missing: {p}; give a run folder written by meddistill")
    lines = p.read_text().splitlines()
    out: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):
                break
            raise ArtifactError(
                f"{p} line {number} is not JSON; the file is damaged, remove that line"
            ) from None
        if isinstance(record, dict):
            out.append(record)
    return out


def distill_records(records: Records) -> list[Mapping[str, Any]]:
    """The 'distill' records by iteration, one per iteration: a resumed run logs the
    iterations after its last checkpoint twice, and the later record is the one that counts."""
    by_it: dict[int, Mapping[str, Any]] = {}
    for r in records:
        if r.get("stage") == "distill" and isinstance(r.get("iteration"), int):
            by_it[int(r["iteration"])] = r
    return [by_it[i] for i in sorted(by_it)]


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over the finite values (NaN stays NaN)."""
    out = np.full_like(values, np.nan)
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1) : i + 1]
        chunk = chunk[np.isfinite(chunk)]
        if chunk.size:
            out[i] = chunk.mean()
    return out


# ---------------------------------------------------------------------------------------------
# Loss curves (PTM Fig. 4a)
# ---------------------------------------------------------------------------------------------


def loss_keys(records: Records) -> list[str]:
    """'loss' and every '*_loss' field with a non-zero value in the distill records."""
    keys: set[str] = set()
    for r in distill_records(records):
        for k, v in r.items():
            if (k == "loss" or k.endswith("_loss")) and (_number(v) or 0.0) != 0.0:
                keys.add(k)
    return sorted(keys, key=lambda k: (k != "loss", k != "match_loss", k))


# Per-iteration quantities other than losses: (panel title, factor the value is drawn with).
STEP_CURVES = {
    "mask_utilisation": ("mask coverage (% of parameters matched)", 100.0),
    "syn_lr": ("learned step size", 1.0),
}


def step_keys(records: Records) -> list[str]:
    """The STEP_CURVES keys worth a panel: the learned step size whenever recorded, the mask
    coverage when it is ever below 1 (a method without a mask records 1.0 throughout)."""
    steps = distill_records(records)
    values = {k: [v for r in steps if (v := _number(r.get(k))) is not None] for k in STEP_CURVES}
    keys = []
    if any(v < 1.0 for v in values["mask_utilisation"]):
        keys.append("mask_utilisation")
    if values["syn_lr"]:
        keys.append("syn_lr")
    return keys


def _distill_runs(metrics_records: RunRecords) -> dict[str, list[Mapping[str, Any]]]:
    runs = {label: distill_records(recs) for label, recs in _runs(metrics_records).items()}
    runs = {label: recs for label, recs in runs.items() if recs}
    if not runs:
        raise ConfigError("no 'distill' records to plot; give the metrics.jsonl of a distillation")
    return runs


def _save_step_csv(path: Path, runs: Mapping[str, Records], keys: Sequence[str]) -> None:
    """CSV run,iteration,skipped,<keys...> of the raw values."""
    rows = [
        [label, int(r["iteration"]), bool(r.get("skipped", False))]
        + [_number(r.get(k)) for k in keys]
        for label, recs in runs.items()
        for r in recs
    ]
    _save_csv(path, ["run", "iteration", "skipped", *keys], rows)


def _draw_curve(
    ax: Any, recs: Records, key: str, factor: float, color: str, window: int, name: str | None
) -> float:
    """One run's curve of `key`, with a moving average over a faint raw line when window > 1;
    returns its smallest value (inf when it has none)."""
    x = np.array([r["iteration"] for r in recs], dtype=float)
    y = factor * np.array([np.nan if (v := _number(r.get(key))) is None else v for r in recs])
    if window > 1:
        ax.plot(x, y, color=color, alpha=0.25, linewidth=0.8)
        ax.plot(x, _smooth(y, window), color=color, linewidth=1.6, label=name)
    else:
        ax.plot(x, y, color=color, linewidth=1.4, label=name)
    finite = y[np.isfinite(y)]
    return float(finite.min()) if finite.size else math.inf


def _curve_figure(
    runs: Mapping[str, Records],
    keys: Sequence[str],
    titles: Mapping[str, tuple[str, float]],
    smooth: int | None,
    log: bool,
    png: Path,
) -> None:
    """One panel per key against iteration, one line per run; a linear y axis unless `log`
    (then every panel says so in its title)."""
    fig = _figure(4.2 * len(keys), 3.2)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys, strict=True):
        title, factor = titles.get(key, (key.replace("_", " "), 1.0))
        low = math.inf
        for i, (label, recs) in enumerate(runs.items()):
            n = len(recs)
            window = (n // 25 if n >= 100 else 0) if smooth is None else smooth
            name = None if label == SINGLE_RUN else label
            low = min(low, _draw_curve(ax, recs, key, factor, f"C{i % 10}", window, name))
        if log:
            ax.set_yscale("log")
            title += " (log scale)"
        elif key == "mask_utilisation":
            ax.set_ylim(0, 100)
        elif low >= 0:
            ax.set_ylim(bottom=0)  # a loss near 0 is seen as near 0, not as the axis' floor
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(True, alpha=0.3)
        if len(runs) > 1:
            ax.legend(fontsize="small")
    _save_figure(fig, png)


def loss_curves(
    metrics_records: RunRecords,
    out: str | Path,
    keys: Sequence[str] | None = None,
    smooth: int | None = None,
    log: bool = False,
) -> Analysis:
    """One panel per loss term against iteration; one line per run when given {label: records}.

    keys: default loss_keys() over all runs. smooth: width of a trailing moving average drawn
    over the faint raw curve (None: 1/25 of the iterations once there are 100 or more; 0: off).
    The y axis is linear unless log=True: on a log axis a loss that starts near 0 (HoP-TM's
    mask covers a few % of the parameters at first) reads as a loss that keeps rising.
    Data: CSV run,iteration,skipped,<keys...> of the raw values.
    """
    runs = _distill_runs(metrics_records)
    if keys is None:
        found: list[str] = []
        for recs in runs.values():
            found += [k for k in loss_keys(recs) if k not in found]
        keys = found or ["loss"]
    png, data = _paths(out, ".csv")
    _save_step_csv(data, runs, keys)
    _curve_figure(runs, keys, {}, smooth, log, png)
    return Analysis(png, data)


def step_curves(
    metrics_records: RunRecords,
    out: str | Path,
    keys: Sequence[str] | None = None,
    smooth: int | None = None,
) -> Analysis:
    """The mask coverage (in %) and the learned step size against iteration, linear axes: what
    explains a loss curve (a growing mask raises the matched loss). keys: default step_keys()
    of the first run. Data: CSV run,iteration,skipped,<keys...> of the raw values (coverage as
    a fraction in [0, 1])."""
    runs = _distill_runs(metrics_records)
    keys = list(keys) if keys is not None else step_keys(next(iter(runs.values())))
    if not keys:
        raise ConfigError("the distill records hold no mask coverage or learned step size")
    png, data = _paths(out, ".csv")
    _save_step_csv(data, runs, keys)
    _curve_figure(runs, keys, STEP_CURVES, smooth, False, png)
    return Analysis(png, data)


# ---------------------------------------------------------------------------------------------
# Accuracy against wall time (PTM Fig. 3a)
# ---------------------------------------------------------------------------------------------


def _arch_stats(record: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {
        k: v
        for k, v in record.items()
        if isinstance(v, Mapping) and _number(v.get("acc_mean")) is not None
    }


def eval_points(metrics_records: Records) -> list[dict[str, Any]]:
    """(iteration, seconds, arch, acc/auc mean and std) of every evaluation during the run.

    seconds = the summed step time of the distill iterations before the evaluation (the
    evaluations themselves are not counted: they are not part of distilling). The final
    evaluation, if recorded, comes last at the total time with final=True.
    """
    steps = distill_records(metrics_records)
    its = np.array([int(r["iteration"]) for r in steps], dtype=np.int64)
    secs = np.array([_number(r.get("seconds")) or 0.0 for r in steps], dtype=np.float64)
    cumulative = np.concatenate([[0.0], np.cumsum(secs)])
    points: list[dict[str, Any]] = []
    last_final: Mapping[str, Any] | None = None
    for r in metrics_records:
        if r.get("stage") == "final_eval":
            last_final = r
        if r.get("stage") != "eval" or not isinstance(r.get("iteration"), int):
            continue
        done = int(r["iteration"])
        seconds = float(cumulative[int(np.searchsorted(its, done))])  # iterations < done
        for arch, stats in _arch_stats(r).items():
            points.append(_point(done, seconds, arch, stats, final=False))
    if last_final is not None and steps:
        done = int(its[-1]) + 1
        for arch, stats in _arch_stats(last_final).items():
            points.append(_point(done, float(cumulative[-1]), arch, stats, final=True))
    return points


def _point(
    iteration: int, seconds: float, arch: str, stats: Mapping[str, Any], final: bool
) -> dict[str, Any]:
    """One evaluation's numbers on the validation split, where it was scored (periodic
    evaluations score only val; runs from before val was scored have test numbers)."""
    prefix = "val_" if _number(stats.get("val_acc_mean")) is not None else ""
    return {
        "iteration": iteration,
        "seconds": round(seconds, 4),
        "arch": arch,
        "split": "val" if prefix else "test",
        "acc_mean": _number(stats.get(f"{prefix}acc_mean")),
        "acc_std": _number(stats.get(f"{prefix}acc_std")),
        "auc_mean": _number(stats.get(f"{prefix}auc_mean")),
        "auc_std": _number(stats.get(f"{prefix}auc_std")),
        "final": final,
    }


def split_label(points: list[dict[str, Any]]) -> str:
    """'validation accuracy', 'test accuracy' or 'accuracy' (mixed) for a set of points."""
    splits = {p.get("split", "test") for p in points}
    return {"val": "validation accuracy", "test": "test accuracy"}.get(
        splits.pop() if len(splits) == 1 else "", "accuracy"
    )


def accuracy_vs_time(metrics_records: RunRecords, out: str | Path) -> Analysis:
    """Validation accuracy (mean ± std over the evaluation networks; test for runs made before
    val was scored) against distillation time; one line per (run, architecture). The final evaluation (more networks, own settings) is
    drawn as a separate marker. Data: CSV run,arch,iteration,seconds,acc/auc mean/std,final."""
    runs = {label: eval_points(recs) for label, recs in _runs(metrics_records).items()}
    runs = {label: pts for label, pts in runs.items() if pts}
    if not runs:
        raise ConfigError(
            "no evaluation records to plot; distil with match.eval_every > 0 (periodic "
            "evaluation) or keep the final evaluation"
        )
    png, data = _paths(out, ".csv")
    cols = ["iteration", "seconds", "split", "acc_mean", "acc_std", "auc_mean", "auc_std", "final"]
    _save_csv(
        data,
        ["run", "arch", *cols],
        ([label, p["arch"], *(p[c] for c in cols)] for label, pts in runs.items() for p in pts),
    )
    total = max(p["seconds"] for pts in runs.values() for p in pts)
    scale, unit = (60.0, "min") if total >= 600 else (1.0, "s")
    fig = _figure(6.0, 3.8)
    ax = fig.subplots()
    line = 0
    for label, pts in runs.items():
        for arch in dict.fromkeys(p["arch"] for p in pts):
            color = f"C{line % 10}"
            line += 1
            name = arch if label == SINGLE_RUN else f"{label} ({arch})"
            during = [p for p in pts if p["arch"] == arch and not p["final"]]
            final = [p for p in pts if p["arch"] == arch and p["final"]]
            if during:
                x = np.array([p["seconds"] for p in during]) / scale
                y = 100 * np.array([p["acc_mean"] for p in during])
                e = 100 * np.array([p["acc_std"] or 0.0 for p in during])
                ax.plot(x, y, marker="o", color=color, label=name)
                ax.fill_between(x, y - e, y + e, color=color, alpha=0.15)
            for p in final:
                ax.errorbar(
                    p["seconds"] / scale,
                    100 * p["acc_mean"],
                    yerr=100 * (p["acc_std"] or 0.0),
                    marker="*",
                    markersize=11,
                    color=color,
                    capsize=3,
                    linestyle="none",
                    label=f"{name}, final" if not during else None,
                )
    ax.set_xlabel(f"distillation time ({unit})")
    ax.set_ylabel(f"{split_label([p for pts in runs.values() for p in pts])} (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    _save_figure(fig, png)
    return Analysis(png, data)


# ---------------------------------------------------------------------------------------------
# MMD among the synthetic images of a class (PTM Fig. 5a)
# ---------------------------------------------------------------------------------------------


def foundation_halves(labels: torch.Tensor) -> torch.Tensor:
    """PTM's split of each class (as the engine's foundation_mask): the first ceil(n/2)
    images of a class are the foundation subset, the rest the complement."""
    hard = labels if labels.dim() == 1 else labels.argmax(dim=1)
    mask = torch.zeros(hard.shape[0], dtype=torch.bool, device=hard.device)
    for c in torch.unique(hard).tolist():
        idx = torch.nonzero(hard == c).flatten()
        mask[idx[: (idx.numel() + 1) // 2]] = True
    return mask


def mmd_within_class(
    images: torch.Tensor, labels: torch.Tensor, sigma: float | None = None
) -> dict[int, dict[str, float]]:
    """Per class with two or more images: the (biased) MMD^2 between its foundation and
    complement halves, and the mean kernel similarity of its distinct image pairs.

    mmd2 = mean k(f, f') + mean k(c, c') - 2 mean k(f, c), which is -overlap_loss / (|f||c|)
    of PTM Eq. (4) for that class: the quantity the overlap term raises. Small values mean the
    images of the class look alike. sigma: the Gaussian kernel's bandwidth, by default the
    median same-class distance (matching.losses.median_sigma); pass one fixed value to
    compare sets over a run.
    """
    x = images.detach().float().cpu()
    hard = (labels if labels.dim() == 1 else labels.argmax(dim=1)).detach().cpu()
    if x.shape[0] != hard.shape[0]:
        raise ConfigError(f"{x.shape[0]} images but {hard.shape[0]} labels")
    s = float(sigma) if sigma is not None else median_sigma(x, hard)
    if not (math.isfinite(s) and s > 0):
        raise ConfigError(f"MMD kernel bandwidth sigma must be positive, got {sigma!r}")
    found = foundation_halves(hard)
    out: dict[int, dict[str, float]] = {}
    for c in torch.unique(hard).tolist():
        sel = hard == c
        n = int(sel.sum())
        if n < 2:
            continue
        xc, fc = x[sel], found[sel]
        nf, nc = int(fc.sum()), int((~fc).sum())
        # A squared RKHS norm, so >= 0: a negative value is float rounding (identical images).
        mmd2 = max(0.0, -float(overlap_loss(xc, hard[sel], fc, s)) / (nf * nc))
        d2 = torch.cdist(xc.flatten(1), xc.flatten(1)).pow(2)
        k = torch.exp(-d2 / (2.0 * s * s))
        similarity = float((k.sum() - k.diagonal().sum()) / (n * (n - 1)))
        out[int(c)] = {"mmd2": mmd2, "similarity": similarity, "n": n}
    return out


def class_mmd_over_run(
    snapshots: Sequence[tuple[int, torch.Tensor]],
    labels: torch.Tensor,
    out: str | Path,
    sigma: float | None = None,
    class_names: Sequence[str] | None = None,
) -> Analysis:
    """Within-class MMD^2 (mmd_within_class) of the synthetic images at saved iterations.

    snapshots: (iteration, images) pairs, images in the order of `labels`. One sigma serves
    every snapshot (by default the median same-class distance of the first), so the values
    are comparable along the run. Data: JSON {sigma, iterations, classes: {name: [mmd2...]},
    mean: [...]}.
    """
    if not snapshots:
        raise ConfigError("no image snapshots given; pass a list of (iteration, images) pairs")
    ordered = sorted(snapshots, key=lambda s: int(s[0]))
    hard = labels if labels.dim() == 1 else labels.argmax(dim=1)
    if sigma is None:
        sigma = median_sigma(ordered[0][1].detach().float().cpu(), hard.cpu())
    per = [mmd_within_class(images, hard, sigma) for _, images in ordered]
    classes = sorted({c for p in per for c in p})
    if not classes:
        raise ConfigError("within-class MMD needs a class with two or more images (IPC >= 2)")

    def name(c: int) -> str:
        return str(class_names[c]) if class_names is not None and c < len(class_names) else str(c)

    series = {name(c): [_finite(p[c]["mmd2"]) if c in p else None for p in per] for c in classes}
    mean = [_finite(float(np.mean([p[c]["mmd2"] for c in p]))) if p else None for p in per]
    iterations = [int(it) for it, _ in ordered]
    png, data = _paths(out, ".json")
    _save_json(
        data,
        {"sigma": sigma, "iterations": iterations, "classes": series, "mean": mean},
    )
    fig = _figure(6.0, 3.8)
    ax = fig.subplots()
    for i, (label, values) in enumerate(series.items()):
        y = [np.nan if v is None else v for v in values]
        ax.plot(iterations, y, color=f"C{i % 10}", alpha=0.45, linewidth=1.0, label=label)
    ax.plot(iterations, [np.nan if v is None else v for v in mean], "k-", lw=2.2, label="mean")
    ax.set_xlabel("iteration")
    ax.set_ylabel("MMD² within class (foundation vs complement)")
    ax.grid(True, alpha=0.3)
    if len(series) <= 12:
        ax.legend(fontsize="x-small", ncols=2)
    _save_figure(fig, png)
    return Analysis(png, data)


# ---------------------------------------------------------------------------------------------
# Evaluation stability (PTM Fig. 4b)
# ---------------------------------------------------------------------------------------------


def stability(per_net_accs: Mapping[str, Sequence[float]], out: str | Path) -> Analysis:
    """Box plot with every network as a dot, one box per set (method, seed or architecture).

    Accuracies are fractions in [0, 1], drawn in %. Data: JSON {label: {values, mean, std,
    median, min, max, n}} with std the population std (np.std), as every table of the package.
    """
    groups = {str(k): [float(v) for v in vals] for k, vals in per_net_accs.items() if len(vals)}
    if not groups:
        raise ConfigError("no per-network accuracies to plot")
    bad = [k for k, vals in groups.items() if not all(math.isfinite(v) for v in vals)]
    if bad:
        raise ConfigError(f"accuracies of '{bad[0]}' are not all finite numbers")
    summary = {
        k: {
            "values": v,
            "n": len(v),
            "mean": float(np.mean(v)),
            "std": float(np.std(v)),
            "median": float(np.median(v)),
            "min": float(np.min(v)),
            "max": float(np.max(v)),
        }
        for k, v in groups.items()
    }
    png, data = _paths(out, ".json")
    _save_json(data, summary)
    fig = _figure(max(3.5, 1.1 * len(groups) + 1.5), 3.8)
    ax = fig.subplots()
    values = [100 * np.asarray(v) for v in groups.values()]
    positions = np.arange(1, len(values) + 1)
    ax.boxplot(values, positions=positions, widths=0.55, showfliers=False)
    for i, (pos, v) in enumerate(zip(positions, values, strict=True)):
        offsets = np.linspace(-0.12, 0.12, num=len(v)) if len(v) > 1 else np.zeros(1)
        ax.scatter(pos + offsets, v, s=18, color=f"C{i % 10}", zorder=3)
    ax.set_xticks(positions, list(groups), rotation=20 if len(groups) > 4 else 0)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, axis="y", alpha=0.3)
    _save_figure(fig, png)
    return Analysis(png, data)


# ---------------------------------------------------------------------------------------------
# Membership attacks' ROC curves (Carlini et al. 2022, Fig. 1 and after)
# ---------------------------------------------------------------------------------------------


def attack_roc(curves: Mapping[str, Mapping[str, Sequence[float]]], out: str | Path) -> Analysis:
    """TPR against FPR on log-log axes, one curve per attacked model, as Carlini et al. draw
    them: the low-FPR corner, where an attack names people with few false alarms, takes up
    the plot instead of a sliver of it. Zeros cannot sit on a log axis, so values below the
    smallest positive FPR drawn are shown at that floor. Data: JSON {label: {fpr, tpr}}."""
    kept = {str(k): {"fpr": [float(x) for x in c["fpr"]], "tpr": [float(y) for y in c["tpr"]]}
            for k, c in curves.items() if len(c.get("fpr", [])) >= 2}  # fmt: skip
    if not kept:
        raise ConfigError("no ROC curves to plot (audit.json holds none)")
    positive = [x for c in kept.values() for x in c["fpr"] + c["tpr"] if x > 0]
    floor = min(1e-3, min(positive, default=1e-3) / 2)
    png, data = _paths(out, ".json")
    _save_json(data, kept)
    fig = _figure(4.6, 4.2)
    ax = fig.subplots()
    for i, (label, c) in enumerate(kept.items()):
        fpr, tpr = np.maximum(c["fpr"], floor), np.maximum(c["tpr"], floor)
        ax.plot(fpr, tpr, color=f"C{i % 10}", label=label)
    ax.plot([floor, 1], [floor, 1], color="0.6", linestyle="--", linewidth=1, label="guessing")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1.05)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="lower right")
    _save_figure(fig, png)
    return Analysis(png, data)


# ---------------------------------------------------------------------------------------------
# t-SNE of real test features (PTM Fig. 7)
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def embed_features(
    model: torch.nn.Module, images: torch.Tensor, batch_size: int = 256
) -> np.ndarray:
    """model.embed(x) of every image (eval mode, no gradient), in batches, as float64 numpy;
    the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        parts = [
            model.embed(images[i : i + batch_size].to(device)).flatten(1).double().cpu()
            for i in range(0, images.shape[0], batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(parts).numpy()


def _tsne_inputs(
    features: Mapping[str, np.ndarray | torch.Tensor], labels: np.ndarray | torch.Tensor
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(labels [N], float64 [N, D] features per set), refusing sets t-SNE cannot embed."""
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
    if not features:
        raise ConfigError("no feature sets given; pass {name: [N, D] features}")
    arrays: dict[str, np.ndarray] = {}
    for name, f in features.items():
        arr = np.asarray(f.detach().cpu() if isinstance(f, torch.Tensor) else f, dtype=np.float64)
        arr = arr.reshape(arr.shape[0], -1)
        if arr.shape[0] != y.shape[0]:
            raise ConfigError(f"features '{name}' have {arr.shape[0]} rows but {y.shape[0]} labels")
        if arr.shape[0] < 4:
            raise ConfigError(f"t-SNE needs at least 4 points, '{name}' has {arr.shape[0]}")
        if not np.all(np.isfinite(arr)):
            raise ConfigError(f"features '{name}' hold NaN or infinite values")
        arrays[str(name)] = arr
    return y, arrays


def _draw_tsne(
    coords: Mapping[str, np.ndarray],
    y: np.ndarray,
    class_names: Sequence[str] | None,
    png: Path,
) -> None:
    """One scatter panel per set, coloured by true class (a legend when classes are few)."""
    fig = _figure(4.0 * len(coords), 4.2)
    axes = fig.subplots(1, len(coords), squeeze=False)[0]
    classes = sorted(int(c) for c in np.unique(y))
    for ax, (name, xy) in zip(axes, coords.items(), strict=True):
        for i, c in enumerate(classes):
            sel = y == c
            label = class_names[c] if class_names is not None and c < len(class_names) else str(c)
            ax.scatter(xy[sel, 0], xy[sel, 1], s=6, color=f"C{i % 10}", label=str(label)[:24])
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    if len(classes) <= 12:
        axes[-1].legend(fontsize="x-small", markerscale=2, loc="best")
    _save_figure(fig, png)


def tsne_features(
    features: Mapping[str, np.ndarray | torch.Tensor],
    labels: np.ndarray | torch.Tensor,
    out: str | Path,
    class_names: Sequence[str] | None = None,
    perplexity: float = 30.0,
    random_state: int = 0,
) -> Analysis:
    """One 2-D t-SNE panel per set: features of the same real test images (rows in the order
    of `labels`) from a network trained on that set, coloured by true class.

    sklearn's TSNE with a fixed random_state and PCA initialisation, so a figure is
    reproducible; perplexity is lowered to (n - 1) / 3 for small samples. Data: CSV
    set,index,label,x,y.
    """
    from sklearn.manifold import TSNE

    y, arrays = _tsne_inputs(features, labels)
    coords: dict[str, np.ndarray] = {}
    for name, arr in arrays.items():
        perp = float(min(perplexity, max(1.0, (arr.shape[0] - 1) / 3.0)))
        tsne = TSNE(n_components=2, perplexity=perp, init="pca", random_state=random_state)
        coords[name] = tsne.fit_transform(arr)
    png, data = _paths(out, ".csv")
    _save_csv(
        data,
        ["set", "index", "label", "x", "y"],
        (
            [name, i, int(y[i]), float(xy[i, 0]), float(xy[i, 1])]
            for name, xy in coords.items()
            for i in range(xy.shape[0])
        ),
    )
    _draw_tsne(coords, y, class_names, png)
    return Analysis(png, data)


def tuning_search(record: Mapping[str, Any], out: str | Path) -> Analysis:
    """A `meddistill tune` search (trials.json): each trial's validation accuracy in the
    order it ran (pruned trials at their last short evaluation, marked x), the best so far as
    a line, and beside it the parameter importance when Optuna could estimate it. Data: CSV
    number,state,val_acc,last_intermediate."""
    trials = list(record.get("trials", []))
    if not trials:
        raise ConfigError("the search has no trial yet; run `meddistill tune` first")
    png, data = _paths(out, ".csv")
    rows = []
    for t in trials:
        inter = t.get("intermediate") or {}
        last = inter[max(inter, key=int)] if inter else None
        rows.append([t["number"], t["state"], t.get("val_acc"), last])
    _save_csv(data, ["number", "state", "val_acc", "last_intermediate"], rows)
    importance = record.get("importance") or {}
    fig = _figure(9.0 if importance else 6.0, 3.6)
    axes = fig.subplots(1, 2 if importance else 1, squeeze=False)[0]
    ax = axes[0]
    done = [(n, 100 * v) for n, s, v, _ in rows if s == "complete" and v is not None]
    cut = [(n, 100 * last) for n, s, _, last in rows if s == "pruned" and last is not None]
    if done:
        ax.plot(*zip(*done, strict=True), "o", color="C0", label="complete (val)")
        best = np.maximum.accumulate([v for _, v in done])
        ax.step([n for n, _ in done], best, where="post", color="C2", label="best so far")
    if cut:
        ax.plot(*zip(*cut, strict=True), "x", color="C3", label="pruned (last short eval)")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy (%)")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    if importance:
        names = list(importance)[::-1]
        axes[1].barh(names, [importance[k] for k in names], color="C1")
        axes[1].set_xlabel("importance (Optuna)")
    _save_figure(fig, png)
    return Analysis(png, data)
