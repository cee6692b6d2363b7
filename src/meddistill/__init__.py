"""meddistill: condense a medical image dataset into a few synthetic images per class.

The public API (see meddistill.api): load_dataset, train_experts, train_autoencoder, distill,
evaluate, audit, plus
SyntheticSet, the method registry (available_methods, get_method) and the dataset type.
"""

__version__ = "0.1.0"

from meddistill.api import (  # noqa: E402
    audit,
    distill,
    evaluate,
    load_dataset,
    train_autoencoder,
    train_experts,
)
from meddistill.data.dataset import MedicalDataset  # noqa: E402
from meddistill.data.synthetic import SyntheticSet  # noqa: E402
from meddistill.experts.store import TrajectoryStore  # noqa: E402
from meddistill.methods.registry import available_methods, get_method  # noqa: E402

__all__ = [
    "MedicalDataset",
    "SyntheticSet",
    "TrajectoryStore",
    "__version__",
    "audit",
    "available_methods",
    "distill",
    "evaluate",
    "get_method",
    "load_dataset",
    "train_autoencoder",
    "train_experts",
]
