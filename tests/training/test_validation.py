"""training/validation.py: early stopping (which metric, when it stops, the weights it keeps)
and the bounded validation after each epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridrec import TrainConfig
from hybridrec.data import RecSysDataset
from hybridrec.evaluation import evaluate_pointwise
from hybridrec.models import build_model
from hybridrec.training import validation
from hybridrec.training.history import EpochStats
from tests.helpers import full_ranking, planted, planted_labelled, train

# ---------------------------------------------------------------- early stopping


def test_early_stopping_keeps_the_best_epoch_weights():
    train_frame, val_frame = planted(seed=0)
    result = train(
        train_frame,
        val_frame,
        epochs=40,
        batch_size=32,
        learning_rate=0.1,  # large: validation quality peaks early, then wobbles
        weight_decay=0.0,
        early_stop="ndcg@10",
        patience=2,
    )
    history = result.history
    values = [e.metric("ndcg@10") for e in history.epochs]
    assert history.stopped_early
    assert len(history.epochs) < 40
    best = max(values)
    assert history.best_epoch == history.epochs[values.index(best)].epoch  # first argmax
    assert history.best.epoch == history.best_epoch
    assert history.best_epoch == history.last.epoch - 2  # patience 2: stopped two epochs later
    assert values[-1] < best  # the last epoch is worse, so keeping the best is observable
    # the model holds the best epoch's weights, not the last epoch's
    assert full_ranking(result)["ndcg@10"] == history.best.ranking["ndcg@10"]
    assert result.summary()["best_epoch"] == history.best_epoch
    assert result.summary()["val_ndcg@10"] == best


def test_early_stopping_on_loss_minimises():
    train_frame, val_frame = planted_labelled(seed=0)
    result = train(
        train_frame,
        val_frame,
        epochs=30,
        batch_size=16,
        learning_rate=0.05,
        weight_decay=0.0,
        early_stop="loss",
        patience=2,
    )
    history = result.history
    losses = [e.val_loss for e in history.epochs]
    assert history.stopped_early
    assert history.best_epoch == history.epochs[losses.index(min(losses))].epoch
    assert losses[history.best_epoch - 1] < losses[0]  # a maximiser would have kept epoch 1
    assert losses[-1] > min(losses)
    model = result.recommender.model
    assert evaluate_pointwise(model, result.val_data)["loss"] == pytest.approx(
        history.best.val_loss, rel=1e-6
    )


def test_early_stop_cut_off_joins_the_validation_ks():
    cfg = TrainConfig(early_stop="HR@5", ks=(10, 20))
    assert cfg.early_stop == "hr@5"
    assert sorted(cfg.ks) == [5, 10, 20]
    train_frame, val_frame = planted()
    result = train(train_frame, val_frame, early_stop="hr@5", ks=(10,), epochs=2)
    assert {"hr@5", "hr@10", "ndcg@5", "ndcg@10"} <= set(result.history.last.ranking)


def test_early_stop_without_validation_data_is_an_error():
    train_frame, _ = planted()
    with pytest.raises(ValueError, match="--early-stop ndcg@10"):
        train(train_frame, None, early_stop="ndcg@10", epochs=3)


def test_early_stop_on_loss_with_positives_only_validation_is_an_error():
    train_frame, val_frame = planted()  # positives-only validation has no loss
    with pytest.raises(ValueError, match="--early-stop loss"):
        train(train_frame, val_frame, early_stop="loss", epochs=3)


def test_auto_early_stop_picks_a_metric_that_fits_the_validation_data():
    """auto: NDCG@first-k for positives-only validation, loss for 0/1 labels, off without."""
    from hybridrec.training import resolve_early_stop

    positives = RecSysDataset(torch.tensor([1]), torch.tensor([2]), torch.tensor([1.0]))
    labelled = RecSysDataset(torch.tensor([1, 1]), torch.tensor([2, 3]), torch.tensor([1.0, 0.0]))
    auto = TrainConfig(ks=(20, 5))
    assert resolve_early_stop(auto, positives) == "ndcg@20"
    assert resolve_early_stop(auto, labelled) == "loss"
    assert resolve_early_stop(auto, None) is None
    assert resolve_early_stop(TrainConfig(early_stop="none"), positives) is None
    assert resolve_early_stop(TrainConfig(early_stop="mrr"), labelled) == "mrr"


# ---------------------------------------------------------------- bounded validation


def test_validation_samples_users_and_items_when_the_catalogue_is_large(monkeypatch, caplog):
    rng = np.random.default_rng(0)
    users = torch.from_numpy(rng.integers(1, 60, 600))
    items = torch.from_numpy(rng.integers(1, 200, 600))
    data = RecSysDataset(users, items, torch.ones(600))
    val = RecSysDataset(
        torch.arange(1, 60), torch.from_numpy(rng.integers(1, 200, 59)), torch.ones(59)
    )
    net = build_model("mf", num_users=60, num_items=200, embedding_dim=4)
    config = TrainConfig(epochs=1)
    monkeypatch.setattr(validation, "VAL_PAIRS", 200 * 20)  # 20 users' worth
    monkeypatch.setattr(validation, "VAL_MIN_FULL_USERS", 10)
    full = validation.Validator(net, data, val, config)
    assert len(torch.unique(full.positives[0])) == 20 and full.candidates is None
    monkeypatch.setattr(validation, "VAL_MIN_FULL_USERS", 50)
    monkeypatch.setattr(validation, "VAL_SAMPLED_USERS", 15)
    monkeypatch.setattr(validation, "VAL_SAMPLED_ITEMS", 30)
    sampled = validation.Validator(net, data, val, config)
    assert len(torch.unique(sampled.positives[0])) == 15
    assert len(sampled.candidates[0]) == 15 * 30
    stats = EpochStats(1, 0.0, 0.0, 0.0, 0.0)
    sampled(stats)
    assert 0.0 <= stats.ranking["hr@10"] <= 1.0 and stats.ranking["negatives"] > 20
