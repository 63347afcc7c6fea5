"""models/popularity.py (with data/popularity.py's counts): popularity ranks by training
count, learns nothing, and counts positives only."""

from __future__ import annotations

import math

import torch

from hybridrec.data import RecSysDataset
from hybridrec.evaluation import evaluate_full
from hybridrec.models import Popularity, PopularityConfig
from hybridrec.training import fit
from tests.helpers import config, planted_labelled, train


def test_popularity_ranks_by_training_count_and_learns_nothing():
    # items: 1 has 3 positives, 2 has 2 (and a labelled negative), 3 has 1, 4 only negatives
    users = torch.tensor([1, 2, 3, 1, 2, 4, 4, 3, 2])
    items = torch.tensor([1, 1, 1, 2, 2, 2, 3, 4, 4])
    target = torch.tensor([1, 1, 1, 1, 1, 0, 1, 0, 0]).float()
    model = Popularity(PopularityConfig(num_users=5, num_items=5))
    assert list(model.parameters()) == []
    history = fit(model, RecSysDataset(users, items, target), None, config(epochs=5))
    assert [e.epoch for e in history.epochs] == [0]  # no training epochs at all
    assert math.isnan(history.last.train_loss)
    assert model.item_counts.tolist() == [0.0, 3.0, 2.0, 1.0, 0.0]
    scores = model.score_all(torch.tensor([1, 4]))
    assert torch.equal(scores[0], scores[1])  # the same for every user
    order = torch.argsort(scores[0, 1:], descending=True, stable=True) + 1
    assert order.tolist() == [1, 2, 3, 4]
    assert torch.equal(
        model(torch.tensor([3, 3]), torch.tensor([1, 4])), torch.log1p(torch.tensor([3.0, 0.0]))
    )
    # evaluation ranks by count too: user 4 (trained on item 3) finds item 1 first
    metrics = evaluate_full(model, users, items, torch.tensor([4]), torch.tensor([1]), 5, ks=(1,))
    assert metrics["hr@1"] == 1.0


def test_popularity_through_train_counts_positives_only():
    train_frame, val_frame = planted_labelled()
    result = train(train_frame, val_frame.query("target == 1"), model="popularity", epochs=3)
    model = result.recommender.model
    data = result.train_data
    expected = torch.bincount(data.item_idx[data.target == 1], minlength=model.config.num_items)
    assert torch.equal(model.item_counts, expected.float())
    assert result.summary()["best_epoch"] == 0 and result.summary()["epochs"] == 1


def test_popularity_with_labelled_validation():
    train_frame, val_frame = planted_labelled()
    result = train(train_frame, val_frame, model="popularity")
    assert 0.0 <= result.summary()["val_auc"] <= 1.0
