"""Time and peak memory of one trajectory-matching iteration: 'unroll' vs 'adjoint' gradients.

One MTT iteration = plan the minibatches and DSA draws, unroll `syn_steps` SGD steps of a
ConvNet-3 student on the synthetic images, take the normalised parameter loss
||w_N - theta_target||^2 / ||theta_target - theta_start||^2 against a random target, and get its
gradient w.r.t. the images and the step size (`meddistill.matching.student.student_gradients`).
'unroll' keeps the autograd graph of all steps; 'adjoint' recomputes one step at a time.

Every configuration (mode, syn_steps, batch_syn) runs in a FRESH subprocess of this script, so
peak memory is not polluted by earlier configurations. Peak memory is the increase above the
state right before the first iteration (model, images and targets already built):
CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats; CPU: the peak resident set
size (VmHWM, reset through /proc/self/clear_refs; getrusage ru_maxrss where that is missing).
Both modes of a pair see the same seeds, so their gradients of the first iteration are compared.

Also printed: this device's convolution limit at the iteration's shapes (conv2d forward + input
and weight grads of the three ConvNet-3 convs at batch_syn, in GFLOP/s) next to the achieved
GFLOP/s of each iteration under a stated FLOP model (`INNER_MULTIPLE`); and with `--reference`,
the same iteration written as the public MTT code does it (reference_mtt.py), timed in its own
worker, with meddistill / reference time ratios and its gradient checked against 'unroll'.

Usage: python benchmarks/matching.py [--device cpu] [--threads 2] [--reference] [--json out.json]
"""

from __future__ import annotations

import argparse
import errno
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from _common import (
    add_common_options,
    conv_limit,
    environment,
    int_list,
    markdown_table,
    network_forward_flops,
    now,
    print_provenance,
    settings_of,
    setup,
    sync,
    write_json,
)
from reference_mtt import ConvNet3, ReparamModule, mtt_iteration
from safetensors.torch import load_file, save_file

from meddistill.augment import DSA
from meddistill.matching.losses import normalized_param_loss
from meddistill.matching.student import StudentProblem, plan_steps, student_gradients
from meddistill.memory import proc_status_kb, reset_peak_rss
from meddistill.models import ModelSpec, build_model, count_params, flatten_params
from meddistill.utils import derive_seed, make_generator

MODES = ("unroll", "adjoint", "reference")
MEMORY_TARGET = 1 / 5  # adjoint peak <= 1/5 of unroll at the target number of steps
TIME_TARGET = 1.5  # adjoint time <= 1.5 x unroll
OOM_PHRASES = ("out of memory", "can't allocate memory", "cannot allocate memory")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_options(p)
    p.add_argument("--width", type=int, default=128, help="ConvNet-3 width")
    p.add_argument("--steps", type=int_list, default=[20, 40, 80], help="syn_steps values")
    p.add_argument("--batches", type=int_list, default=[10, 100], help="batch_syn values")
    p.add_argument("--modes", default="unroll,adjoint", help="gradient modes to measure")
    p.add_argument(
        "--reference",
        action="store_true",
        help="also time the plain-PyTorch MTT iteration (reference_mtt.py) at every configuration",
    )
    p.add_argument(
        "--conv-repeats", type=int, default=5, help="timed repeats of each conv-limit measurement"
    )
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--ipc", type=int, default=10, help="synthetic images per class")
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--syn-lr", type=float, default=0.01, help="student step size alpha")
    p.add_argument("--no-dsa", action="store_true", help="unroll without DSA")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    p.add_argument("--iters", type=int, default=3, help="timed iterations (median reported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--target-steps", type=int, default=80, help="syn_steps at which the memory target applies"
    )
    p.add_argument(
        "--timeout", type=float, default=0, help="seconds per configuration (0: no limit)"
    )
    p.add_argument(
        "--max-mem-mb",
        type=float,
        default=None,
        help="CPU only: address-space budget per worker above its start (default: 75%% of the "
        "memory available now), so a too-large configuration fails alone instead of pushing "
        "the machine out of memory",
    )
    # Internal: one configuration in this process (used by the parent through subprocesses).
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--result-out", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--grad-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.width, args.steps, args.batches, args.warmup, args.iters = 8, [2, 4], [10], 1, 2
        args.ipc, args.target_steps, args.conv_repeats = 2, 4, 2
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.reference and "reference" not in args.modes:
        args.modes.append("reference")
    bad = [m for m in args.modes if m not in MODES]
    if bad:
        p.error(f"--modes: unknown mode(s) {bad}; choose from {', '.join(MODES)}")
    return args


# ---------------------------------------------------------------------------------------------
# Worker: one configuration
# ---------------------------------------------------------------------------------------------


def _limit_address_space(budget_mb: float) -> None:
    """Cap this worker's address space at its current size + budget (allocations then fail)."""
    size_kb = proc_status_kb("VmSize")
    if size_kb is None or budget_mb <= 0:
        return
    limit = int(size_kb * 1024 + budget_mb * 2**20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))


class MemoryProbe:
    """Peak memory above the moment `start` was called, in MB."""

    def __init__(self, device: torch.device):
        self.device = device
        self.method = ""

    def start(self) -> None:
        gc.collect()
        sync(self.device)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            self.method = "cuda max_memory_allocated"
        elif reset_peak_rss():
            self.base = proc_status_kb("VmRSS") * 1024
            self.method = "VmHWM after clear_refs"
        else:
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.method = "ru_maxrss"

    def peak_mb(self) -> float:
        sync(self.device)
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method.startswith("VmHWM"):
            peak = proc_status_kb("VmHWM") * 1024
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return max(0, peak - self.base) / 2**20


@dataclass
class Problem:
    """Everything an iteration needs, built once per worker (same seeds in every mode)."""

    model: torch.nn.Module
    dsa: DSA | None
    images: torch.Tensor
    labels: torch.Tensor
    theta_start: torch.Tensor
    theta_target: torch.Tensor
    syn_lr: torch.Tensor


# An iteration: plan generator in, (loss, dL/dimages, dL/dalpha) out.
Iteration = Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def build_problem(args: argparse.Namespace, device: torch.device) -> Problem:
    """Model, random images, and a start/target pair a few expert epochs apart."""
    model = build_model(
        ModelSpec(depth=3, width=args.width),
        in_channels=args.channels,
        num_classes=args.classes,
        image_size=args.image_size,
        seed=args.seed,
        device=device,
    )
    gen = make_generator(derive_seed(args.seed, "data"))
    shape = (args.classes * args.ipc, args.channels, args.image_size, args.image_size)
    images = torch.randn(shape, generator=gen).to(device)
    labels = torch.arange(args.classes).repeat_interleave(args.ipc).to(device)
    theta_start = flatten_params(model).to(device)
    # A target the size of a few expert epochs away: 1% of the parameters' RMS per element.
    scale = 0.01 * float(theta_start.pow(2).mean().sqrt())
    theta_target = theta_start + scale * torch.randn(theta_start.shape, generator=gen).to(device)
    dsa = None if args.no_dsa else DSA(spatial_dims=2)
    syn_lr = torch.tensor(args.syn_lr, device=device)
    return Problem(model, dsa, images, labels, theta_start, theta_target, syn_lr)


def engine_iteration(pb: Problem, mode: str, steps: int, batch: int) -> Iteration:
    """meddistill's iteration: plan steps and DSA draws, student_gradients in `mode`."""
    problem = StudentProblem(pb.model, pb.dsa)
    num, device = pb.images.shape[0], pb.images.device

    def select(states: list[torch.Tensor]) -> list[int]:
        return [len(states) - 1]

    def loss_of(states: dict[int, torch.Tensor]) -> torch.Tensor:
        (w_end,) = states.values()
        return normalized_param_loss(w_end, pb.theta_start, pb.theta_target)

    def run(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        plans = plan_steps(num, steps, batch, gen, pb.dsa, device)
        loss, grads, _ = student_gradients(
            problem,
            pb.theta_start,
            pb.images,
            pb.labels,
            pb.syn_lr,
            plans,
            select,
            loss_of,
            mode=mode,
        )
        return loss, grads.images, grads.syn_lr

    return run


def reference_iteration(pb: Problem, args: argparse.Namespace, steps: int, batch: int) -> Iteration:
    """The plain-PyTorch reference (reference_mtt.py) at the same start, target and draws."""
    device = pb.images.device
    net = ReparamModule(ConvNet3(args.channels, args.classes, args.width, args.image_size))
    net = net.to(device)
    images = pb.images.detach().clone().requires_grad_(True)
    syn_lr = pb.syn_lr.detach().clone().requires_grad_(True)

    def run(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return mtt_iteration(
            net,
            images,
            pb.labels,
            syn_lr,
            pb.theta_start,
            pb.theta_target,
            steps,
            batch,
            gen,
            pb.dsa,
        )

    return run


def _iteration(
    pb: Problem, args: argparse.Namespace, mode: str, steps: int, batch: int
) -> Iteration:
    if mode == "reference":
        return reference_iteration(pb, args, steps, batch)
    return engine_iteration(pb, mode, steps, batch)


def _save_first(path: Path | None, loss: torch.Tensor, gx: torch.Tensor, glr: torch.Tensor) -> None:
    """Keep the first iteration's gradient: every mode sees the same seeds, so they must agree."""
    if path is None:
        return
    tensors = {"images": gx, "syn_lr": glr.reshape(1), "loss": loss.reshape(1)}
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def run_one(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Measure one (mode, steps, batch) in this process; optionally save the first gradient."""
    mode, steps_text, batch_text = args.one.split(",")
    steps, batch = int(steps_text), int(batch_text)
    pb = build_problem(args, device)
    # Prime one-time lazy state (thread pools, kernels, allocator arenas) with a tiny iteration,
    # so the peak below is the iteration's own memory and not a fixed start-up offset.
    _iteration(pb, args, mode, 1, min(batch, 2))(make_generator(1))
    iteration = _iteration(pb, args, mode, steps, batch)
    if device.type == "cpu" and args.max_mem_mb:
        _limit_address_space(args.max_mem_mb)
    probe = MemoryProbe(device)
    probe.start()
    times = []
    first_loss = None
    for i in range(args.warmup + args.iters):
        t0 = now(device)
        loss, gx, glr = iteration(make_generator(derive_seed(args.seed, "plans", i)))
        elapsed = now(device) - t0
        if i >= args.warmup:
            times.append(elapsed)
        if i == 0:
            first_loss = float(loss)
            _save_first(args.grad_out, loss, gx, glr)
        del loss, gx, glr
    return {
        "mode": mode,
        "steps": steps,
        "batch": batch,
        "status": "ok",
        "s_per_iter": statistics.median(times),
        "times": times,
        "peak_mb": probe.peak_mb(),
        "memory_method": probe.method,
        "params": count_params(pb.model),
        "loss": first_loss,
    }


def worker_main(args: argparse.Namespace) -> int:
    device = setup(args.device, args.threads)
    try:
        result = run_one(args, device)
    except (MemoryError, OSError, RuntimeError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        lowered = text.lower()
        is_oom = isinstance(exc, MemoryError | torch.cuda.OutOfMemoryError) or any(
            phrase in lowered for phrase in OOM_PHRASES
        )
        is_oom = is_oom or (isinstance(exc, OSError) and exc.errno == errno.ENOMEM)
        if not is_oom:
            raise
        mode, steps, batch = args.one.split(",")
        result = {
            "mode": mode,
            "steps": int(steps),
            "batch": int(batch),
            "status": "out of memory"
            + (
                f" (budget {args.max_mem_mb:.0f} MB)"
                if device.type == "cpu" and args.max_mem_mb
                else ""
            ),
            "detail": text[:200],
        }
    if args.result_out is not None:
        args.result_out.write_text(json.dumps(result))
    else:
        print(json.dumps(result))
    return 0


# ---------------------------------------------------------------------------------------------
# Parent: spawn the workers, compare, print
# ---------------------------------------------------------------------------------------------


def _available_mb() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _worker_command(
    args: argparse.Namespace, device: torch.device, mode: str, steps: int, batch: int, tmp: Path
) -> tuple[list[str], Path, Path]:
    tag = f"{mode}_{steps}_{batch}"
    result_path, grad_path = tmp / f"{tag}.json", tmp / f"{tag}.safetensors"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", f"{mode},{steps},{batch}"]
    cmd += ["--device", str(device), "--threads", str(args.threads)]
    cmd += ["--width", str(args.width), "--classes", str(args.classes), "--ipc", str(args.ipc)]
    cmd += ["--image-size", str(args.image_size), "--channels", str(args.channels)]
    cmd += ["--syn-lr", repr(args.syn_lr), "--seed", str(args.seed)]
    cmd += ["--warmup", str(args.warmup), "--iters", str(args.iters)]
    cmd += ["--result-out", str(result_path), "--grad-out", str(grad_path)]
    if args.no_dsa:
        cmd.append("--no-dsa")
    if args.max_mem_mb:
        cmd += ["--max-mem-mb", repr(args.max_mem_mb)]
    return cmd, result_path, grad_path


def run_worker(
    args: argparse.Namespace, device: torch.device, mode: str, steps: int, batch: int, tmp: Path
) -> tuple[dict[str, Any], Path]:
    cmd, result_path, grad_path = _worker_command(args, device, mode, steps, batch, tmp)
    env = dict(os.environ)
    if args.threads > 0:
        env["OMP_NUM_THREADS"] = str(args.threads)
    failed = {"mode": mode, "steps": steps, "batch": batch}
    try:
        proc = subprocess.run(
            cmd,
            env=env,
            capture_output=True,
            text=True,
            timeout=args.timeout if args.timeout > 0 else None,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {**failed, "status": f"timeout ({args.timeout:g} s)"}, grad_path
    if proc.returncode != 0 or not result_path.exists():
        lines = (proc.stderr or "").strip().splitlines()
        return {
            **failed,
            "status": f"failed (exit {proc.returncode})",
            "detail": lines[-1][:200] if lines else "",
        }, grad_path
    return json.loads(result_path.read_text()), grad_path


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| (b = the unroll reference)."""
    a, b = a.double(), b.double()
    denom = float(b.norm())
    return float((a - b).norm()) / denom if denom > 0 else float((a - b).norm())


def compare(
    results: list[dict[str, Any]], grad_files: dict[tuple, Path], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Per (steps, batch): adjoint/unroll ratios, targets, gradient agreement."""
    pairs = []
    for steps in args.steps:
        for batch in args.batches:
            by_mode = {r["mode"]: r for r in results if r["steps"] == steps and r["batch"] == batch}
            u, a = by_mode.get("unroll"), by_mode.get("adjoint")
            if not (u and a and u["status"] == "ok" and a["status"] == "ok"):
                continue
            mem_ratio = a["peak_mb"] / u["peak_mb"] if u["peak_mb"] > 0 else float("nan")
            time_ratio = a["s_per_iter"] / u["s_per_iter"]
            entry = {
                "steps": steps,
                "batch": batch,
                "memory_ratio": mem_ratio,
                "time_ratio": time_ratio,
                "memory_target_met": (mem_ratio <= MEMORY_TARGET)
                if steps == args.target_steps
                else None,
                "time_target_met": time_ratio <= TIME_TARGET,
            }
            gu, ga = (
                grad_files.get(("unroll", steps, batch)),
                grad_files.get(("adjoint", steps, batch)),
            )
            if gu is not None and ga is not None and gu.exists() and ga.exists():
                tu, ta = load_file(str(gu)), load_file(str(ga))
                entry["grad_rel_err_images"] = relative_error(ta["images"], tu["images"])
                entry["grad_rel_err_syn_lr"] = relative_error(ta["syn_lr"], tu["syn_lr"])
                entry["loss_rel_err"] = relative_error(ta["loss"], tu["loss"])
            pairs.append(entry)
    return pairs


# Passes of (forward + backward) through the student per syn_step, i.e. multiples of the inner
# work 3 x F (F = one network forward, conv + linear): 'unroll' and the reference do the inner
# pass and an outer backward through all steps counted as 2x the inner work; 'adjoint' does a
# graph-free inner pass, then per step a rebuilt forward+backward (1x) and the double backward
# for the Hessian-vector product (2x).
INNER_MULTIPLE = {"unroll": 3.0, "reference": 3.0, "adjoint": 4.0}


def iteration_gflop(args: argparse.Namespace, mode: str, steps: int, batch: int) -> float:
    """Modelled FLOPs of one iteration (see INNER_MULTIPLE), in GFLOP."""
    n = min(batch, args.classes * args.ipc)
    forward = network_forward_flops(n, args.channels, args.width, args.image_size, args.classes)
    return INNER_MULTIPLE[mode] * steps * 3 * forward / 1e9


def measure_conv_limits(args: argparse.Namespace, device: torch.device) -> dict[int, dict]:
    """The conv limit at each batch_syn (its conv shapes), in this (parent) process."""
    limits = {}
    for batch in args.batches:
        n = min(batch, args.classes * args.ipc)
        limits[batch] = conv_limit(
            device, n, args.channels, args.width, args.image_size, repeats=args.conv_repeats
        )
        print(
            f"  conv limit batch {n:3d}: {limits[batch]['gflops_per_s']:.1f} GFLOP/s "
            f"({1e3 * limits[batch]['s']:.2f} ms for {limits[batch]['gflop']:.3f} GFLOP)",
            flush=True,
        )
    return limits


def add_flop_rates(
    results: list[dict[str, Any]], limits: dict[int, dict], args: argparse.Namespace
) -> None:
    """Achieved GFLOP/s of each measured iteration and its fraction of the conv limit."""
    for r in results:
        if r["status"] != "ok":
            continue
        gflop = iteration_gflop(args, r["mode"], r["steps"], r["batch"])
        rate = gflop / r["s_per_iter"]
        limit = limits[r["batch"]]["gflops_per_s"]
        r.update(model_gflop=gflop, gflops_per_s=rate, conv_limit_gflops_per_s=limit)
        r["fraction_of_conv_limit"] = rate / limit


def print_conv_report(
    results: list[dict[str, Any]], limits: dict[int, dict], args: argparse.Namespace
) -> None:
    print(
        "\nConvolution limit: conv2d forward + input grad + weight grad (3 x 2*N*Cout*Cin*9*H*W "
        f"FLOPs) at the ConvNet-3 layer shapes, median of {args.conv_repeats} after 2 warm-up:\n"
    )
    rows = [
        [
            lim["batch"],
            "x".join(map(str, layer["shape"])),
            f"{layer['gflop']:.4f}",
            f"{1e3 * layer['s']:.3f}",
            f"{layer['gflop'] / layer['s']:.1f}",
        ]
        for lim in limits.values()
        for layer in lim["layers"]
    ]
    headers = ["batch", "N x Cin x Cout x H", "GFLOP", "ms", "GFLOP/s"]
    print(markdown_table(headers, rows))
    print(
        "\nAchieved GFLOP/s of the iteration (modelled FLOPs: syn_steps x (forward + backward) "
        "x 3 for unroll/reference (inner pass + outer backward ~ 2x inner), x 4 for adjoint "
        "(graph-free pass + per-step recompute + HVP ~ 2x); norm, ReLU, pooling, DSA not "
        "counted) vs the conv limit at the same batch:\n"
    )
    rows = [
        [
            r["mode"],
            r["steps"],
            r["batch"],
            f"{r['model_gflop']:.2f}",
            f"{r['gflops_per_s']:.1f}",
            f"{r['conv_limit_gflops_per_s']:.1f}",
            f"{r['fraction_of_conv_limit']:.2f}",
        ]
        for r in results
        if r["status"] == "ok"
    ]
    headers = ["mode", "syn_steps", "batch_syn", "model GFLOP", "achieved GFLOP/s"]
    print(markdown_table(headers + ["conv limit GFLOP/s", "achieved / limit"], rows))


def compare_reference(
    results: list[dict[str, Any]], grad_files: dict[tuple, Path], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Per (steps, batch): engine time / reference time, and reference-vs-unroll gradients."""
    out = []
    for steps in args.steps:
        for batch in args.batches:
            by_mode = {r["mode"]: r for r in results if r["steps"] == steps and r["batch"] == batch}
            ref = by_mode.get("reference")
            if not ref or ref["status"] != "ok":
                continue
            entry: dict[str, Any] = {
                "steps": steps,
                "batch": batch,
                "reference_s": ref["s_per_iter"],
            }
            for mode in ("unroll", "adjoint"):
                r = by_mode.get(mode)
                if r and r["status"] == "ok":
                    entry[f"{mode}_over_reference"] = r["s_per_iter"] / ref["s_per_iter"]
            gu, gr = (
                grad_files.get(("unroll", steps, batch)),
                grad_files.get(("reference", steps, batch)),
            )
            if gu is not None and gr is not None and gu.exists() and gr.exists():
                tu, tr = load_file(str(gu)), load_file(str(gr))
                entry["grad_rel_err_images"] = relative_error(tr["images"], tu["images"])
                entry["grad_rel_err_syn_lr"] = relative_error(tr["syn_lr"], tu["syn_lr"])
            out.append(entry)
    return out


def print_reference_report(ref_pairs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    if not ref_pairs:
        return
    dsa_note = "no DSA in either" if args.no_dsa else "same per-step DSA draws as the engine"
    print(
        "\nReference: plain-PyTorch MTT iteration (benchmarks/reference_mtt.py, ReparamModule, "
        f"create_graph through all steps, {dsa_note}); meddistill time / reference time, and "
        "||g_reference - g_unroll|| / ||g_unroll||:\n"
    )

    def fmt(entry: dict[str, Any], key: str, spec: str) -> str:
        return format(entry[key], spec) if key in entry else "-"

    rows = [
        [
            e["steps"],
            e["batch"],
            f"{e['reference_s']:.3f}",
            fmt(e, "unroll_over_reference", ".2f"),
            fmt(e, "adjoint_over_reference", ".2f"),
            fmt(e, "grad_rel_err_images", ".1e"),
            fmt(e, "grad_rel_err_syn_lr", ".1e"),
        ]
        for e in ref_pairs
    ]
    headers = ["syn_steps", "batch_syn", "reference s / iteration", "unroll / reference"]
    headers += ["adjoint / reference", "grad rel. err (images)", "grad rel. err (alpha)"]
    print(markdown_table(headers, rows))


def _yes_no(flag: bool | None) -> str:
    return "-" if flag is None else ("yes" if flag else "NO")


def print_report(
    results: list[dict[str, Any]],
    pairs: list[dict[str, Any]],
    args: argparse.Namespace,
    env: dict[str, Any],
) -> None:
    params = next((r["params"] for r in results if r.get("params")), None)
    method = next((r["memory_method"] for r in results if r.get("memory_method")), "")
    dsa = "no DSA" if args.no_dsa else "DSA per step"
    print(
        f"\nOne MTT iteration, ConvNet-3 width {args.width}"
        + (f" ({params:,} parameters)" if params else "")
        + f", {args.classes * args.ipc} synthetic {args.channels}x{args.image_size}x"
        f"{args.image_size} images ({args.ipc} per class), {dsa}; median of {args.iters} "
        f"iterations after {args.warmup} warm-up; peak memory above the state before the first "
        f"iteration" + (f" ({method})" if method else "") + ":\n"
    )
    rows = []
    for r in results:
        ok = r["status"] == "ok"
        rows.append(
            [
                r["mode"],
                r["steps"],
                r["batch"],
                f"{r['s_per_iter']:.3f}" if ok else r["status"],
                f"{r['peak_mb']:.0f}" if ok else "-",
            ]
        )
    print(markdown_table(["mode", "syn_steps", "batch_syn", "s / iteration", "peak MB"], rows))
    if not pairs:
        print("\nNo (steps, batch) pair has both modes measured: no comparison.")
        return
    print(
        f"\nadjoint / unroll (targets: memory <= {MEMORY_TARGET:.2f} at {args.target_steps} "
        f"steps, time <= {TIME_TARGET:g}); gradient agreement on the first iteration "
        "(||g_adjoint - g_unroll|| / ||g_unroll||):\n"
    )
    rows = [
        [
            p["steps"],
            p["batch"],
            f"{p['memory_ratio']:.3f}",
            _yes_no(p["memory_target_met"]),
            f"{p['time_ratio']:.2f}",
            _yes_no(p["time_target_met"]),
            f"{p['grad_rel_err_images']:.1e}" if "grad_rel_err_images" in p else "-",
            f"{p['grad_rel_err_syn_lr']:.1e}" if "grad_rel_err_syn_lr" in p else "-",
        ]
        for p in pairs
    ]
    headers = ["syn_steps", "batch_syn", "memory ratio", "memory target", "time ratio"]
    headers += ["time target", "grad rel. err (images)", "grad rel. err (alpha)"]
    print(markdown_table(headers, rows))
    mem = [p["memory_target_met"] for p in pairs if p["memory_target_met"] is not None]
    times = [p["time_target_met"] for p in pairs]
    print(
        f"\nMemory target at {args.target_steps} steps: "
        + ("not measured" if not mem else ("met" if all(mem) else "NOT met"))
        + f"; time target: {'met' if all(times) else 'NOT met'} "
        f"({sum(times)}/{len(times)} pairs)."
    )


def run_grid(
    args: argparse.Namespace, device: torch.device, tmp: Path
) -> tuple[list[dict[str, Any]], dict[tuple, Path]]:
    """Every (steps, batch, mode) in its own worker; results and first-gradient files."""
    results: list[dict[str, Any]] = []
    grad_files: dict[tuple, Path] = {}
    for steps in args.steps:
        for batch in args.batches:
            for mode in args.modes:
                print(f"  {mode:9s} steps {steps:3d} batch {batch:3d}: ", end="", flush=True)
                result, grad_path = run_worker(args, device, mode, steps, batch, tmp)
                results.append(result)
                grad_files[(mode, steps, batch)] = grad_path
                shown = (
                    f"{result['s_per_iter']:.3f} s/iter, {result['peak_mb']:.0f} MB"
                    if result["status"] == "ok"
                    else f"{result['status']} {result.get('detail', '')}"
                )
                print(shown, flush=True)
    return results, grad_files


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one is not None:
        return worker_main(args)
    device = setup(args.device, args.threads)
    if device.type == "cpu" and args.max_mem_mb is None:
        available = _available_mb()
        args.max_mem_mb = round(0.75 * available) if available else 0
    env = environment(device)
    title = " vs ".join(args.modes)
    print(f"# Matching iteration: {title} ({env['device_name']}, torch {env['torch']})")
    limits = measure_conv_limits(args, device)
    with tempfile.TemporaryDirectory(prefix="meddistill-bench-") as tmp_dir:
        results, grad_files = run_grid(args, device, Path(tmp_dir))
        pairs = compare(results, grad_files, args)
        ref_pairs = compare_reference(results, grad_files, args)
    add_flop_rates(results, limits, args)
    print_report(results, pairs, args, env)
    print_conv_report(results, limits, args)
    print_reference_report(ref_pairs, args)
    print_provenance(env, args.quick)
    settings = settings_of(args, skip=("one", "result_out", "grad_out"))
    write_json(
        args.json,
        {
            "benchmark": "matching",
            "environment": env,
            "settings": settings,
            "targets": {
                "memory_ratio_max": MEMORY_TARGET,
                "memory_target_steps": args.target_steps,
                "time_ratio_max": TIME_TARGET,
            },
            "configurations": results,
            "comparisons": pairs,
            "conv_limits": list(limits.values()),
            "flop_model_inner_multiple": INNER_MULTIPLE,
            "reference_comparisons": ref_pairs,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
