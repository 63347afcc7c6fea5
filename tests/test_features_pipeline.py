"""Side features end to end: train with feature files, rank cold items from their features."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import hybridrec
from hybridrec.cli import main
from hybridrec.config import DataConfig, TrainConfig
from hybridrec.data.dataset import RecSysDataset
from hybridrec.errors import ConfigError, DataError
from hybridrec.evaluation.cold import evaluate_cold
from hybridrec.prepare import load_data

GENRES = ["drama", "comedy", "horror", "western"]


def planted(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, list[int]]:
    """Users who like one genre each; items of a genre; 4 cold items per genre."""
    rng = np.random.default_rng(seed)
    items = pd.DataFrame({"itemId": np.arange(1, 81), "genre": [GENRES[i % 4] for i in range(80)]})
    cold = list(range(61, 81))
    rows = []
    for user in range(1, 61):
        liked = [i for i in range(1, 81) if GENRES[(i - 1) % 4] == GENRES[user % 4]]
        for item in rng.choice(liked, size=12, replace=False):
            rows.append((user, int(item)))
    frame = pd.DataFrame(rows, columns=["userId", "itemId"])
    return frame, items, cold


def test_cold_items_are_ranked_from_their_features():
    frame, items, cold = planted()
    train = frame[~frame.itemId.isin(cold)]
    test = frame[frame.itemId.isin(cold)]
    result = hybridrec.train(
        train,
        None,
        item_features=items,
        model_options={"embedding_dim": 8, "mlp_layer_sizes": (8,)},
        train_config=TrainConfig(epochs=15, batch_size=256, seed=0),
    )
    rec = result.recommender
    assert rec.items.num_embeddings == 81  # cold items joined the encoder from the features
    positives = load_data(test, DataConfig(), labels=False)
    data, _ = RecSysDataset.from_frame(positives, rec.users, rec.items)
    metrics = evaluate_cold(rec.model, data.user_idx, data.item_idx, ks=[5])
    assert metrics["auc"] > 0.85  # a genre-blind model would be at 0.5
    # the same model by ids alone, the cold items in its catalogue: it cannot tell them apart
    blind = hybridrec.train(
        train, None, items=items[["itemId"]],
        model_options={"embedding_dim": 8, "mlp_layer_sizes": (8,)},
        train_config=TrainConfig(epochs=15, batch_size=256, seed=0),
    ).recommender  # fmt: skip
    data, _ = RecSysDataset.from_frame(positives, blind.users, blind.items)
    blind_auc = evaluate_cold(blind.model, data.user_idx, data.item_idx, ks=[5])["auc"]
    assert blind_auc < 0.7
    # and recommend() ranks a cold item of the user's genre above cold items of others
    top = rec.recommend(4, k=80).item_ids.tolist()  # user 4 likes GENRES[0]
    ranked_cold = [i for i in top if i in cold]
    assert GENRES[(ranked_cold[0] - 1) % 4] == GENRES[0]


def test_models_without_features_refuse_them():
    frame, items, _ = planted()
    with pytest.raises(ConfigError, match="does not use side features"):
        hybridrec.train(frame, None, model="sasrec", item_features=items,
                        train_config=TrainConfig(epochs=1))  # fmt: skip


def test_cli_trains_with_feature_files_and_evaluates_cold(tmp_path, capsys):
    frame, items, cold = planted()
    frame[~frame.itemId.isin(cold)].to_csv(tmp_path / "train.csv", index=False)
    frame[frame.itemId.isin(cold)].to_csv(tmp_path / "test.csv", index=False)
    items.to_csv(tmp_path / "items.csv", index=False)
    code = main(["train", "--train", str(tmp_path / "train.csv"), "--item-features",
                 str(tmp_path / "items.csv"), "--item-feature-types", "genre=categorical",
                 "--out", str(tmp_path / "m"), "--epochs", "3", "--embedding-dim", "8",
                 "--no-progress", "--val", "none"])  # fmt: skip
    assert code == 0
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["settings"]["features"]["items"]["fields"][0]["name"] == "genre"
    capsys.readouterr()
    code = main(["evaluate", "--model", str(tmp_path / "m"), "--test", str(tmp_path / "test.csv"),
                 "--protocol", "cold", "--k", "5", "--json"])  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["protocol"] == "cold" and out["candidates"] == len(cold)
    # the saved model loads with its feature buffers and scores cold items
    rec = hybridrec.Recommender.load(tmp_path / "m")
    assert torch.count_nonzero(rec.model.item_embedding.feature_tokens[1:]) > 0
    assert rec.score([1], [cold[0]]).shape == (1,)
    assert code == 0
    bad = main(["train", "--train", str(tmp_path / "train.csv"), "--item-features",
                str(tmp_path / "items.csv"), "--item-feature-types", "colour=multi",
                "--out", str(tmp_path / "m2"), "--no-progress"])  # fmt: skip
    assert bad == 2
    assert "colour" in capsys.readouterr().err


def test_a_new_user_is_recommended_from_their_features():
    frame, items, _ = planted()
    users = pd.DataFrame(
        {"userId": np.arange(1, 61), "taste": [GENRES[u % 4] for u in range(1, 61)]}
    )
    result = hybridrec.train(
        frame, None, user_features=users,
        model_options={"embedding_dim": 8, "mlp_layer_sizes": (8,)},
        train_config=TrainConfig(epochs=15, batch_size=256, seed=0),
    )  # fmt: skip
    rec = result.recommender
    for genre in GENRES:
        out = rec.recommend_for_features({"taste": genre}, k=10)
        assert out.source == "features"
        share = np.mean([GENRES[(i - 1) % 4] == genre for i in out.item_ids])
        assert share >= 0.8, (genre, out.item_ids)
    both = rec.recommend_for_features({"taste": "horror"}, item_ids=[3, 7], k=5)
    assert both.source == "features+items" and 3 not in both.item_ids
    with pytest.raises(ConfigError, match="unknown user feature"):
        rec.recommend_for_features({"mood": "sad"})
    plain = hybridrec.train(frame, None, train_config=TrainConfig(epochs=1)).recommender
    with pytest.raises(ConfigError, match="without user features"):
        plain.recommend_for_features({"taste": "drama"})


def test_the_service_recommends_for_a_new_user_by_features():
    from fastapi.testclient import TestClient

    from hybridrec.serve import create_app

    frame, items, cold = planted()
    users = pd.DataFrame(
        {"userId": np.arange(1, 61), "taste": [GENRES[u % 4] for u in range(1, 61)],
         "age": np.arange(1, 61) % 50 + 18.0}
    )  # fmt: skip
    rec = hybridrec.train(
        frame[~frame.itemId.isin(cold)], None, user_features=users, item_features=items,
        model_options={"embedding_dim": 8, "mlp_layer_sizes": (8,)},
        train_config=TrainConfig(epochs=10, batch_size=256, seed=0),
    ).recommender  # fmt: skip
    with TestClient(create_app(rec)) as client:
        got = client.post("/recommend", json={"user_features": {"taste": "comedy"}, "k": 5})
        assert got.status_code == 200, got.text
        assert got.json()["source"] == "features"
        both = client.post("/recommend", json={"user_features": {"taste": "comedy"},
                                               "item_ids": [2, 6], "k": 5})  # fmt: skip
        assert both.json()["source"] == "features+items"
        # a numeric feature's projection is fitted too (the fit runs outside inference mode)
        aged = client.post("/recommend", json={"user_features": {"age": 30},
                                               "item_ids": [2, 6], "k": 5})  # fmt: skip
        assert aged.status_code == 200, aged.text
        assert aged.json()["source"] == "features+items"
        # a numeric feature takes a finite number near the training values, or nothing
        for fine in (None, "30", 30.5, ""):
            r = client.post("/recommend", json={"user_features": {"age": fine}, "k": 5})
            assert r.status_code == 200 and len(r.json()["items"]) == 5, fine
        for bad in ("thirty", "NaN", "inf", True, 1e308, 2**70):
            r = client.post("/recommend", json={"user_features": {"age": bad}, "k": 5})
            assert r.status_code == 422 and "age" in r.text, (bad, r.text)
        bad = client.post("/recommend", json={"user_features": {"mood": "x"}})
        assert bad.status_code == 422 and "unknown user feature" in bad.text
        nested = client.post("/recommend", json={"user_features": {"taste": ["a"]}})
        assert nested.status_code == 422
        mixed = client.post("/recommend", json={"user_features": {}, "user_ids": [1]})
        assert mixed.status_code == 422
        # a cold item (features only) is recommended to users like any other
        top = client.get("/recommend/2", params={"k": 80}).json()["items"]
        assert {i["item_id"] for i in top} & set(cold)


def test_new_items_join_a_trained_model_from_their_features(tmp_path):
    frame, items, cold = planted()
    known = items[~items.itemId.isin(cold)]
    rec = hybridrec.train(
        frame[~frame.itemId.isin(cold)], None, item_features=known,
        model_options={"embedding_dim": 8, "mlp_layer_sizes": (8,)},
        train_config=TrainConfig(epochs=15, batch_size=256, seed=0),
    ).recommender  # fmt: skip
    assert rec.items.num_embeddings == 61  # the cold items are unknown to this model
    before = rec.recommend(4, k=10)
    grown = rec.with_items(items[items.itemId.isin(cold)])
    assert grown.items.num_embeddings == 81 and rec.items.num_embeddings == 61
    after = grown.recommend(4, k=10)
    # known items keep their scores; user 4 (likes GENRES[0]) now also gets new ones of it
    assert grown.score([4], [before.item_ids[0]]) == pytest.approx(
        rec.score([4], [before.item_ids[0]])
    )
    new = [i for i in grown.recommend(4, k=40).item_ids if i in cold]
    assert new and GENRES[(new[0] - 1) % 4] == GENRES[0]
    assert after.source == "model"
    grown.save(tmp_path / "grown")  # and it saves and loads like any model
    again = hybridrec.Recommender.load(tmp_path / "grown")
    assert again.score([4], [cold[0]]) == pytest.approx(grown.score([4], [cold[0]]))
    with pytest.raises(ConfigError, match="already known"):
        grown.with_items(items[items.itemId.isin(cold)])
    with pytest.raises(ConfigError, match="not item features"):
        rec.with_items(pd.DataFrame({"itemId": [500], "colour": ["red"]}))


def test_the_service_adds_new_items_from_their_features(monkeypatch):
    from fastapi.testclient import TestClient

    from hybridrec.serve import create_app

    frame, items, cold = planted()
    rec = hybridrec.train(
        frame[~frame.itemId.isin(cold)], None, item_features=items[~items.itemId.isin(cold)],
        model_options={"embedding_dim": 8, "mlp_layer_sizes": (8,)},
        train_config=TrainConfig(epochs=10, batch_size=256, seed=0),
    ).recommender  # fmt: skip
    new = [{"item_id": i, "features": {"genre": GENRES[(i - 1) % 4]}} for i in cold]
    auth = {"Authorization": "Bearer s3cret"}
    with TestClient(create_app(rec, admin_token="s3cret")) as client:
        assert client.post("/admin/items", json={"items": new}).status_code == 401
        got = client.post("/admin/items", json={"items": new}, headers=auth)
        assert got.status_code == 200, got.text
        assert got.json() == {"status": "added", "added": 20, "num_items": 80, "saved": False}
        top = client.get("/recommend/4", params={"k": 40}).json()["items"]
        assert {i["item_id"] for i in top} & set(cold)  # the cache was rebuilt with them
        again = client.post("/admin/items", json={"items": new[:1]}, headers=auth)
        assert again.status_code == 422 and "already known" in again.text
        assert "<DataFrame>" not in again.text and "the request's items" in again.text
        odd = [{"item_id": 999, "features": {"colour": "red"}}]
        assert client.post("/admin/items", json={"items": odd}, headers=auth).status_code == 422
        assert client.post("/admin/items", json={"items": []}, headers=auth).status_code == 422
        # another request's items added while this one waited for the lock: not counted
        from hybridrec.serve.holder import ModelHolder

        original = ModelHolder.add_items

        def after_another(self, data):  # noqa: ANN001, ANN202
            original(self, pd.DataFrame({"itemId": [1001], "genre": [GENRES[0]]}))
            return original(self, data)

        monkeypatch.setattr(ModelHolder, "add_items", after_another)
        one = [{"item_id": 1002, "features": {"genre": GENRES[1]}}]
        got = client.post("/admin/items", json={"items": one}, headers=auth).json()
        assert got["added"] == 1 and got["num_items"] == 82


def test_full_evaluation_reports_warm_and_cold_items_separately(tmp_path, capsys):
    frame, items, cold = planted()
    rng = np.random.default_rng(1)
    warm = frame[~frame.itemId.isin(cold)]
    held = warm.groupby("userId").sample(1, random_state=1)  # one warm test item per user
    train = warm.drop(held.index)
    test = pd.concat(
        [held, frame[frame.itemId.isin(cold)].sample(40, random_state=int(rng.integers(9)))]
    )
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    items.to_csv(tmp_path / "items.csv", index=False)
    assert main(["train", "--train", str(tmp_path / "train.csv"), "--item-features",
                 str(tmp_path / "items.csv"), "--out", str(tmp_path / "m"), "--epochs", "2",
                 "--embedding-dim", "8", "--no-progress", "--val", "none"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path / "m"), "--train", str(tmp_path / "train.csv"),
                 "--test", str(tmp_path / "test.csv"), "--k", "5", "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["warm"]["users"] == 60  # the held-out warm item of every user
    assert out["cold"]["candidates"] == len(set(test.itemId) & set(cold))
    assert 0.0 <= out["cold"]["auc"] <= 1.0


def test_feature_ids_of_another_kind_are_a_clear_error():
    from hybridrec.errors import DataError

    frame, items, _ = planted()
    text_items = pd.DataFrame({"itemId": ["a", "b"], "genre": ["drama", "comedy"]})
    with pytest.raises(DataError, match="'a' is text, but the training data's ids"):
        hybridrec.train(frame, None, item_features=text_items, train_config=TrainConfig(epochs=1))


def test_a_feature_file_without_a_training_id_is_refused():
    """Nothing could learn what its features mean: most likely the wrong file."""
    frame, items, cold = planted()
    strangers = items.assign(itemId=items.itemId + 10_000)
    with pytest.raises(DataError, match="none of its 80 ids is one of the training data's"):
        hybridrec.train(frame, None, item_features=strangers,
                        train_config=TrainConfig(epochs=1, batch_size=256))  # fmt: skip
