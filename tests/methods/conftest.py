"""A one-expert buffer on the toy data, shared by the engine-level method tests."""

import pytest
import torch
from toydata import shifted_toy

from meddistill.models import ModelSpec

TINY_SPEC = ModelSpec(depth=1, width=4)


@pytest.fixture(scope="session")
def toy_store(tmp_path_factory):
    """One expert x 4 epochs of a width-4 ConvNet-1 on shifted_toy(n_train=30, n_test=12)."""
    from meddistill.experts.config import BufferConfig, expert_train_config
    from meddistill.experts.generate import generate_buffer

    train = expert_train_config(4)
    train.batch_size = 16
    cfg = BufferConfig(num_experts=1, epochs=4, model=TINY_SPEC, train=train, seed=0)
    out = tmp_path_factory.mktemp("tmbuffer") / "toy"
    data = shifted_toy(n_train=30, n_test=12)
    return generate_buffer(data, cfg, out, device=torch.device("cpu"), progress=False)
