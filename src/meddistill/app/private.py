"""Differentially private distillation: when a synthetic set inherits a DP buffer's guarantee,
and the settings a DP run refuses.

Why the set inherits it: DP-SGD experts make trajectories that are (epsilon, delta)-DP
(experts/private.py). Differential privacy is closed under post-processing: anything computed
from a DP output without looking at the private data again is DP with the same (epsilon,
delta). A trajectory-matching distillation on such a buffer, with `match.init: noise`, is
such a computation: its images start as Gaussian noise drawn without reading the train split
(matching/engine.py), every update compares a student trained on the synthetic images with
snapshots of the DP trajectories, and its labels are class indices or, with
`match.soft_labels: true`, an expert's logits on the (noise) initial images: a DP expert on
data-free inputs, so soft labels are allowed. The step size, the window draws and the DSA
draws come from the run's seed. So the images, labels and step size of the set are
post-processing of the trajectories and public settings (class names, image shape, the image
count N that sets Opacus's sample rate, the explicit normalisation).

Refused, each with one line naming the setting (a DP buffer + a setting that reads private
images = no guarantee, so no run):
  - match.init real or real_correct: the set would start from training images (real_correct
    even picks those an expert classifies correctly);
  - match.eval_every > 0: networks trained on the set during the distillation are scored on
    the validation split, so the run's course could depend on real images outside the
    guarantee (the final evaluation still runs: a reported measurement, not part of the set,
    and meta.json says it read val and test);
  - objective methods (dc, dsa, dm, idm, cafe): they match batches of real training images at
    every iteration; coresets (random, herding, kcenter) ARE training images;
  - a trajectory method that reads real images on its own (MethodEntry.reads_real: haba's
    bases are real training images);
  - `meddistill tune`: it keeps the settings whose sets score best on the validation split.
The final evaluation's numbers (results.json) and the run's logs of it are measurements on
real data, outside the guarantee; the shared artifact is the set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meddistill.errors import ConfigError, MeddistillError
from meddistill.experts.store import read_meta

if TYPE_CHECKING:
    from meddistill.app.distill import DistillPlan

INHERITED = (
    "post-processing: the images, labels and step size are computed from the DP expert "
    "trajectories, Gaussian noise and public settings only; no training image was read"
)
FINAL_EVAL = (
    "after the set was saved, networks trained on it were scored on the val and test splits "
    "(results.json): measurements on real data, not part of the set"
)


def private_source(plan: DistillPlan) -> tuple[str, dict[str, Any] | None] | None:
    """(what makes the run private, the given buffer's `privacy` record or None when the run
    makes its DP experts), or None for a run without a DP buffer."""
    job = plan.job
    if job.buffer is not None:
        try:
            privacy = read_meta(job.buffer).get("privacy")
        except (MeddistillError, OSError):  # the run's own check of the buffer says what is wrong
            return None
        if privacy is None:
            return None
        return f"the DP buffer {job.buffer} (epsilon {privacy.get('epsilon')})", privacy
    if job.experts.dp is not None:
        return f"experts.dp (epsilon {job.experts.dp.epsilon})", None
    return None


def check_private_distill(plan: DistillPlan) -> bool:
    """Refuse, in one line naming the setting, a DP run whose set would not inherit the
    guarantee (see the module docstring); True when the run is a DP distillation."""
    source = private_source(plan)
    if source is None:
        return False
    what, _ = source
    method, cfg = plan.method, plan.config
    tail = f"so the set would not inherit the differential privacy of {what}"
    if method.kind == "objective":
        raise ConfigError(
            f"method {method.name} matches batches of real training images at every iteration, "
            f"{tail}; use a trajectory method (e.g. mtt, hoptm) with match.init=noise"
        )
    if method.kind == "coreset" or not method.synthesises:
        raise ConfigError(f"method {method.name} selects real training images, {tail}")
    if method.reads_real:
        raise ConfigError(f"method {method.name} {method.reads_real}, {tail}")
    init = getattr(cfg, "init", "noise")
    if init != "noise":
        how = "an expert classifies correctly " if init == "real_correct" else ""
        raise ConfigError(
            f"option match.init={init} starts the set from real training images {how}"
            f"(read from the private train split), {tail}; use match.init=noise"
        )
    if getattr(cfg, "parameterization", "pixel") == "latent":
        raise ConfigError(
            "option match.parameterization=latent decodes the set through an autoencoder "
            f"trained on the private train split, {tail}; use pixel or dct"
        )
    if getattr(cfg, "eval_every", 0):
        raise ConfigError(
            f"option match.eval_every={cfg.eval_every} scores networks on the validation split "
            f"during the distillation, {tail}; set match.eval_every=0 (the final evaluation "
            "still runs, recorded as a measurement)"
        )
    return True


def refuse_private_tune(plan: DistillPlan) -> None:
    """`tune` keeps the settings that score best on the validation split: not on a DP run."""
    source = private_source(plan)
    if source is not None:
        raise ConfigError(
            f"tune chooses settings by their sets' scores on the validation split, so its "
            f"choice would not inherit the differential privacy of {source[0]}; tune on public "
            "data, then distil on the DP buffer with `meddistill distill`"
        )


def set_privacy(buffer: dict[str, Any] | None, buffer_id: str, final_eval: bool) -> dict:
    """meta.json's `privacy` of a set made on a DP buffer (`buffer`: its buffer.json record):
    the buffer's guarantee, inherited, and whether the final evaluation read val and test."""
    record = {k: v for k, v in (buffer or {}).items() if k not in ("covers", "augmentation")}
    return {
        **record,
        "buffer_id": buffer_id,
        "covers": "this synthetic set (images, labels, learned step size)",
        "inherited": INHERITED,
        "final_evaluation": FINAL_EVAL if final_eval else None,
    }
