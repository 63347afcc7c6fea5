"""The cold-user popularity term (features/popularity.py, fit_cold_user_popularity): a user
known only by features gets weight * log(1 + count) added to each item's score, in every
scoring path; users with a trained id row, and training itself, never do."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import hybridrec
from hybridrec.config import TrainConfig
from hybridrec.features.popularity import COLD_USER_POPULARITY
from hybridrec.update.grow import Growth, grow_model

TASTES = ["a", "b", "c"]


def trained(model: str = "hybrid") -> tuple[hybridrec.Recommender, pd.DataFrame]:
    """Users 1-60 interact (item 1 by everyone, so it is by far the most popular); users
    61-66 are in the user feature file only: cold users."""
    rng = np.random.default_rng(0)
    rows = [(u, 1) for u in range(1, 61)]
    for user in range(1, 61):
        rows += [(user, int(i)) for i in rng.choice(np.arange(2, 41), size=6, replace=False)]
    frame = pd.DataFrame(rows, columns=["userId", "itemId"]).drop_duplicates()
    users = pd.DataFrame({"userId": np.arange(1, 67), "taste": [TASTES[u % 3] for u in range(66)]})
    options = {"embedding_dim": 8} | ({"mlp_layer_sizes": (8,)} if model == "hybrid" else {})
    rec = hybridrec.train(
        frame, None, model=model, user_features=users, model_options=options,
        train_config=TrainConfig(epochs=2, batch_size=256, seed=0),
    ).recommender  # fmt: skip
    return rec, frame


@pytest.mark.parametrize("model_name", ["hybrid", "mf"])
def test_cold_users_get_popularity_added_warm_users_and_training_do_not(model_name):
    rec, frame = trained(model_name)
    model = rec.model
    assert rec.config["settings"]["cold_user_popularity"]["weight"] == COLD_USER_POPULARITY
    counts = np.bincount(rec.items.transform(frame.itemId.to_numpy()), minlength=41)
    log_counts = torch.log1p(torch.as_tensor(counts, dtype=torch.float32))
    expected = COLD_USER_POPULARITY * (log_counts - log_counts[1:].mean())  # centred
    expected[0] = 0
    assert torch.allclose(model.cold_user_item_bias, expected)
    cold, warm = rec.users.transform(np.array([61, 62])), rec.users.transform(np.array([1, 2]))
    users = torch.as_tensor(np.concatenate([cold, warm]))
    with torch.no_grad():
        scores = model.score_all(users)
        bias = model.cold_user_item_bias.clone()
        model.cold_user_item_bias.zero_()
        without = model.score_all(users)
        model.cold_user_item_bias.copy_(bias)
        items = torch.arange(41).repeat(2, 1)
        grouped = model.score_groups(users[:2], items)
        pairs = model(users[:2].repeat_interleave(41), items.reshape(-1)).view(2, 41)
        model.train()
        in_training = model.score_all(users)
        model.eval()
    assert torch.allclose(scores[:2] - without[:2], bias.expand(2, -1), atol=1e-5)
    assert torch.equal(scores[2:], without[2:])  # users with an id row: nothing added
    assert torch.allclose(grouped, scores[:2], atol=1e-5)
    assert torch.allclose(pairs, scores[:2], atol=1e-5)
    assert torch.allclose(in_training, without, atol=1e-5)
    assert rec.recommend(61, k=1).item_ids.tolist() == [1]  # the popular item first


@pytest.mark.parametrize("model_name", ["hybrid", "mf"])
def test_a_new_user_by_features_alone_is_scored_as_a_cold_user(model_name):
    rec, _ = trained(model_name)
    taste = TASTES[60 % 3]  # user 61's (row j of the file is user j + 1)
    new = rec.recommend_for_features({"taste": taste}, k=5)
    same = rec.recommend(61, k=5)  # a cold user with the same features
    assert new.source == "features" and new.item_ids[0] == 1
    assert new.item_ids.tolist() == same.item_ids.tolist()
    assert np.allclose(new.scores, same.scores, atol=1e-6)
    with torch.no_grad():  # cold users of two tastes: the features still count
        logits = rec.model.score_all(torch.as_tensor(rec.users.transform(np.array([61, 62]))))
    assert not torch.allclose(logits[0], logits[1], atol=1e-4)


def test_features_and_the_whole_catalogue_as_items_leave_nothing_to_draw():
    """Given every item as the new user's items, the fit has no negatives to draw: an empty
    answer without seen items, the given items with them (was a RuntimeError, a 500 in the
    service)."""
    rec, _ = trained("hybrid")
    everything = rec.items.inverse_transform(np.arange(1, rec.items.num_embeddings))
    out = rec.recommend_for_features({"taste": "a"}, everything, k=3)
    assert out.source == "features+items" and len(out.item_ids) == 0
    kept = rec.recommend_for_features({"taste": "a"}, everything, k=3, exclude_seen=False)
    assert len(kept.item_ids) == 3 and np.isfinite(kept.scores).all()


def test_the_term_grows_with_the_catalogue_and_old_artifacts_load(tmp_path):
    rec, _ = trained()
    grown = grow_model(rec.model, Growth(67, 41, 70, 45))
    assert grown.cold_user_item_bias.shape == (45,)
    assert torch.equal(grown.cold_user_item_bias[:41], rec.model.cold_user_item_bias)
    assert not grown.cold_user_item_bias[41:].any()
    state = {k: v for k, v in rec.model.state_dict().items() if k != "cold_user_item_bias"}
    old = type(rec.model)(rec.model.config)
    old.load_state_dict(state)  # saved before the term existed: it loads at zero
    assert not old.cold_user_item_bias.any()
    rec.save(tmp_path / "m")
    again = hybridrec.Recommender.load(tmp_path / "m")
    assert torch.equal(again.model.cold_user_item_bias, rec.model.cold_user_item_bias)


def test_typical_user_samples_leave_cold_users_out():
    """Two-stage's item prior and the feature-popularity slope average over known users:
    the cold users' own term must not leak into them."""
    from hybridrec.models.featured import rows_with_ids
    from hybridrec.retrieval import item_prior

    rec, _ = trained()
    known = rows_with_ids(rec.model.user_embedding)
    cold = set(rec.users.transform(np.arange(61, 67)).tolist())
    assert len(known) == 60 and not cold & set(known.tolist())
    with torch.no_grad():
        prior = item_prior(rec.model, num_users=66)
        rec.model.cold_user_item_bias.zero_()
        assert torch.allclose(item_prior(rec.model, num_users=66), prior)


def test_new_items_join_a_model_with_user_and_item_features():
    rng = np.random.default_rng(1)
    rows = [
        (u, int(i)) for u in range(1, 41) for i in rng.choice(np.arange(1, 31), 5, replace=False)
    ]
    frame = pd.DataFrame(rows, columns=["userId", "itemId"]).drop_duplicates()
    users = pd.DataFrame({"userId": np.arange(1, 45), "taste": [TASTES[u % 3] for u in range(44)]})
    # item 31 is in the catalogue without interactions: a zero count
    items = pd.DataFrame({"itemId": np.arange(1, 32), "kind": [TASTES[i % 3] for i in range(31)]})
    rec = hybridrec.train(
        frame, None, user_features=users, item_features=items,
        model_options={"embedding_dim": 8, "mlp_layer_sizes": (8,)},
        train_config=TrainConfig(epochs=1, batch_size=256, seed=0),
    ).recommender  # fmt: skip
    grown = rec.with_items(pd.DataFrame({"itemId": [500, 501], "kind": ["a", TASTES[30 % 3]]}))
    bias = grown.model.cold_user_item_bias
    assert bias.shape == (grown.items.num_embeddings,)
    assert torch.equal(bias[:-2], rec.model.cold_user_item_bias)
    # an added item has no interactions either: the term a zero count gets, not the
    # average item's 0 (which put added items far ahead for users known by features)
    (no_rows,) = rec.items.transform([31])
    assert bias[no_rows] < 0  # (the settings keep the mean to 6 decimals)
    torch.testing.assert_close(bias[-2:], bias[no_rows].expand(2), rtol=0, atol=1e-4)
    cold_user = grown.score([42, 42], [31, 501])  # 501 has item 31's features
    assert cold_user[0] == pytest.approx(cold_user[1], rel=1e-5)
    assert len(grown.recommend(42, k=33).item_ids) == 33  # a cold user ranks the new items too
