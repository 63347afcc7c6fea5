"""Implicit feedback: negative sampling, positives-only training (BCE and BPR), ranking
validation, early stopping, the model contract, popularity, training curves and the catalogue."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import hybridrec
from hybridrec.data import RecSysDataset
from hybridrec.evaluation import evaluate_full, evaluate_pointwise
from hybridrec.models import MODELS, Popularity, PopularityConfig
from hybridrec.plots import plot_history
from hybridrec.training import EpochStats, History, fit
from tests.helpers import (
    config,
    full_ranking,
    planted,
    planted_labelled,
    train,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- contract over every model


@pytest.fixture(scope="module")
def trained_models(tmp_path_factory):
    """Every registered model trained for one epoch on positives-only data and saved."""
    root = tmp_path_factory.mktemp("models")
    train_frame, val_frame = planted(seed=3)
    results = {}
    for name in MODELS:
        results[name] = train(train_frame, val_frame, model=name, out=root / name)
    return results


@pytest.mark.parametrize(
    "name",
    list(MODELS),
)
def test_saved_model_reloads_with_identical_scores(trained_models, name):
    result = trained_models[name]
    loaded = hybridrec.load(result.out)
    assert loaded.model_name == name
    users = result.train_data.user_idx
    raw_users = result.recommender.users.inverse_transform(users.numpy())
    raw_items = result.recommender.items.inverse_transform(result.train_data.item_idx.numpy())
    before = result.recommender.score(raw_users, raw_items)
    after = loaded.score(raw_users, raw_items)
    assert np.array_equal(before, after)


@pytest.mark.parametrize("name", list(MODELS))
def test_reloaded_model_gives_identical_logits(trained_models, name):
    result = trained_models[name]
    loaded = hybridrec.load(result.out)
    assert type(loaded.model) is MODELS[name]
    users = torch.arange(1, result.recommender.users.num_embeddings)
    with torch.no_grad():
        assert torch.equal(result.recommender.model.score_all(users), loaded.model.score_all(users))
    state, reloaded = result.recommender.model.state_dict(), loaded.model.state_dict()
    assert state.keys() == reloaded.keys()
    assert all(torch.equal(state[k], reloaded[k]) for k in state)
    assert loaded.items == result.recommender.items and loaded.users == result.recommender.users


@pytest.mark.parametrize("name", list(MODELS))
def test_score_all_equals_forward_on_every_pair(trained_models, name):
    model = trained_models[name].recommender.model
    num_users, num_items = model.config.num_users, model.config.num_items
    users = torch.arange(num_users)
    with torch.no_grad():
        table = model.score_all(users)
        grid_u = users.repeat_interleave(num_items)
        grid_i = torch.arange(num_items).repeat(num_users)
        pairs = model(grid_u, grid_i).reshape(num_users, num_items)
    assert table.shape == (num_users, num_items)
    torch.testing.assert_close(table, pairs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_validation_ranking_matches_the_saved_model(trained_models, name):
    result = trained_models[name]
    loaded = hybridrec.load(result.out)
    recomputed = full_ranking(result, model=loaded.model)
    assert recomputed["hr@10"] == result.history.best.ranking["hr@10"]
    assert recomputed["ndcg@10"] == result.history.best.ranking["ndcg@10"]


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


# ---------------------------------------------------------------- training curves


def test_training_curves_png_next_to_the_model(tmp_path):
    train_frame, val_frame = planted()
    out = tmp_path / "model"
    result = train(train_frame, val_frame, epochs=3, early_stop="hr@10", patience=1, out=out)
    png = out / "training_curves.png"
    assert png.is_file()
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert (out / "config.json").is_file()
    again = plot_history(result.history, tmp_path / "again.png")
    assert again == tmp_path / "again.png" and again.read_bytes()[:8] == PNG_MAGIC


def test_plot_history_without_epochs_returns_none(tmp_path):
    assert plot_history(History(), tmp_path / "empty.png") is None
    only_validation = History(epochs=[EpochStats(0, math.nan, math.nan, 0.0, 0.0)])
    assert plot_history(only_validation, tmp_path / "zero.png") is None
    assert not (tmp_path / "empty.png").exists() and not (tmp_path / "zero.png").exists()


def test_popularity_saves_without_a_curve(tmp_path):
    train_frame, val_frame = planted()
    train(train_frame, val_frame, model="popularity", out=tmp_path / "pop")
    assert (tmp_path / "pop" / "config.json").is_file()
    assert not (tmp_path / "pop" / "training_curves.png").exists()


# ---------------------------------------------------------------- item catalogue


def test_catalogue_items_get_an_index_and_are_ranked(tmp_path):
    train_frame, val_frame = planted(seed=4)
    catalogue = tmp_path / "items.csv"
    pd.DataFrame({"itemId": [*range(1, 41), 500, 501], "title": ["t"] * 42}).to_csv(
        catalogue, index=False
    )
    plain = train(train_frame, val_frame)
    result = train(train_frame, val_frame, items=catalogue)
    encoder = result.recommender.items
    assert plain.recommender.items.transform([500, 501]).tolist() == [0, 0]
    new = encoder.transform([500, 501])
    assert bool((new > 0).all()) and len(set(new.tolist())) == 2
    assert result.recommender.model.config.num_items == plain.recommender.model.config.num_items + 2
    user = int(train_frame["userId"].iloc[0])
    scores = result.recommender.score([user, user, user], [500, 501, 12345])
    assert bool(np.isfinite(scores).all()) and bool(((scores > 0) & (scores < 1)).all())
    assert scores[0] != scores[2]  # a catalogue item is not scored as the unknown item
    # a held-out catalogue item is ranked, not counted as unknown
    metrics = evaluate_full(
        result.recommender.model,
        result.train_data.user_idx,
        result.train_data.item_idx,
        torch.tensor([1]),
        torch.from_numpy(new[:1]),
        num_items=result.recommender.model.config.num_items,
    )
    assert metrics["unknown_test_items"] == 0.0 and metrics["users"] == 1.0


def test_catalogue_without_the_item_column_is_a_data_error():
    train_frame, _ = planted()
    with pytest.raises(hybridrec.DataError, match="item catalogue has no column 'itemId'"):
        train(train_frame, items=pd.DataFrame({"movieId": [1, 2]}))


# ---------------------------------------------------------------- summary


def test_summary_with_positives_only_validation():
    train_frame, val_frame = planted()
    result = train(train_frame, val_frame, epochs=2, ks=(5, 10))
    summary = result.summary()
    for key in ("val_hr@10", "val_ndcg@10", "val_hr@5", "val_mrr", "val_ranking_auc"):
        assert isinstance(summary[key], float), key
        assert 0.0 <= summary[key] <= 1.0, key
    assert summary["val_hr@10"] == result.history.best.ranking["hr@10"]
    assert summary["val_ranking_auc"] == result.history.best.ranking["auc"]
    assert summary["val_auc"] is None and summary["val_loss"] is None
    assert summary["val_ranking_users"] == 40.0
    assert "val_users" not in summary and "val_auc@10" not in summary


def test_summary_with_labelled_validation_keeps_the_pointwise_auc():
    train_frame, val_frame = planted_labelled()
    result = train(train_frame, val_frame, epochs=2)
    summary = result.summary()
    pointwise = evaluate_pointwise(result.recommender.model, result.val_data)
    assert summary["val_auc"] == pytest.approx(pointwise["auc"], rel=1e-9)
    assert summary["val_loss"] == pytest.approx(pointwise["loss"], rel=1e-6)
    positives = result.val_data.target == 1
    ranking = evaluate_full(
        result.recommender.model,
        result.train_data.user_idx,
        result.train_data.item_idx,
        result.val_data.user_idx[positives],
        result.val_data.item_idx[positives],
        num_items=result.recommender.model.config.num_items,
    )
    assert summary["val_ranking_auc"] == ranking["auc"]
    assert summary["val_hr@10"] == ranking["hr@10"]
    assert summary["val_auc"] != summary["val_ranking_auc"]
