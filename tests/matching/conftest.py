"""A tiny dataset and expert buffer shared by the engine tests (seconds to build)."""

import pytest
import torch

from meddistill.data.dataset import MedicalDataset, Normalization, Split
from meddistill.experts.config import BufferConfig, expert_train_config
from meddistill.experts.generate import generate_buffer
from meddistill.models import ModelSpec

TINY_SPEC = ModelSpec(depth=1, width=4)


def tiny_dataset(seed: int = 0) -> MedicalDataset:
    gen = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        y = torch.arange(n) % 3
        x = torch.randn(n, 1, 8, 8, generator=gen) + y.view(-1, 1, 1, 1).float()
        return Split(x, y)

    return MedicalDataset(
        "toy",
        {"train": split(60), "test": split(30)},
        ["a", "b", "c"],
        Normalization((0.0,), (1.0,)),
        source_id="toy-source",
    )


@pytest.fixture(scope="session")
def toy():
    return tiny_dataset()


@pytest.fixture(scope="session")
def toy_buffer(toy, tmp_path_factory):
    train = expert_train_config(6)
    train.batch_size = 16
    cfg = BufferConfig(num_experts=2, epochs=6, model=TINY_SPEC, train=train, seed=0)
    out = tmp_path_factory.mktemp("buffer") / "toy"
    return generate_buffer(toy, cfg, out, device=torch.device("cpu"), progress=False)
