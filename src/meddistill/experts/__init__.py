"""Expert trajectories: generate them (resumably) and read single snapshots from disk."""

from meddistill.experts.config import BufferConfig, expert_train_config, flat_expert_train_config
from meddistill.experts.generate import buffer_identity, generate_buffer, train_expert
from meddistill.experts.store import TrajectoryStore

__all__ = [
    "BufferConfig",
    "TrajectoryStore",
    "buffer_identity",
    "expert_train_config",
    "flat_expert_train_config",
    "generate_buffer",
    "train_expert",
]
