"""Train a network on tensors (SGD or GSAM), evaluate sets with K fresh networks, real baselines."""

from meddistill.training.baselines import baseline, full_data, full_train_config, random_subset
from meddistill.training.config import TrainConfig
from meddistill.training.evaluate import (
    ArchReport,
    EvalConfig,
    EvalReport,
    NetResult,
    evaluate_set,
    mean_std,
)
from meddistill.training.gsam import GSAM
from meddistill.training.loop import TrainResult, train_network
from meddistill.training.metrics import accuracy, auc, evaluate_model

__all__ = [
    "GSAM",
    "ArchReport",
    "EvalConfig",
    "EvalReport",
    "NetResult",
    "TrainConfig",
    "TrainResult",
    "accuracy",
    "auc",
    "baseline",
    "evaluate_model",
    "evaluate_set",
    "full_data",
    "full_train_config",
    "mean_std",
    "random_subset",
    "train_network",
]
