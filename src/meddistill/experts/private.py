"""DP-SGD experts (BufferConfig.dp): the calibration of a whole buffer, the data it refuses,
and what buffer.json records of the guarantee.

Accounting: the N experts of a buffer train on the same private images, so their guarantees
compose. The noise is calibrated once, by Opacus, for the steps of all N experts together (N x
E x steps per epoch of the same subsampled Gaussian mechanism in one accountant): the N
trajectories together, hence everything computed from them alone, are (epsilon, delta)-DP.
"""

from __future__ import annotations

from typing import Any

from meddistill.config import to_dict
from meddistill.data.dataset import MedicalDataset
from meddistill.experts.config import BufferConfig
from meddistill.training.dp import DPPlan, check_private_data, plan_dp

WHERE = "buffer.dp"  # the option errors name (experts.dp in a distill job)


def dp_identity(dataset: MedicalDataset, cfg: BufferConfig) -> dict[str, Any]:
    """The DP part of a buffer's identity: the settings, the resolved delta and the number of
    experts the guarantee covers (so a DP buffer is never extended past its budget)."""
    assert cfg.dp is not None
    delta = cfg.dp.delta_for(len(dataset.train), WHERE)
    return {**to_dict(cfg.dp), "delta": delta, "experts": int(cfg.num_experts)}


def buffer_dp_plan(dataset: MedicalDataset, cfg: BufferConfig, where: str = WHERE) -> DPPlan | None:
    """The calibrated DP-SGD of all the buffer's experts together (None without cfg.dp);
    refuses data the guarantee would not cover (check_private_data). `where` names the
    option in errors (experts.dp in a distill job)."""
    if cfg.dp is None:
        return None
    check_private_data(dataset)
    n = len(dataset.train)
    return plan_dp(cfg.dp, n, cfg.train.batch_size, cfg.epochs, cfg.num_experts, where)


def privacy_record(plan: DPPlan | None) -> dict[str, Any] | None:
    """buffer.json's `privacy`: the guarantee of the trajectories, or None (no DP)."""
    if plan is None:
        return None
    return {
        **plan.record(),
        "experts": plan.runs,
        "composition": (
            f"all {plan.runs} expert(s) in one accountant: the noise is calibrated for "
            f"{plan.runs} x {plan.steps} steps of the same subsampled Gaussian mechanism, so "
            "the trajectories of the whole buffer together are (epsilon, delta)-DP"
        ),
        "covers": (
            "the expert trajectories (expert_*.safetensors); not the accuracies and losses "
            "recorded beside them (buffer.json, the expert files' histories), which are "
            "measurements on the train, val and test splits"
        ),
        "augmentation": "DSA per sample, before the per-sample gradients",
    }
