"""The `meddistill` command: parse, resolve the config, call the library, print one line on error.

Config precedence, lowest to highest: built-in defaults < each --config FILE in order <
flags (--dataset, --seed, ...) < `key=value` overrides (dotted keys, values parsed as YAML).
A job command's --help lists its config keys and defaults; `meddistill config show <command>
...` resolves the same arguments the same way and prints the result instead of running it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from meddistill import __version__
from meddistill.config import apply_overrides, load_yaml, merge
from meddistill.errors import ConfigError, MeddistillError, RankLost
from meddistill.memory import keep_freed_memory
from meddistill.oserrors import describe_oserror


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="YAML config file (repeatable; later files win)",
    )
    parser.add_argument(
        "--data-root",
        help="folder holding the dataset files (default: $MEDDISTILL_DATA, else ~/.medmnist)",
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="fetch a missing MedMNIST file from its official URL (md5 checked)",
    )
    parser.add_argument("--device", help="auto (CUDA when present), cpu or cuda[:N]")
    parser.add_argument("--seed", type=int, help="seed of every random draw of the run")
    parser.add_argument("--runs-dir", default="runs", help="where run folders go (default ./runs)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (default: all cores; "
        "use 1 per process when running several at once)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. eval.num_nets=3 model.width=64",
    )


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose epilog (a job command's config keys) is built only when its
    --help is printed: building it imports every method, which other uses never need."""

    epilog_of: Callable[[], str] | None = None

    def format_help(self) -> str:
        if self.epilog is None and self.epilog_of is not None:
            self.epilog = self.epilog_of()
        return super().format_help()


def _epilog(command: str, method: str | None) -> str:
    from meddistill.app.explain import help_epilog

    return help_epilog(command, method)


def _buffer_args(buf: argparse.ArgumentParser) -> None:
    buf.add_argument("--dataset", help="dataset name (default bloodmnist)")
    buf.add_argument("--out", help="buffer folder (default runs/buffers/<dataset>-<hash>)")
    buf.add_argument("--experts", type=int, help="number of experts (buffer.num_experts)")
    buf.add_argument("--epochs", type=int, help="epochs per expert (buffer.epochs)")
    buf.add_argument(
        "--dp-epsilon",
        type=float,
        metavar="EPS",
        help="DP-SGD experts (Opacus): the whole buffer (EPS, delta)-DP (buffer.dp.epsilon)",
    )


def _baseline_args(base: argparse.ArgumentParser) -> None:
    base.add_argument("--dataset", help="dataset name (default bloodmnist)")
    rows = base.add_mutually_exclusive_group()
    rows.add_argument(
        "--ipc", type=int, nargs="+", help="images per class of the random subsets (ipcs)"
    )
    rows.add_argument(
        "--no-random", action="store_true", help="skip the random-subset rows (ipcs=[])"
    )
    base.add_argument("--no-full", action="store_true", help="skip the full-data row")
    base.add_argument(
        "--dp-epsilon",
        type=float,
        metavar="EPS",
        help="train the full-data networks with DP-SGD at (EPS, delta) (full_dp.epsilon)",
    )


def _distill_args(dis: argparse.ArgumentParser) -> None:
    dis.add_argument(
        "--method",
        help="hoptm, ptm, mtt, ftd, datm, tesla, att, smdd, seqmatch, "
        "haba, dc, dsa, dm, idm or cafe (default hoptm; with --help: its options below)",
    )
    dis.add_argument("--dataset", help="dataset name (default bloodmnist)")
    dis.add_argument("--ipc", type=int, help="synthetic images per class (match.ipc)")
    dis.add_argument("--iterations", type=int, help="distillation iterations (match.iterations)")
    dis.add_argument(
        "--budget-ipc",
        type=int,
        help="storage of this many pixel images per class; the parameterisation "
        "(match.parameterization) sets how many images fit (match.budget_ipc)",
    )
    dis.add_argument(
        "--buffer", help="an existing expert buffer folder (default: make or reuse one)"
    )
    dis.add_argument(
        "--experts", type=int, metavar="N", help="experts to train (experts.num_experts)"
    )
    dis.add_argument(
        "--expert-epochs", type=int, metavar="E", help="epochs per expert (experts.epochs)"
    )
    dis.add_argument(
        "--out", help="run folder (default runs/distill/<dataset>-<method>-ipc<k>-<hash>)"
    )
    dis.add_argument(
        "--dp-epsilon",
        type=float,
        metavar="EPS",
        help="make DP-SGD experts, the set (EPS, delta)-DP (experts.dp.epsilon; match.init=noise)",
    )
    dis.add_argument(
        "--keep-checkpoint",
        action="store_true",
        help="keep the distillation checkpoint once the set is saved (keep_checkpoint)",
    )


def _tune_args(tun: argparse.ArgumentParser) -> None:
    _distill_args(tun)
    tun.add_argument("--trials", type=int, help="trials to finish (tune.trials)")
    tun.add_argument(
        "--minutes", type=float, help="stop starting trials after this long (tune.minutes)"
    )
    tun.add_argument(
        "--params", nargs="+", metavar="NAME", help="knobs to search (tune.params; default all)"
    )


def _coreset_args(cor: argparse.ArgumentParser) -> None:
    cor.add_argument("--dataset", help="dataset name (default bloodmnist)")
    cor.add_argument(
        "--selection", choices=["random", "herding", "kcenter"], help="default herding"
    )
    cor.add_argument("--ipc", type=int, help="images per class")
    cor.add_argument(
        "--out", help="run folder (default runs/coreset/<dataset>-<selection>-ipc<k>-<hash>)"
    )
    cor.add_argument(
        "--keep-checkpoint",
        action="store_true",
        help="keep the selection's checkpoint once the set is saved (keep_checkpoint)",
    )


def _evaluate_args(ev: argparse.ArgumentParser) -> None:
    ev.add_argument("--dataset", help="dataset name (default bloodmnist)")
    ev.add_argument("--synthetic", help="a synthetic set folder or .safetensors file")
    ev.add_argument("--ipc", type=int, help="evaluate a random real subset of this IPC instead")
    ev.add_argument(
        "--models", nargs="+", help="architectures (convnet lenet alexnet vgg11 resnet18)"
    )


def _audit_args(aud: argparse.ArgumentParser) -> None:
    aud.add_argument(
        "synthetic",
        metavar="SET",
        help="a distill run folder, a synthetic set folder or its .safetensors",
    )
    aud.add_argument(
        "--dataset", help="dataset name (default: the one SET was made from, else bloodmnist)"
    )
    aud.add_argument("--out", help="run folder (default runs/audit/<dataset>-<hash>)")


# The commands that resolve a job: their help line and their own flags (config show takes
# the same ones, so it resolves exactly what the command would).
JOB_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "buffer": ("train expert networks and record their trajectories", _buffer_args),
    "baseline": ("evaluate full data and random real subsets", _baseline_args),
    "distill": ("distil a dataset into a few synthetic images per class", _distill_args),
    "tune": ("search a method's knobs on the validation split (Optuna)", _tune_args),
    "coreset": ("select real images per class: random, herding, kcenter", _coreset_args),
    "evaluate": ("train fresh networks on a set of images and test them", _evaluate_args),
    "audit": ("check a synthetic set for copies of patients and membership leaks", _audit_args),
}


def _job_parser(sub: Any, name: str, text: str, method: str | None) -> None:
    """A job command's parser: its flags, the common ones, its config keys in --help."""
    parser = sub.add_parser(
        name, help=text, description=text, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    JOB_COMMANDS[name][1](parser)
    _common(parser)
    parser.epilog_of = functools.partial(_epilog, name, method)


def _config_parser(sub: Any, method: str | None) -> None:
    cfg = sub.add_parser("config", help="print the config a command resolves, without running")
    actions = cfg.add_subparsers(dest="action", required=True)
    show = actions.add_parser(
        "show",
        help="the full config COMMAND would use, as YAML with a comment per key",
        description="Resolve the config exactly as COMMAND would with the same arguments "
        "(defaults < --config files < flags < key=value) and print it as YAML, a comment per "
        "key (type, default, what it is, and the value the run derives where it does); "
        "nothing is loaded or run.",
    )
    shown = show.add_subparsers(dest="shown", required=True, metavar="COMMAND")
    for name in JOB_COMMANDS:
        _job_parser(shown, name, f"the config `meddistill {name}` resolves", method)


def build_parser(method: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; `method` picks whose options `distill --help` lists."""
    parser = _Parser(
        prog="meddistill",
        description="Distil medical image datasets into a few synthetic images per class.",
    )
    parser.add_argument("--version", action="version", version=f"meddistill {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _info_parser(sub)
    for name, (text, _) in JOB_COMMANDS.items():
        _job_parser(sub, name, text, method)
    _config_parser(sub, method)
    _bench_parser(sub)
    _table_parser(sub)
    _report_parser(sub)
    _export_parser(sub)
    return parser


def _info_parser(sub: Any) -> None:
    info = sub.add_parser("info", help="print a dataset's splits, classes and shapes")
    info.add_argument(
        "dataset",
        help="a MedMNIST name (bloodmnist, ...), busi, covid19-cxr, ham10000 or folder:PATH",
    )
    info.add_argument("--data-root")
    info.add_argument("--size", type=int, help="MedMNIST size: 28, 64, 128 or 224")
    info.add_argument("--download", action="store_true")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")


def _bench_parser(sub: Any) -> None:
    bench = sub.add_parser("bench", help="run a grid of datasets x methods x IPCs x seeds")
    bench.add_argument("grid", help="grid YAML file (see configs/bench/)")
    bench.add_argument("overrides", nargs="*", metavar="key=value", help="grid overrides")
    bench.add_argument("--runs-dir", default="runs", help="runs folder (default ./runs)")
    bench.add_argument("--db", help="results database (default RUNS/results.sqlite)")
    bench.add_argument("--data-root")
    bench.add_argument("--download", action="store_true")
    bench.add_argument("--device")
    bench.add_argument("--threads", type=int)
    bench.add_argument("--no-progress", action="store_true")
    bench.add_argument(
        "--plan", action="store_true", help="list the cells and what is done; run nothing"
    )
    bench.add_argument(
        "--datasets",
        nargs="+",
        metavar="NAME",
        help="run only these datasets of the grid (e.g. one process per share, to use more "
        "cores; the results land in the same database and tables)",
    )
    bench.add_argument(
        "--methods", nargs="+", metavar="NAME", help="run only these methods of the grid"
    )
    _ray_arguments(bench)


def _ray_arguments(bench: Any) -> None:
    ray = bench.add_argument_group(
        "Ray", "run every missing buffer and cell as a Ray task (needs meddistill[cluster]); "
        "only this process writes the results database"
    )  # fmt: skip
    ray.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run on Ray: without ADDRESS a local instance of --ray-cpus CPUs, else the "
        "cluster at ADDRESS (e.g. auto, ray://head:10001); write --ray=ADDRESS or put --ray "
        "after the grid's key=value overrides",
    )
    ray.add_argument(
        "--ray-cpus", type=int, metavar="N", help="CPUs of a local instance (default: all cores)"
    )
    ray.add_argument(
        "--ray-cpus-per-cell", type=float, default=1.0, metavar="N",
        help="CPUs each task reserves (default 1; also its torch threads unless --threads)",
    )  # fmt: skip
    ray.add_argument(
        "--ray-gpus-per-cell", type=float, default=0.0, metavar="N",
        help="GPUs each task reserves (default 0; fractions share a GPU)",
    )  # fmt: skip
    ray.add_argument(
        "--ray-retries", type=int, default=3, metavar="N",
        help="retries of a task whose worker died (default 3); it resumes from its checkpoints",
    )  # fmt: skip


def _table_parser(sub: Any) -> None:
    tab = sub.add_parser("table", help="paper-style tables from the results database")
    tab.add_argument("--runs-dir", default="runs")
    tab.add_argument("--db", help="results database (default RUNS/results.sqlite)")
    tab.add_argument(
        "--kind",
        default="main",
        choices=["main", "cross-arch", "ipc-vs", "audit"],
        help="audit: the privacy audits of the grid's sets (verdict, near copies, attacks)",
    )
    tab.add_argument("--format", default="markdown", choices=["markdown", "csv", "latex"])
    tab.add_argument("--out", help="write the table to this file instead of printing it")
    tab.add_argument("--grid", help="only rows of this grid")
    tab.add_argument(
        "--metric",
        default="acc",
        choices=["acc", "auc", "val_acc", "val_auc"],
        help="test accuracy or AUC (to report), or the same on the val split (to choose by)",
    )
    tab.add_argument("--arch", default="convnet")
    tab.add_argument("--dataset", nargs="+")
    tab.add_argument("--ipc", type=int, nargs="+", help="IPCs (for ipc-vs: OURS THEIRS...)")
    tab.add_argument("--methods", nargs="+")
    tab.add_argument("--archs", nargs="+")
    tab.add_argument("--ours")
    tab.add_argument("--theirs", nargs="+")
    tab.add_argument(
        "--cost",
        action="store_true",
        help="accuracy against cost: one row per method, dataset and IPC with the wall time, CPU "
        "time and peak memory of making the set, its buffer and one evaluation network",
    )


def _report_parser(sub: Any) -> None:
    rep = sub.add_parser(
        "report", help="write DIR/report.html: a static page for a run or benchmark"
    )
    rep.add_argument(
        "path",
        metavar="DIR",
        help="a run folder (runs/distill/...) or a benchmark folder (holds results.sqlite)",
    )
    rep.add_argument(
        "--no-figures", action="store_true", help="skip the analysis figures (no matplotlib needed)"
    )
    rep.add_argument("--grid", help="benchmark: only the results of this grid")


def _export_parser(sub: Any) -> None:
    exp = sub.add_parser("export", help="write a synthetic set as a MedMNIST-style npz (uint8)")
    exp.add_argument("synthetic", help="synthetic set folder (holds synthetic.safetensors)")
    exp.add_argument("--format", default="npz", choices=["npz"], help="output format")
    exp.add_argument("--out", required=True, help="output file, e.g. distilled.npz")


def _resolve_job(
    args: argparse.Namespace, job_cls: type, flags: dict[str, Any], command: str
) -> Any:
    """The job from defaults < --config files < flags < key=value overrides, validated; a
    preset tuned on another dataset than the job's is said once on stderr. An audit whose
    config names no dataset takes the one its set was made from."""
    from meddistill.app.config import resolve
    from meddistill.app.explain import preset_warning

    files = [load_yaml(path) for path in args.config]
    data: dict[str, Any] = {}
    for loaded in files:
        data = merge(data, loaded)
    data = apply_overrides(merge(data, flags), list(args.overrides))
    if command == "audit" and isinstance(data.get("synthetic"), str):
        from meddistill.app.audit import with_set_recipe

        data = with_set_recipe(data, data["synthetic"])
    job = resolve(job_cls, data)
    warning = preset_warning(files, data, job)
    if warning is not None:
        print(f"meddistill {command}: warning: {warning}", file=sys.stderr)
    return job


def _dataset_flags(args: argparse.Namespace) -> dict[str, Any]:
    flags: dict[str, Any] = {}
    if getattr(args, "dataset", None):
        flags["name"] = args.dataset
    if getattr(args, "data_root", None):
        flags["root"] = args.data_root
    if getattr(args, "download", False):
        flags["download"] = True
    return flags


def _job_flags(args: argparse.Namespace) -> dict[str, Any]:
    flags: dict[str, Any] = {}
    ds = _dataset_flags(args)
    if ds:
        flags["dataset"] = ds
    if args.device:
        flags["device"] = args.device
    if args.seed is not None:
        flags["seed"] = args.seed
    return flags


def _present(values: dict[str, Any]) -> dict[str, Any]:
    """The flags given (not None)."""
    return {k: v for k, v in values.items() if v is not None}


def _buffer_flags(args: argparse.Namespace) -> dict[str, Any]:
    flags = _job_flags(args)
    buffer = _present({"num_experts": args.experts, "epochs": args.epochs})
    if args.dp_epsilon is not None:
        buffer["dp"] = {"epsilon": args.dp_epsilon}
    if buffer:
        flags["buffer"] = buffer
    if args.out:
        flags["out"] = args.out
    return flags


def _baseline_flags(args: argparse.Namespace) -> dict[str, Any]:
    flags = _job_flags(args)
    if args.ipc:
        flags["ipcs"] = list(args.ipc)
    if args.no_random:
        flags["ipcs"] = []
    if args.no_full:
        flags["full"] = False
    if args.dp_epsilon is not None:
        flags["full_dp"] = {"epsilon": args.dp_epsilon}
    return flags


def _evaluate_flags(args: argparse.Namespace) -> dict[str, Any]:
    flags = _job_flags(args)
    if args.synthetic:
        flags["synthetic"] = args.synthetic
    if args.ipc is not None:
        flags["ipc"] = args.ipc
    if args.models:
        flags["eval"] = {"models": list(args.models)}
    return flags


def _distill_flags(args: argparse.Namespace) -> dict[str, Any]:
    flags = _job_flags(args)
    for key in ("method", "buffer", "out"):
        if getattr(args, key):
            flags[key] = getattr(args, key)
    match = _present(
        {
            "ipc": args.ipc,
            "iterations": args.iterations,
            "budget_ipc": getattr(args, "budget_ipc", None),
        }
    )
    experts = _present({"num_experts": args.experts, "epochs": args.expert_epochs})
    if getattr(args, "dp_epsilon", None) is not None:
        experts["dp"] = {"epsilon": args.dp_epsilon}
    for key, section in (("match", match), ("experts", experts)):
        if section:
            flags[key] = section
    if args.keep_checkpoint:
        flags["keep_checkpoint"] = True
    return flags


def _tune_flags(args: argparse.Namespace) -> dict[str, Any]:
    flags = _distill_flags(args)
    tune = _present({"trials": args.trials, "minutes": args.minutes})
    if args.params:
        tune["params"] = list(args.params)
    if tune:
        flags["tune"] = tune
    return flags


def _coreset_flags(args: argparse.Namespace) -> dict[str, Any]:
    flags = _job_flags(args)
    flags.update(_present({k: getattr(args, k) for k in ("selection", "ipc", "out")}))
    if args.keep_checkpoint:
        flags["keep_checkpoint"] = True
    return flags


def _audit_flags(args: argparse.Namespace) -> dict[str, Any]:
    flags = _job_flags(args)
    flags.update(_present({"synthetic": args.synthetic, "out": args.out}))
    return flags


# Each job command's flags as config keys (the table config show resolves through too).
JOB_FLAGS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "buffer": _buffer_flags,
    "baseline": _baseline_flags,
    "evaluate": _evaluate_flags,
    "distill": _distill_flags,
    "tune": _tune_flags,
    "coreset": _coreset_flags,
    "audit": _audit_flags,
}


def _job(args: argparse.Namespace, command: str) -> Any:
    """The job `meddistill <command>` runs with these arguments (resolved, not run)."""
    from meddistill.app.explain import JOBS

    return _resolve_job(args, JOBS[command], JOB_FLAGS[command](args), command)


def cmd_info(args: argparse.Namespace) -> int:
    from meddistill.data.registry import describe_known, load_dataset

    try:
        dataset = load_dataset(
            args.dataset, root=args.data_root, size=args.size, download=args.download
        )
        facts = dataset.describe()
    except MeddistillError as exc:
        known = _describe_or_none(describe_known, args.dataset)
        if known is None:
            raise
        facts = {**known, "note": f"file not loaded: {exc}"}
    if args.json:
        print(json.dumps(facts, indent=2, default=str))
    else:
        print(_format_info(facts))
    return 0


def _describe_or_none(fn: Any, name: str) -> dict[str, Any] | None:
    try:
        return fn(name)
    except MeddistillError:
        return None


def _format_info(facts: dict[str, Any]) -> str:
    lines = [f"{facts.get('name')}  ({facts.get('task', '?')})"]
    if "image_shape" in facts:
        lines.append(f"  image shape : {tuple(facts['image_shape'])}")
    if "source_id" in facts:
        lines.append(f"  source id   : {facts['source_id']}")
    splits = facts.get("splits") or facts.get("n_samples") or {}
    lines.append("  splits      : " + ", ".join(f"{k} {v}" for k, v in splits.items()))
    names = facts.get("class_names") or []
    counts = facts.get("class_counts", {})
    lines.append(f"  classes     : {len(names)}")
    for i, name in enumerate(names):
        per_split = "  ".join(f"{k} {v[i]:>6}" for k, v in counts.items())
        short = name if len(name) <= 40 else name[:37] + "..."
        lines.append(f"    {i:>2} {short:<40} {per_split}")
    if "normalization" in facts:
        norm = facts["normalization"]
        lines.append(
            "  mean / std  : "
            + " ".join(f"{m:.4f}" for m in norm["mean"])
            + " / "
            + " ".join(f"{s:.4f}" for s in norm["std"])
        )
    if "note" in facts:
        lines.append(f"  note        : {facts['note']}")
    return "\n".join(lines)


def cmd_buffer(args: argparse.Namespace) -> int:
    from meddistill.app.buffer import run_buffer

    summary = run_buffer(_job(args, "buffer"), args.runs_dir, progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from meddistill.app.evaluate import run_baseline

    job = _job(args, "baseline")
    results = run_baseline(job, args.runs_dir, progress=not args.no_progress)
    print(_format_rows(results["rows"]))
    print(f"results: {results['run_dir']}/results.json")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from meddistill.app.evaluate import run_evaluate

    job = _job(args, "evaluate")
    results = run_evaluate(job, args.runs_dir, progress=not args.no_progress)
    print(_format_rows(results["rows"]))
    print(f"results: {results['run_dir']}/results.json")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from meddistill.app.distill import run_distill

    job = _job(args, "distill")
    results = run_distill(job, args.runs_dir, progress=not args.no_progress)
    if results["rows"]:
        print(_format_rows(results["rows"]))
    print(f"synthetic set: {results['synthetic']}  (learned step size {results['syn_lr']:.4g})")
    print(f"results: {results['run_dir']}/results.json")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from meddistill.app.tune import run_tune

    result = run_tune(_job(args, "tune"), args.runs_dir, progress=not args.no_progress)
    best = result["best"]
    print(f"best: trial {best['number']}, val accuracy {100 * best['val_acc']:.2f} % with "
          f"{best['params']}")  # fmt: skip
    print(f"preset: {result['preset']}  (meddistill distill --config it to report on test)")
    return 0


def cmd_coreset(args: argparse.Namespace) -> int:
    from meddistill.app.distill import run_coreset

    job = _job(args, "coreset")
    results = run_coreset(job, args.runs_dir, progress=not args.no_progress)
    if results["rows"]:
        print(_format_rows(results["rows"]))
    print(f"coreset: {results['synthetic']}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from meddistill.app.audit import run_audit

    result = run_audit(_job(args, "audit"), args.runs_dir, progress=not args.no_progress)
    print(result["report"].summary())
    print(f"audit: {result['audit']}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """`config show COMMAND ...`: resolve exactly as COMMAND would, print it, run nothing."""
    from meddistill.app.explain import show_config

    print(show_config(args.shown, _job(args, args.shown)), end="")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from meddistill.bench.db import ResultsDB
    from meddistill.bench.plan import cell_status, format_status, plan
    from meddistill.bench.run import DB_FILE, run_grid
    from meddistill.bench.spec import load_grid

    overrides = list(args.overrides)
    if args.ray is not None and "=" in args.ray and "://" not in args.ray:
        overrides.append(args.ray)  # `--ray key=value`: an override argparse gave to --ray
        args.ray = ""
    grid = load_grid(args.grid, overrides)
    if args.datasets or args.methods:
        grid = grid.subset(args.datasets, args.methods)
    db_path = Path(args.db or Path(args.runs_dir) / DB_FILE)
    if args.plan:  # only reads: works on a read-only results folder too
        with ResultsDB(db_path, create=not db_path.is_file()) as db:
            print(format_status(cell_status(plan(grid), db)))
        return 0
    where = {"data_root": args.data_root, "download": args.download, "device": args.device}
    with ResultsDB(db_path) as db:
        if args.ray is not None:
            summary = _bench_on_ray(args, grid, db, where)
        else:
            summary = run_grid(
                grid, args.runs_dir, db, progress=not args.no_progress, log=print, **where
            )
    print(json.dumps({k: v for k, v in summary.items() if k != "cells"}, indent=2, default=str))
    return 0


def _bench_on_ray(args: argparse.Namespace, grid: Any, db: Any, where: dict[str, Any]) -> Any:
    """`bench --ray`: the grid's missing buffers and cells as Ray tasks (bench/ray_grid.py)."""
    from meddistill.bench.ray_grid import run_grid_ray

    return run_grid_ray(
        grid,
        args.runs_dir,
        db,
        address=args.ray or None,
        num_cpus=args.ray_cpus,
        cpus_per_cell=args.ray_cpus_per_cell,
        gpus_per_cell=args.ray_gpus_per_cell,
        max_retries=args.ray_retries,
        threads=args.threads,
        log=print,
        **where,
    )


def cmd_table(args: argparse.Namespace) -> int:
    from meddistill.bench.db import ResultsDB
    from meddistill.bench.run import DB_FILE
    from meddistill.bench.tables import make_table
    from meddistill.utils import atomic_path

    options = {
        k: getattr(args, k)
        for k in ("grid", "metric", "arch", "methods", "archs", "ours", "theirs", "cost")
    }
    options.update(datasets=args.dataset, ipcs=args.ipc)
    with ResultsDB(args.db or Path(args.runs_dir) / DB_FILE, create=False) as db:  # read-only
        text = make_table(db, args.kind, **options).render(args.format)
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from meddistill.bench.access import probe_folder
    from meddistill.errors import ArtifactError
    from meddistill.report.html import build_report

    folder = Path(args.path)
    err = probe_folder(folder) if folder.is_dir() else None
    if err is not None:  # before building: the page and its figures are written into DIR
        raise ArtifactError(
            f"cannot write the report into {folder}: {(err.strerror or str(err)).lower()}; "
            "report.html and its figures go next to the results, so copy the folder to a "
            "writable disk and run `meddistill report` on the copy"
        )
    print(f"wrote {build_report(args.path, figures=not args.no_figures, grid=args.grid)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from meddistill.app.evaluate import run_export

    print(f"wrote {run_export(args.synthetic, args.out)}")
    return 0


def _format_rows(rows: list[dict[str, Any]]) -> str:
    from meddistill.app.record import results_table

    return results_table(rows)


COMMANDS = {
    "info": cmd_info,
    "buffer": cmd_buffer,
    "baseline": cmd_baseline,
    "evaluate": cmd_evaluate,
    "distill": cmd_distill,
    "tune": cmd_tune,
    "export": cmd_export,
    "coreset": cmd_coreset,
    "bench": cmd_bench,
    "table": cmd_table,
    "report": cmd_report,
    "config": cmd_config,
    "audit": cmd_audit,
}


def _method_of(argv: Sequence[str]) -> str | None:
    """The --method in argv, so that `distill --method dm --help` lists dm's options."""
    for i, arg in enumerate(argv):
        if arg == "--method" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--method="):
            return arg.split("=", 1)[1]
    return None


# The commands one job may spread over torchrun's ranks (README: "One job on several processes").
DISTRIBUTED_COMMANDS = ("buffer", "distill", "evaluate")


def _rank_prefix(exc: Exception) -> str:
    """'rank R: ' for an error of one rank of a torchrun job (RankLost names its own)."""
    from meddistill import distributed

    if distributed.world_size() == 1 or isinstance(exc, RankLost):
        return ""
    return f"rank {distributed.rank()}: "


def _run_command(args: argparse.Namespace) -> int:
    """The command, in this process or as one rank of a torchrun job (then rank 0 prints and
    writes; the other ranks compute their share quietly)."""
    from meddistill import distributed

    if not distributed.launched():
        return COMMANDS[args.command](args)
    if args.command not in DISTRIBUTED_COMMANDS:
        raise ConfigError(
            f"`meddistill {args.command}` runs in one process; torchrun runs "
            f"{', '.join(DISTRIBUTED_COMMANDS)} (start this command without torchrun)"
        )
    distributed.init_from_environment(getattr(args, "device", None))
    try:
        code = _run_on_this_rank(args)
        # leave together: a rank that tears its gloo group down while a peer still talks to it
        # can abort at exit ("terminate called without an active exception")
        distributed.barrier()
        return code
    finally:
        distributed.shutdown()


def _run_on_this_rank(args: argparse.Namespace) -> int:
    """Rank 0 runs the command as one process would; the others quietly compute their share."""
    from meddistill import distributed

    if distributed.is_main():
        return COMMANDS[args.command](args)
    args.no_progress = True
    quiet = io.StringIO()  # notes and results are rank 0's to print; errors still show
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        return COMMANDS[args.command](args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser(_method_of(sys.argv[1:] if argv is None else argv))
    # argparse stops filling a nargs="*" positional at the first flag, so in
    # `distill a=1 --ipc 2 b=3` the `b=3` comes back unparsed: put it back with the overrides
    # (in order, so later ones still win) and refuse anything else.
    args, extra = parser.parse_known_args(argv)
    if extra:
        stray = [a for a in extra if a.startswith("-") or "=" not in a]
        if stray or not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
        args.overrides = [*args.overrides, *extra]
    keep_freed_memory()  # no page-fault storm from per-step tensors (see memory.py)
    if getattr(args, "no_progress", None) is False and not sys.stderr.isatty():
        args.no_progress = True  # bars in a redirected log are carriage returns and escapes
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(max(1, args.threads))
    try:
        return _run_command(args)
    except MeddistillError as exc:
        print(f"meddistill {args.command}: error: {_rank_prefix(exc)}{exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a full disk, a read-only folder, a file where a folder must be
        print(f"meddistill {args.command}: error: {describe_oserror(exc)}", file=sys.stderr)
        return 4
    except KeyboardInterrupt:
        print(
            f"meddistill {args.command}: interrupted; finished work is kept and a re-run "
            "of the same command resumes",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
