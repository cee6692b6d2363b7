"""The audit's shadow pipelines (LiRA): the set's own recipe, its distill run folder's
config.yaml with audit.shadow_overrides, run on a shadow's half of the data through the very
functions `meddistill distill` uses (the expert buffer, the method's distillation), then one
network trained on the shadow's set by the audit's evaluation protocol, as the audited set's
networks are. Nothing here trains anything itself.

Shadow k draws its own seeds (its experts', its distillation's, its network's) from the
audit's seed, so shadows differ as independent runs of the pipeline would. Its work folder
(RUN/shadows/shadow_<k>/) keeps the shadow's set; the experts and the checkpoint are removed
once the set exists (they are large and of no further use), and a killed shadow resumes from
them as a distill run does.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from meddistill.app.config import DistillJob
from meddistill.app.distill import DistillPlan, check_before_work, fit_plan_to_data, resolve_distill
from meddistill.config import apply_overrides, from_dict, load_yaml, to_dict
from meddistill.costs import stage_total
from meddistill.data.dataset import MedicalDataset
from meddistill.errors import ConfigError, MeddistillError
from meddistill.experts.generate import generate_buffer
from meddistill.experts.store import read_meta
from meddistill.matching.loop import CHECKPOINT, DistillRun
from meddistill.privacy.audit import AuditNetworks
from meddistill.privacy.membership import trained_networks
from meddistill.privacy.shadows import ShadowPipeline
from meddistill.training.evaluate import resolve_lr, spec_for
from meddistill.utils import derive_seed, stable_hash

_BUFFER_KEYS = ("num_experts", "epochs", "model", "train", "dtype", "seed")


def _experts_of(buffer: str, overrides: list[str]) -> dict[str, Any]:
    """The `experts` section of a run that was given a buffer: how buffer.json says its
    experts were made ({} when it cannot be read but the overrides set the experts)."""
    try:
        meta = read_meta(Path(buffer))
        return {k: meta[k] for k in _BUFFER_KEYS}
    except (MeddistillError, OSError, KeyError):
        if any(o.startswith("experts.") for o in overrides):
            return {}
        raise ConfigError(
            f"the shadows must make experts as the set's were, but {buffer}/buffer.json cannot "
            "be read; restore that buffer, or describe the experts with audit.shadow_overrides"
            "=[experts.num_experts=N, experts.epochs=E]"
        ) from None


def shadow_job(run: Path, overrides: list[str], device: str) -> DistillJob:
    """The distill job every shadow runs: config.yaml of the set's run folder `run` (the
    config every stage of that run used), its given buffer replaced by how the buffer was
    made, with `overrides` on top; validated here, before any work."""
    path = run / "config.yaml"
    data = load_yaml(path) if path.is_file() else {}
    if not (isinstance(data.get("method"), str) and isinstance(data.get("match"), dict)):
        raise ConfigError(
            f"audit.shadows needs the recipe of the set: the config.yaml of the distill run "
            f"folder that made it, and {path} is not one; audit the set inside its run folder, "
            "or set audit.shadows=0"
        )
    if data.get("buffer") and "experts" not in data:
        experts = _experts_of(str(data["buffer"]), overrides)
        data["experts"] = experts
        if experts:
            data["expert_optimizer"] = experts["train"].get("optimizer")
    data = apply_overrides({**data, "buffer": None}, overrides)
    data.update(out=None, final_eval=False, device=device, keep_checkpoint=False)
    try:
        job = from_dict(DistillJob, data)
        resolve_distill(job)
    except ConfigError as exc:
        raise ConfigError(
            f"the shadows' config ({path} with audit.shadow_overrides): {exc}"
        ) from None
    return job


def _plan(job: DistillJob, half: MedicalDataset, k: int, seed: int) -> DistillPlan:
    """Shadow k's plan: the job with seeds of its own, fitted to its half."""
    experts = dataclasses.replace(job.experts, seed=derive_seed(seed, "shadow-experts", k))
    own = dataclasses.replace(job, seed=derive_seed(seed, "shadow-distill", k), experts=experts)
    return fit_plan_to_data(resolve_distill(own), half)


def _tidy(folder: Path) -> None:
    """Drop what a finished shadow no longer needs: its experts and its checkpoint."""
    shutil.rmtree(folder / "buffer", ignore_errors=True)
    for checkpoint in folder.rglob(CHECKPOINT):
        checkpoint.unlink()


def distill_pipeline(
    job: DistillJob, nets: AuditNetworks, *, device: Any, work: Path, progress: bool = False
) -> ShadowPipeline:
    """The audit's shadow pipeline: buffer + distillation of `job` on the half, then one
    network of the audit's protocol (nets.attack, nets.model) on the shadow's set."""
    spec = spec_for(nets.attack.models[0], nets.model)

    def train(half: MedicalDataset, k: int) -> list[nn.Module]:
        plan, folder = _plan(job, half, k, nets.seed), work / f"shadow_{k}"
        store = None
        if plan.experts is not None:
            store = generate_buffer(half, plan.experts, folder / "buffer", device=device,
                                    progress=progress)  # fmt: skip
        run = DistillRun(seed=plan.job.seed, out_dir=folder, dsa_strategy=plan.dsa_strategy,
                         method=plan.method.name, progress=progress)  # fmt: skip
        syn = plan.method.distill(half, plan.config, experts=store, model=job.model,
                                  device=device, run=run)  # fmt: skip
        syn.save(folder / "synthetic")
        _tidy(folder)
        lr, _ = resolve_lr(nets.attack.lr, syn.syn_lr)
        return trained_networks(
            half, spec, syn.images, nets.attack.training_labels(syn.labels),
            nets.attack.train_config(lr), count=1, seed=derive_seed(nets.seed, "shadow-net", k),
            device=device,
        )  # fmt: skip

    def check(half: MedicalDataset) -> None:
        check_before_work(_plan(job, half, 0, nets.seed), half)

    recipe = {k: v for k, v in to_dict(job).items() if k not in ("device", "out")}
    identity = stable_hash({"job": recipe, "attack": nets.attack.protocol(),
                            "model": to_dict(nets.model), "seed": nets.seed}, 16)  # fmt: skip
    return ShadowPipeline(train=train, check=check, identity=identity)


def cost_line(job: DistillJob, shadows: int, run: Path) -> str:
    """What LiRA will cost, said before it starts: per shadow one buffer, one distillation
    and one network, with what the audited run's own buffer and distillation took."""
    method = resolve_distill(job).method
    parts = []
    if method.experts is not None:
        parts.append(f"one expert buffer ({job.experts.num_experts} experts x "
                     f"{job.experts.epochs} epochs)")  # fmt: skip
    iterations = job.match.get("iterations")
    parts.append(f"one {method.name} distillation"
                 + (f" ({iterations} iterations)" if iterations is not None else ""))  # fmt: skip
    parts.append("one network")
    took = [f"{stage} {t:.0f} s" for stage in ("buffer", "distill")
            if (t := stage_total(run, stage)) is not None]  # fmt: skip
    seen = f"; the audited run's took {' + '.join(took)}" if took else ""
    return (
        f"audit: LiRA runs {shadows} shadow pipelines on halves of the data, each "
        f"{' + '.join(parts)}{seen} (audit.shadow_overrides make shadows cheaper)"
    )
