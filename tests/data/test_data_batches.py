from __future__ import annotations

import pytest
import torch

from meddistill.data.batches import iter_batches
from meddistill.data.dataset import Split
from meddistill.errors import ConfigError
from meddistill.utils import make_generator


def _split(n: int = 10) -> Split:
    return Split(torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1), torch.arange(n))


def test_unshuffled_batches_cover_in_order() -> None:
    got = list(iter_batches(_split(), 4))
    assert [b[1].tolist() for b in got] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert all(torch.equal(x.flatten(), y.float()) for x, y in got)


def test_shuffled_is_a_seeded_permutation() -> None:
    a = torch.cat([y for _, y in iter_batches(_split(), 3, generator=make_generator(5))])
    b = torch.cat([y for _, y in iter_batches(_split(), 3, generator=make_generator(5))])
    c = torch.cat([y for _, y in iter_batches(_split(), 3, generator=make_generator(6))])
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert sorted(a.tolist()) == list(range(10))
    assert torch.equal(a, torch.randperm(10, generator=make_generator(5)))


def test_drop_last_and_tuple_input() -> None:
    s = _split()
    got = list(iter_batches((s.images, s.labels), 4, drop_last=True))
    assert [len(y) for _, y in got] == [4, 4]
    with pytest.raises(ConfigError):
        list(iter_batches(s, 0))
