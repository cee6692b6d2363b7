"""A tiny dataset and expert buffer shared by the engine tests (seconds to build)."""

import pytest
import torch
from toydata import shifted_toy

from meddistill.experts.config import BufferConfig, expert_train_config
from meddistill.experts.generate import generate_buffer
from meddistill.models import ModelSpec

TINY_SPEC = ModelSpec(depth=1, width=4)


@pytest.fixture(scope="session")
def toy():
    return shifted_toy()


@pytest.fixture(scope="session")
def toy_buffer(toy, tmp_path_factory):
    train = expert_train_config(6)
    train.batch_size = 16
    cfg = BufferConfig(num_experts=2, epochs=6, model=TINY_SPEC, train=train, seed=0)
    out = tmp_path_factory.mktemp("buffer") / "toy"
    return generate_buffer(toy, cfg, out, device=torch.device("cpu"), progress=False)
