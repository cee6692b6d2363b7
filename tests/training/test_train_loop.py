"""train_network: learning, determinism, batching, soft labels, schedules, NaN detection."""

from __future__ import annotations

import pytest
import torch
from tinynets import TinyNet, tiny_data

from meddistill.errors import ConfigError, NumericalError
from meddistill.training import TrainConfig, train_network


def cfg(**kw) -> TrainConfig:
    base = dict(epochs=8, lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=8, dsa=False)
    base.update(kw)
    return TrainConfig(**base)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_train_loss_decreases_and_test_metrics_reported() -> None:
    images, labels = tiny_data(n_per_class=16)
    test_images, test_labels = tiny_data(n_per_class=8, seed=1)
    model = TinyNet(seed=1)
    result = train_network(
        model,
        images,
        labels,
        cfg(epochs=12),
        generator=gen(),
        test_split=(test_images, test_labels),
    )
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 12
    assert losses[-1] < 0.5 * losses[0]
    assert result.train_loss == losses[-1]
    assert result.test_acc is not None and result.test_acc >= 0.9
    assert 0.9 <= result.test_auc <= 1.0


def test_same_seed_bit_identical_and_other_seed_differs() -> None:
    images, labels = tiny_data()
    runs = []
    for seed in (0, 0, 1):
        model = TinyNet(seed=5)
        train_network(model, images, labels, cfg(epochs=3), generator=gen(seed))
        runs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


class Recorder(TinyNet):
    def __init__(self) -> None:
        super().__init__(seed=0)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return super().forward(x)


def test_each_epoch_visits_every_sample_once_in_batches() -> None:
    images, labels = tiny_data(n_per_class=5)  # 10 samples, batch 4 -> 4, 4, 2
    model = Recorder()
    train_network(model, images, labels, cfg(epochs=2, batch_size=4), generator=gen())
    assert [b.shape[0] for b in model.seen] == [4, 4, 2, 4, 4, 2]
    for epoch in range(2):
        batch = torch.cat(model.seen[3 * epoch : 3 * epoch + 3])
        keys = sorted(tuple(x.flatten()[:3].tolist()) for x in batch)
        assert keys == sorted(tuple(x.flatten()[:3].tolist()) for x in images)
    first = torch.cat(model.seen[:3])
    second = torch.cat(model.seen[3:])
    assert not torch.equal(first, second)  # a new permutation each epoch


def test_soft_one_hot_labels_train_like_hard_labels() -> None:
    images, labels = tiny_data()
    hard, soft = TinyNet(seed=3), TinyNet(seed=3)
    r1 = train_network(hard, images, labels, cfg(epochs=3), generator=gen())
    one_hot = torch.nn.functional.one_hot(labels, 2).float()
    r2 = train_network(soft, images, one_hot, cfg(epochs=3), generator=gen())
    for a, b in zip(hard.parameters(), soft.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert r1.train_loss == pytest.approx(r2.train_loss, rel=1e-4)


def test_uniform_soft_labels_drive_predictions_to_uniform() -> None:
    images, labels = tiny_data()
    uniform = torch.full((labels.shape[0], 2), 0.5)
    model = TinyNet(seed=3)
    result = train_network(model, images, uniform, cfg(epochs=20, lr=0.1), generator=gen())
    # the minimum of the soft cross-entropy against (0.5, 0.5) is log 2
    assert result.train_loss == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=0.02)


def test_nan_loss_raises_numerical_error() -> None:
    images, labels = tiny_data()
    with pytest.raises(NumericalError, match="lower the learning rate"):
        train_network(TinyNet(seed=0), images, labels, cfg(epochs=3, lr=1e30), generator=gen())


def test_on_epoch_callback_and_step_half_schedule() -> None:
    images, labels = tiny_data()
    seen: list[int] = []
    result = train_network(
        TinyNet(seed=0),
        images,
        labels,
        cfg(epochs=4, lr=0.1, lr_schedule="step_half"),
        generator=gen(),
        on_epoch=lambda e, m: seen.append(e),
        progress="tiny",  # a labelled tqdm bar must not disturb anything
    )
    assert seen == [1, 2, 3, 4]
    assert [h["lr"] for h in result.history] == pytest.approx([0.1, 0.1, 0.01, 0.01])
    flat = train_network(
        TinyNet(seed=0), images, labels, cfg(epochs=2, lr_schedule="none"), generator=gen()
    )
    assert [h["lr"] for h in flat.history] == [0.05, 0.05]


def test_eval_every_records_test_metrics() -> None:
    images, labels = tiny_data()
    result = train_network(
        TinyNet(seed=0),
        images,
        labels,
        cfg(epochs=4),
        generator=gen(),
        test_split=(images, labels),
        eval_every=2,
    )
    assert ["test_acc" in h for h in result.history] == [False, True, False, True]
    assert result.test_acc == result.history[-1]["test_acc"]


def test_gsam_training_learns_and_is_deterministic() -> None:
    images, labels = tiny_data()
    params = []
    for _ in range(2):
        model = TinyNet(seed=4)
        result = train_network(
            model, images, labels, cfg(epochs=6, optimizer="gsam", momentum=0.0), generator=gen()
        )
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(params[0], params[1])
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    sgd = TinyNet(seed=4)
    train_network(sgd, images, labels, cfg(epochs=6, momentum=0.0), generator=gen())
    assert not torch.equal(params[0], torch.cat([p.detach().flatten() for p in sgd.parameters()]))


def test_bad_inputs_and_configs_are_config_errors() -> None:
    images, labels = tiny_data()
    with pytest.raises(ConfigError, match="labels"):
        train_network(TinyNet(), images, labels.float(), cfg(), generator=gen())
    with pytest.raises(ConfigError, match="images but"):
        train_network(TinyNet(), images, labels[:-1], cfg(), generator=gen())
    with pytest.raises(ConfigError, match="train.lr"):
        cfg(lr=-0.01)
    with pytest.raises(ConfigError, match="lr_schedule"):
        cfg(lr_schedule="cosine")
    with pytest.raises(ConfigError, match="optimizer"):
        cfg(optimizer="adam")


def test_dsa_is_seeded_per_batch_and_changes_training() -> None:
    images, labels = tiny_data()
    runs = []
    for dsa, seed in ((True, 0), (True, 0), (True, 1), (False, 0)):
        model = TinyNet(seed=5)
        train_network(model, images, labels, cfg(epochs=2, dsa=dsa), generator=gen(seed))
        runs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])
    assert not torch.equal(runs[0], runs[3])
