"""training/loop.py: fit() trains, is seeded, stops on divergence, reports its history."""

from __future__ import annotations

import math

import pytest
import torch

from hybridrec import TrainConfig
from hybridrec.data import RecSysDataset
from hybridrec.errors import TrainingDivergedError
from hybridrec.models import build_model
from hybridrec.training import EpochStats, History, fit


def test_fit_seed_controls_shuffling():
    """Same initial weights: only ``config.seed`` (the batch order) differs between runs."""
    gen = torch.Generator().manual_seed(0)
    users = torch.randint(1, 9, (96,), generator=gen)
    items = torch.randint(1, 6, (96,), generator=gen)
    data = RecSysDataset(users, items, ((users * items) % 3 == 0).float())

    def losses(seed):
        torch.manual_seed(0)
        model = build_model(
            "hybrid", num_users=9, num_items=6, embedding_dim=4, mlp_layer_sizes=(4,)
        )
        config = TrainConfig(epochs=2, batch_size=8, learning_rate=1e-2, seed=seed, device="cpu")
        return [e.train_loss for e in fit(model, data, None, config, show_progress=False).epochs]

    assert losses(1) == losses(1)
    assert losses(1) != losses(2)


class NanModel(torch.nn.Module):
    """A model whose logits are NaN: divergence without relying on float overflow."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))

    def forward(self, user_idx, item_idx):
        return self.weight * torch.full(user_idx.shape, float("nan"))


def test_nan_loss_raises_in_fit():
    data = RecSysDataset(torch.arange(10), torch.arange(10), (torch.arange(10) % 2).float())
    config = TrainConfig(epochs=3, batch_size=4, learning_rate=0.1, device="cpu")
    with pytest.raises(TrainingDivergedError, match=r"became nan in epoch 1.*Lower the learning"):
        fit(NanModel(), data, None, config, show_progress=False)


def test_fit_history_fields_and_callback():
    torch.manual_seed(0)
    n = 64
    users = torch.randint(1, 9, (n,))
    items = torch.randint(1, 6, (n,))
    target = ((users + items) % 2).float()
    train = RecSysDataset(users, items, target)
    val = RecSysDataset(users[:20], items[:20], target[:20])
    model = build_model("hybrid", num_users=9, num_items=6, embedding_dim=4, mlp_layer_sizes=(4,))
    seen = []
    config = TrainConfig(epochs=3, batch_size=16, learning_rate=1e-2, device="cpu")
    history = fit(
        model,
        train,
        val,
        config,
        show_progress=False,
        on_epoch_end=lambda stats, hist: seen.append((stats.epoch, len(hist.epochs))),
    )
    assert isinstance(history, History)
    assert seen == [(1, 1), (2, 2), (3, 3)]
    assert [e.epoch for e in history.epochs] == [1, 2, 3]
    assert history.last is history.epochs[-1]
    for e in history.epochs:
        assert isinstance(e, EpochStats)
        assert math.isfinite(e.train_loss) and e.train_loss > 0
        assert 0.0 <= e.train_accuracy <= 1.0
        assert e.samples_per_second > 0 and e.seconds > 0
        assert math.isfinite(e.val_loss)
        assert 0.0 <= e.val_accuracy <= 1.0
        assert 0.0 <= e.val_auc <= 1.0
    rows = history.to_list()
    assert rows[0]["epoch"] == 1
    assert set(rows[0]) == {
        "epoch",
        "train_loss",
        "train_accuracy",
        "samples_per_second",
        "seconds",
        "val_loss",
        "val_accuracy",
        "val_auc",
        "ranking",
    }
    assert not model.training  # fit leaves the model in eval mode


def test_fit_without_validation_leaves_val_fields_empty():
    data = RecSysDataset(torch.tensor([1, 2]), torch.tensor([1, 2]), torch.tensor([1.0, 0.0]))
    model = build_model("hybrid", num_users=3, num_items=3, embedding_dim=2, mlp_layer_sizes=(2,))
    config = TrainConfig(epochs=1, batch_size=2, device="cpu")
    history = fit(model, data, None, config, show_progress=False)
    assert history.last.val_loss is None
    assert history.last.val_auc is None


def test_fit_rejects_empty_training_data():
    data = RecSysDataset(torch.zeros(0), torch.zeros(0), torch.zeros(0))
    model = build_model("hybrid", num_users=2, num_items=2)
    with pytest.raises(ValueError, match="no rows"):
        fit(model, data, None, TrainConfig(epochs=1, device="cpu"), show_progress=False)


def test_subnormals_are_flushed_while_training_only():
    """fit flushes subnormal floats (slow on CPUs) and turns the process-wide switch back
    off, so other code (hypothesis' float strategies, numpy users) sees IEEE floats."""
    users = torch.tensor([1, 2, 3, 1])
    data = RecSysDataset(users, torch.tensor([1, 2, 3, 2]), torch.tensor([1.0, 0, 1, 0]))
    seen = []

    def during(stats, history):
        seen.append(float(torch.tensor(1e-40) * 1.0))

    model = build_model("hybrid", num_users=4, num_items=4, embedding_dim=4, mlp_layer_sizes=(4,))
    fit(model, data, None, TrainConfig(epochs=1, device="cpu"), show_progress=False,
        on_epoch_end=during)  # fmt: skip
    assert seen == [0.0]
    assert float(torch.tensor(1e-40) * 1.0) > 0.0
