"""`meddistill audit`: find the set and the dataset it was made from, audit it, write the run
folder (config.yaml, log.txt, audit.json, pairs PNGs) and return the report."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meddistill.app.config import AuditJob, DistillJob, device_of
from meddistill.app.shadows import cost_line, distill_pipeline, shadow_job
from meddistill.config import load_yaml, to_dict
from meddistill.costs import measure, record_cost
from meddistill.data.synthetic import META, TENSORS, SyntheticSet
from meddistill.errors import ConfigError
from meddistill.privacy.audit import (
    AuditNetworks,
    audit_set,
    check_audit,
    check_shadows,
    save_audit,
)
from meddistill.privacy.report import AuditReport
from meddistill.privacy.shadows import SHADOW_FOLDER
from meddistill.runs import RunDir, environment_info, inside, slug
from meddistill.utils import stable_hash


def set_folder(path: str | Path) -> Path:
    """The set folder SET names: a run folder's synthetic/, else SET itself (a set folder,
    or its synthetic.safetensors)."""
    where = Path(path)
    if (where / "synthetic" / META).is_file() and not (where / TENSORS).is_file():
        return where / "synthetic"
    return where.parent if where.suffix == ".safetensors" else where


def _run_job(path: str | Path) -> dict[str, Any]:
    """The job section of SET's run folder config.yaml ({} when there is none)."""
    folder = set_folder(path)
    for run in dict.fromkeys((folder.parent, Path(path))):
        if (run / "config.yaml").is_file():
            config = load_yaml(run / "config.yaml")
            job = config.get("job") if isinstance(config.get("job"), dict) else config
            return dict(job)
    return {}


def with_set_recipe(data: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The audit's config with what SET's run folder says of how the set was made (its
    config.yaml, read once): its dataset and its network, where the config gives none."""
    job = _run_job(path)
    return with_set_network(with_set_dataset(data, dataset_of(path, job)), job)


def dataset_of(path: str | Path, job: dict[str, Any]) -> dict[str, Any]:
    """The dataset section SET was made with: its run's `job` (config.yaml, the job's own or
    its `job` section), else the set's recorded dataset name; {} when neither says."""
    section = job.get("dataset")
    if isinstance(section, dict) and section.get("name"):
        return dict(section)
    folder = set_folder(path)
    name = SyntheticSet.load(folder).dataset if (folder / META).is_file() else None
    return {"name": name} if name else {}


def with_set_dataset(data: dict[str, Any], found: dict[str, Any]) -> dict[str, Any]:
    """The job's config with the set's dataset section under it, unless the config names a
    dataset itself (then nothing of the set's is mixed in: its root or size would not fit)."""
    given = data.get("dataset") if isinstance(data.get("dataset"), dict) else {}
    if "name" in given or not found:
        return data
    return {**data, "dataset": {**found, **given}}


def with_set_network(data: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """The config with the network the set was made and evaluated with (the run `job`'s
    `model`, and its `eval` epochs and batch size) where the config gives none: the attack
    should target networks like the ones a user of the set trains, not the package default."""
    out = dict(data)
    if "model" not in out and isinstance(job.get("model"), dict):
        out["model"] = dict(job["model"])
    made = job.get("eval") if isinstance(job.get("eval"), dict) else {}
    recipe = {k: made[k] for k in ("epochs", "batch_size") if k in made}
    if recipe:
        out["eval"] = {**recipe, **(out.get("eval") or {})}
    return out


def run_audit(job: AuditJob, runs_root: str | Path, progress: bool = True) -> dict[str, Any]:
    """Audit the job's set; everything is checked before the run folder is made."""
    if job.synthetic is None:
        raise ConfigError("audit needs the synthetic set: meddistill audit SET (a run folder, "
                          "a synthetic set folder or its .safetensors)")  # fmt: skip
    device = device_of(job)
    where = set_folder(job.synthetic)
    syn = SyntheticSet.load(where)
    dataset = job.dataset.load()
    check_audit(syn, dataset, job.audit, where=str(where))
    strategy = job.dataset.strategy()
    used = dataclasses.replace(
        job,
        eval=dataclasses.replace(job.eval, dsa_strategy=strategy),
        full_train=dataclasses.replace(job.full_train, dsa_strategy=strategy),
        device=str(device),
    )
    folder = _run_path(used, dataset.name, runs_root)
    recipe = _recipe(used, where)
    pipeline = None
    if recipe is not None:  # LiRA: the set's recipe run by shadows, in RUN/shadows/
        pipeline = distill_pipeline(recipe, _networks(used), device=device,
                                    work=folder / SHADOW_FOLDER, progress=progress)  # fmt: skip
    check_shadows(dataset, used.audit, used.seed, pipeline)
    with RunDir(folder, {"job": to_dict(used)}) as run:
        run.save_json("env.json", environment_info())
        run.log(f"audit of {where} ({syn.meta.get('method', '?')}, {syn.images.shape[0]} "
                f"images) against {dataset.name}")  # fmt: skip
        say = _teller(run, progress)
        if recipe is not None:  # said whatever the progress setting: it can take hours
            _teller(run, True)(cost_line(recipe, used.audit.shadows, where.parent))
        with measure("audit", device) as cost:
            report = audit_set(syn, dataset, used.audit, _networks(used), device=device,
                               progress=progress, log=say, shadows=pipeline,
                               work=run.path)  # fmt: skip
        record_cost(run.path, cost)
        report.config = {"job": to_dict(used), **report.config}
        path = save_audit(report, syn, dataset, run.path, used.audit.pairs)
        run.metric(stage="audit", light=report.verdict.light, **_headline(report))
        run.log(f"verdict {report.verdict.light}: {report.verdict.paragraph}")
        run.log(f"stage audit in {cost.wall_s:.1f} s ({cost.describe()})")
    return {"report": report, "audit": str(path), "run_dir": str(run.path)}


def _networks(job: AuditJob) -> AuditNetworks:
    return AuditNetworks(attack=job.eval, full_train=job.full_train, model=job.model,
                         subset_lr=job.subset_lr, seed=job.seed)  # fmt: skip


def _recipe(job: AuditJob, where: Path) -> DistillJob | None:
    """The distill job LiRA's shadows run (the set's run folder's config.yaml with
    audit.shadow_overrides), or None without shadows."""
    if not job.audit.shadows:
        return None
    return shadow_job(where.parent, job.audit.shadow_overrides, job.device)


# LiRA's options, added after audit folders existed: left out of the folder's hash while LiRA
# is off, so an audit without shadows keeps its folder.
_LIRA_OPTIONS = ("shadows", "shadow_overrides", "lira_global_variance")


def _run_path(job: AuditJob, dataset: str, runs_root: str | Path) -> Path:
    """job.out, else runs_root/audit/<dataset>-<hash of the job> (the same job: same folder)."""
    if job.out:
        return Path(job.out)
    config = {"job": to_dict(job)}
    if not job.audit.shadows:
        audit = config["job"]["audit"]
        config["job"]["audit"] = {k: v for k, v in audit.items() if k not in _LIRA_OPTIONS}
    name = f"{slug(dataset)}-{stable_hash(config, 8)}"
    return inside(runs_root, Path(runs_root) / "audit" / name, "run folder")


def _teller(run: RunDir, echo: bool) -> Callable[[str], None]:
    """log(line): into log.txt, and on stderr too when `echo` (a user waits for the stages,
    LiRA's shadows above all)."""

    def say(line: str) -> None:
        run.log(line)
        if echo:
            print(line, file=sys.stderr)

    return say


def _headline(report: AuditReport) -> dict[str, Any]:
    """The numbers metrics.jsonl keeps of an audit."""
    att = report.attacks["synthetic"]
    out = {"near_copies_pixel": report.memorisation["pixel"].count,
           "near_copies_features": report.memorisation["features"].count,
           "attack_auc": att.auc, "attack_auc_ci": list(att.auc_ci)}  # fmt: skip
    if "lira" in report.attacks:
        out.update(
            lira_auc=report.attacks["lira"].auc, lira_auc_ci=list(report.attacks["lira"].auc_ci)
        )
    return out
