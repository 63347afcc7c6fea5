"""recommend/ (the Recommender and its modules): top-K recommendations, seen items stay out,
batches equal single calls, new users, similar items and two-stage top-K work, and the
artifact and the CLI carry it all."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import hybridrec
from hybridrec import TrainConfig
from hybridrec.artifact import SEEN
from hybridrec.cli import main
from hybridrec.data.seen import SeenItems
from hybridrec.data.synthetic import SyntheticConfig, generate_interactions
from hybridrec.errors import ArtifactError, ConfigError, HybridRecError, UnknownIdError
from hybridrec.models import MODELS, build_model
from hybridrec.recommend import Recommendation, Recommender, write_recommendations

SYNTHETIC = SyntheticConfig(num_users=200, num_items=100, num_positives=3000, seed=0)
FAST = TrainConfig(epochs=2, batch_size=256, learning_rate=0.02, device="cpu", early_stop="none")
UNKNOWN_USERS = ["nobody", 10**9]


def options(model: str) -> dict:
    if model == "popularity":
        return {}
    if model == "mf":
        return {"embedding_dim": 8}
    if model == "sasrec":
        return {"hidden_dim": 8, "max_len": 8, "num_heads": 2}
    return {"embedding_dim": 8, "mlp_layer_sizes": (16, 8)}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """Labelled synthetic rows (targets 0 and 1), ~200 users x 100 items."""
    return generate_interactions(SYNTHETIC)


@pytest.fixture(scope="module")
def trained(frame, tmp_path_factory):
    """A tiny hybrid model, saved: ``(recommender as trained, model directory)``."""
    out = tmp_path_factory.mktemp("recommend") / "model"
    result = hybridrec.train(frame, out=out, model_options=options("hybrid"), train_config=FAST)
    return result.recommender, out


@pytest.fixture(scope="module")
def rec(trained) -> Recommender:
    return trained[0]


@pytest.fixture(scope="module")
def recs(frame, rec) -> dict[str, Recommender]:
    """One tiny trained recommender per registered model."""
    out = {"hybrid": rec}
    for name in MODELS:
        if name != "hybrid":
            out[name] = hybridrec.train(
                frame, model=name, model_options=options(name), train_config=FAST
            ).recommender
    return out


@pytest.fixture(scope="module")
def seen_by_user(frame) -> dict:
    """Each user's training positives, straight from the rows (independent of SeenItems)."""
    positives = frame[frame["target"] == 1]
    return positives.groupby("userId")["itemId"].apply(set).to_dict()


def popularity_order(frame) -> tuple[list, np.ndarray]:
    """Items by descending positive count, ties by the smaller id; and their counts."""
    counts = frame[frame["target"] == 1]["itemId"].value_counts()
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [i for i, _ in ranked], np.array([c for _, c in ranked])


# ------------------------------------------------------------------ the model contract


@pytest.mark.parametrize("name", sorted(MODELS))
def test_user_parameters_name_the_per_user_tables(name):
    model = build_model(name, num_users=5, num_items=7)
    params = dict(model.named_parameters())
    assert isinstance(model.user_parameters, tuple)
    for param in model.user_parameters:
        assert params[param].shape[0] == 5, param  # one row per user
    if name == "popularity":
        assert model.user_parameters == ()


# ------------------------------------------------------------------ recommend


@settings(max_examples=25, deadline=None)
@given(position=st.integers(0, SYNTHETIC.num_users - 1), k=st.integers(1, 120))
def test_never_recommends_seen_items(rec, seen_by_user, position, k):
    user = rec.users.ids[position % len(rec.users)]
    result = rec.recommend(user, k=k)
    seen = seen_by_user.get(user, set())
    assert result.source == "model" and result.user_id == user
    assert not set(result.item_ids.tolist()) & seen
    assert len(result) == min(k, len(rec.items) - len(seen))
    assert len(set(result.item_ids.tolist())) == len(result)  # no repeats
    assert np.all(np.diff(result.scores) <= 0)  # best first


def test_include_seen_can_return_seen_items(rec, seen_by_user):
    user = rec.users.ids[0]
    everything = rec.recommend(user, k=10_000, exclude_seen=False)
    assert len(everything) == len(rec.items)  # all items but the unknown index 0
    assert seen_by_user[user] <= set(everything.item_ids.tolist())
    # the model learned the training positives: some appear in the unfiltered top 10
    tops = [set(rec.recommend(u, k=10, exclude_seen=False).item_ids.tolist()) for u in
            rec.users.ids[:20]]  # fmt: skip
    assert any(top & seen_by_user[u] for top, u in zip(tops, rec.users.ids[:20], strict=True))


def test_scores_are_probabilities_of_the_model(rec):
    user = rec.users.ids[3]
    result = rec.recommend(user, k=15)
    assert result.scores.dtype == np.float32
    u = torch.as_tensor(rec.users.transform([user]))
    with torch.no_grad():
        logits = rec.model.score_all(u)[0]
    expected = torch.sigmoid(logits[rec.items.transform(result.item_ids)]).numpy()
    np.testing.assert_allclose(result.scores, expected, rtol=0, atol=1e-6)
    assert not result.item_ids.flags.writeable


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("chunk_users", [None, 3, 16])
def test_batch_equals_one_by_one(recs, name, chunk_users):
    rec = recs[name]
    ids = rec.users.ids
    users = [*ids[:29], UNKNOWN_USERS[0], *ids[150:170], ids[5], UNKNOWN_USERS[1], str(ids[7])]
    candidates = [*rec.items.ids[::3], "no-such-item"]
    for kwargs in ({}, {"exclude_seen": False}, {"items": candidates}):
        many = rec.recommend_many(users, k=7, chunk_users=chunk_users, **kwargs)
        one = [rec.recommend(u, k=7, **kwargs) for u in users]
        assert len(many) == len(users)
        for a, b in zip(many, one, strict=True):
            assert a == b
            assert np.array_equal(a.scores, b.scores) and a.scores.dtype == b.scores.dtype
    sources = [r.source for r in many]
    assert sources.count("popularity") == 2 and sources.count("model") == len(users) - 2


def test_candidates_restrict_and_report_unknown_ones(rec, seen_by_user):
    user = rec.users.ids[10]
    items = [*rec.items.ids[:12].tolist(), "x-1", -4, "x-1"]
    result = rec.recommend(user, k=5, items=items)
    assert set(result.item_ids.tolist()) <= set(items[:12]) - seen_by_user[user]
    assert result.unknown_items == ["x-1", -4]  # in input order, once each
    everything = rec.recommend(user, k=50, items=items)  # k beyond the candidates
    assert set(everything.item_ids.tolist()) == set(items[:12]) - seen_by_user[user]
    assert rec.recommend(user, k=5, items=["x-1"]).item_ids.size == 0
    assert rec.recommend(user, k=5).unknown_items == []


def test_k_beyond_the_catalogue_returns_every_candidate(rec, seen_by_user):
    user = rec.users.ids[1]
    result = rec.recommend(user, k=10**6)
    assert set(result.item_ids.tolist()) == set(rec.items.ids.tolist()) - seen_by_user[user]


@pytest.mark.parametrize("k", [0, -3, 2.5, True])
def test_bad_k_is_a_value_error_naming_k(rec, k):
    with pytest.raises(ValueError, match="k"):
        rec.recommend(rec.users.ids[0], k=k)
    with pytest.raises(ConfigError, match="k"):
        rec.recommend_many(rec.users.ids[:2], k=k)
    with pytest.raises(ConfigError, match="k"):
        rec.similar_items(rec.items.ids[0], k=k)


def test_a_single_string_is_not_a_list_of_users(rec):
    with pytest.raises(TypeError, match="list of ids"):
        rec.recommend_many("abc")


def test_unknown_user_gets_the_most_popular_items(rec, frame):
    order, counts = popularity_order(frame)
    result = rec.recommend("never-seen-user", k=8)
    assert result.source == "popularity"
    assert result.item_ids.tolist() == order[:8]
    np.testing.assert_allclose(result.scores, counts[:8] / counts.sum(), rtol=1e-6)
    restricted = rec.recommend("never-seen-user", k=3, items=order[5:20])
    assert restricted.item_ids.tolist() == order[5:8]


def test_empty_batch(rec):
    assert rec.recommend_many([], k=3) == []


def test_recommend_many_with_one_k_per_user_is_each_users_recommend(rec):
    users = [*rec.users.ids[:4].tolist(), "nobody"]
    ks = [1, 7, 3, len(rec.items) + 5, 2]
    for exclude_seen in (True, False):
        many = rec.recommend_many(users, k=ks, exclude_seen=exclude_seen)
        pairs = zip(users, ks, strict=True)
        alone = [rec.recommend(u, k=k, exclude_seen=exclude_seen) for u, k in pairs]
        assert many == alone  # bit for bit, scores included
    assert rec.recommend_many(users, k=np.array(ks)) == rec.recommend_many(users, k=ks)
    with pytest.raises(ConfigError, match="one per user"):
        rec.recommend_many(users, k=[1, 2])
    with pytest.raises(ConfigError, match="k must be"):
        rec.recommend_many(users, k=[1, 2, 0, 1, 1])


# ------------------------------------------------------------------ a new user from items


@pytest.fixture(scope="module")
def planted() -> Recommender:
    """200 users in 4 groups, each liking 8 items of their own group (item id % 4); half the
    users are in group 0, so popularity recommends group-0 items to everyone."""
    rng = np.random.default_rng(0)
    items = np.arange(1, 101)
    rows = []
    for user in range(1, 201):
        group = 0 if user <= 100 else user % 4
        rows += [(user, i) for i in rng.choice(items[items % 4 == group], 8, replace=False)]
    data = pd.DataFrame(rows, columns=["userId", "itemId"])  # positives only
    config = TrainConfig(
        epochs=2, batch_size=128, learning_rate=0.05, device="cpu", early_stop="none"
    )
    return hybridrec.train(data, model_options=options("hybrid"), train_config=config).recommender


@pytest.mark.parametrize("group", [1, 2, 3])
def test_items_user_ranks_their_group_first(planted, group):
    given = [i for i in range(1, 101) if i % 4 == group][:3]
    result = planted.recommend_for_items(given, k=5)
    assert result.source == "items" and result.user_id is None
    assert not set(result.item_ids.tolist()) & set(given)
    in_group = sum(int(i) % 4 == group for i in result.item_ids)
    popular = planted.recommend("new-user", k=5)
    assert in_group >= 4
    assert in_group > sum(int(i) % 4 == group for i in popular.item_ids)


def test_recommend_for_items_leaves_the_model_alone(rec):
    before = {name: t.clone() for name, t in rec.model.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in rec.model.parameters()]
    items = rec.items.ids[:4].tolist()
    first = rec.recommend_for_items(items, k=6)
    for name, tensor in rec.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    for param, grad in zip(rec.model.parameters(), grads, strict=True):  # no .grad collected
        assert (param.grad is None) if grad is None else torch.equal(param.grad, grad)
    assert not rec.model.training
    assert rec.recommend_for_items(items, k=6) == first  # seeded: same inputs, same answer
    with torch.inference_mode():  # as the HTTP service calls it
        assert rec.recommend_for_items(items, k=6) == first


def test_recommend_for_items_options(rec):
    items = rec.items.ids[:3].tolist()
    kept = rec.recommend_for_items([*items, "ghost"], k=200, exclude_seen=False)
    assert set(items) <= set(kept.item_ids.tolist())
    assert kept.unknown_items == ["ghost"]
    dropped = rec.recommend_for_items(items, k=200)
    assert not set(items) & set(dropped.item_ids.tolist())
    assert len(dropped) == len(rec.items) - 3
    with pytest.raises(ConfigError, match="steps"):
        rec.recommend_for_items(items, steps=-1)
    with pytest.raises(ConfigError, match="lr"):
        rec.recommend_for_items(items, lr=0)


def test_recommend_for_unknown_items_is_popularity(rec, frame):
    result = rec.recommend_for_items(["ghost", "spook"], k=4)
    assert result.source == "popularity"
    assert result.unknown_items == ["ghost", "spook"]
    assert result.item_ids.tolist() == popularity_order(frame)[0][:4]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_recommend_for_items_every_model(recs, name):
    rec = recs[name]
    given = rec.items.ids[:2].tolist()
    result = rec.recommend_for_items(given, k=5, steps=5)
    assert result.source == ("popularity" if name == "popularity" else "items")
    assert len(result) == 5 and not set(given) & set(result.item_ids.tolist())


# ------------------------------------------------------------------ similar items


def test_similar_items_exclude_the_item_itself(rec):
    item = rec.items.ids[0]
    result = rec.similar_items(item, k=len(rec.items) + 5)
    assert result.source == "similar" and result.user_id is None
    assert item not in result.item_ids.tolist()
    assert len(result) == len(rec.items) - 1
    assert np.all(np.diff(result.scores) <= 0) and np.all(np.abs(result.scores) <= 1 + 1e-6)


def test_similar_items_rank_an_identical_twin_first(rec):
    twin_model = copy.deepcopy(rec.model)
    a, b = 5, 60  # item indices
    with torch.no_grad():
        twin_model.item_embedding.weight[b] = 3 * twin_model.item_embedding.weight[a]
    twin = Recommender(twin_model, rec.users, rec.items, seen=rec.seen)
    result = twin.similar_items(rec.items.ids[a - 1], k=3)
    assert result.item_ids[0] == rec.items.ids[b - 1]
    assert result.scores[0] == pytest.approx(1.0, abs=1e-6)


def test_similar_items_of_an_unknown_item(rec):
    with pytest.raises(UnknownIdError, match="no-such-item") as info:
        rec.similar_items("no-such-item")
    assert isinstance(info.value, KeyError) and isinstance(info.value, HybridRecError)
    assert str(info.value).startswith("item 'no-such-item'")  # not quoted like a KeyError


@pytest.mark.parametrize("name", ["mlp", "popularity"])
def test_similar_items_need_item_embeddings(recs, name):
    with pytest.raises(HybridRecError, match=f"model {name} has no item embeddings"):
        recs[name].similar_items(recs[name].items.ids[0])


# ------------------------------------------------------------------ the artifact


def test_seen_items_from_pairs():
    seen = SeenItems.from_pairs([2, 1, 2, 2], [4, 3, 1, 4], num_users=4, num_items=5)
    assert seen.indptr.tolist() == [0, 0, 1, 3, 3]
    assert seen.items.tolist() == [3, 1, 4] and seen.items.dtype == np.int32
    assert seen.item_counts.tolist() == [0, 1, 0, 1, 2] and seen.item_counts.dtype == np.int64


def test_trained_recommender_knows_the_training_positives(rec, seen_by_user, frame):
    for user in rec.users.ids[:30]:
        index = rec.users.transform([user])[0]
        got = set(rec.items.inverse_transform(rec.seen.of(index)).tolist())
        assert got == seen_by_user.get(user, set())
    assert rec.seen.item_counts.sum() == (frame["target"] == 1).sum()


def test_save_load_round_trip(trained, tmp_path):
    rec, out = trained
    users = [*rec.users.ids[:40], "stranger"]
    loaded = hybridrec.load(out)
    assert loaded.recommend_many(users, k=9) == rec.recommend_many(users, k=9)
    items = rec.items.ids[:3].tolist()
    assert loaded.recommend_for_items(items, k=5) == rec.recommend_for_items(items, k=5)
    assert loaded.similar_items(items[0], k=5) == rec.similar_items(items[0], k=5)
    config = json.loads((out / "config.json").read_text())
    assert SEEN in config["sha256"]
    loaded.save(tmp_path / "again")
    again = hybridrec.load(tmp_path / "again")
    assert again.recommend_many(users, k=9) == rec.recommend_many(users, k=9)


@pytest.fixture
def model_dir(trained, tmp_path):
    copy_dir = tmp_path / "model"
    shutil.copytree(trained[1], copy_dir)
    return copy_dir


def test_artifact_without_seen_items_still_loads(model_dir, trained):
    (model_dir / SEEN).unlink()
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    del config["sha256"][SEEN]
    path.write_text(json.dumps(config))
    old = hybridrec.load(model_dir)
    assert old.seen is None
    user = old.users.ids[0]
    assert old.recommend(user, k=200) == old.recommend(user, k=200, exclude_seen=False)
    np.testing.assert_array_equal(  # same weights as the full artifact
        old.recommend(user, k=5, exclude_seen=False).scores,
        trained[0].recommend(user, k=5, exclude_seen=False).scores,
    )
    popular = old.recommend("stranger", k=4)  # no counts: all tied, lowest index first
    assert popular.source == "popularity"
    assert popular.item_ids.tolist() == old.items.ids[:4].tolist()
    assert not popular.scores.any()


def test_damaged_seen_items_are_detected(model_dir):
    (model_dir / SEEN).write_bytes(b"not an npz")
    with pytest.raises(ArtifactError, match=r"seen\.npz .*checksum mismatch"):
        hybridrec.load(model_dir)


def test_seen_items_of_another_model_are_rejected(model_dir):
    """A well-formed seen.npz with a valid checksum but the wrong sizes."""
    import hashlib

    data = SeenItems.empty(3, 4).to_bytes()
    (model_dir / SEEN).write_bytes(data)
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    config["sha256"][SEEN] = hashlib.sha256(data).hexdigest()
    path.write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=r"seen\.npz does not fit the model"):
        hybridrec.load(model_dir)


# ------------------------------------------------------------------ two-stage top-K

TWO_STAGE = ["hybrid", "mf", "gmf", "neumf"]


def fresh(rec: Recommender) -> Recommender:
    """The same model and data in a new Recommender (nothing cached yet)."""
    return Recommender(rec.model, rec.users, rec.items, model_name=rec.model_name, seen=rec.seen)


@settings(max_examples=20, deadline=None)
@given(
    position=st.integers(0, SYNTHETIC.num_users - 1),
    k=st.integers(1, 40),
    n=st.integers(1, 150),
)
def test_two_stage_never_recommends_seen_items(rec, seen_by_user, position, k, n):
    user = rec.users.ids[position % len(rec.users)]
    result = rec.recommend(user, k=k, num_candidates=n)
    seen = seen_by_user.get(user, set())
    assert result.source == "model"
    assert not set(result.item_ids.tolist()) & seen
    # seen items are masked before the top-N is taken, so they never crowd out candidates
    assert len(result) == min(k, len(rec.items) - len(seen))
    assert len(set(result.item_ids.tolist())) == len(result)
    assert np.all(np.diff(result.scores) <= 0)


@pytest.mark.parametrize("name", TWO_STAGE)
def test_two_stage_with_every_candidate_is_exhaustive(recs, name):
    rec = recs[name]
    users = rec.users.ids[:40]
    candidates = rec.items.ids[::2]
    for kwargs in ({}, {"exclude_seen": False}, {"items": candidates}):
        exact = rec.recommend_many(users, k=10, **kwargs)
        two = rec.recommend_many(users, k=10, num_candidates=len(rec.items), **kwargs)
        for a, b in zip(exact, two, strict=True):
            assert b.source == "model" and b.user_id == a.user_id
            assert b.item_ids.tolist() == a.item_ids.tolist()
            np.testing.assert_allclose(b.scores, a.scores, rtol=0, atol=1e-6)


def test_gmf_retrieval_ranks_as_the_model(recs):
    """GMF's stage-1 query folds in its output weights, so even k candidates suffice."""
    rec = recs["gmf"]
    users = rec.users.ids[:40]
    exact = rec.recommend_many(users, k=10)
    two = rec.recommend_many(users, k=10, num_candidates=10)
    for a, b in zip(exact, two, strict=True):
        assert b.item_ids.tolist() == a.item_ids.tolist()


def test_two_stage_candidates_are_the_best_allowed_by_dot_product_and_prior(rec, seen_by_user):
    """With N = k, the result is exactly stage 1's top k of the items that may be
    recommended: the mask (seen items, item 0, ``items=``) applies before the top-N."""
    from hybridrec.retrieval import item_prior

    prior = item_prior(rec.model)
    allowed = set(rec.items.ids[1::2].tolist())
    for user in rec.users.ids[:15]:
        u = torch.as_tensor(rec.users.transform([user]))
        with torch.no_grad():
            stage1 = (rec.model.user_embedding(u) @ rec.model.item_embedding.weight.T)[0] + prior
        ids = rec.items.inverse_transform(np.arange(1, len(rec.items) + 1))
        ranked = [i for _, i in sorted(zip((-stage1[1:]).tolist(), ids.tolist(), strict=True))]
        for kwargs, keep in (({}, set(ids.tolist())), ({"items": sorted(allowed)}, allowed)):
            best = [i for i in ranked if i in keep and i not in seen_by_user[user]][:6]
            result = rec.recommend(user, k=6, num_candidates=6, **kwargs)
            assert set(result.item_ids.tolist()) == set(best)


def test_two_stage_respects_candidates(rec, seen_by_user):
    user = rec.users.ids[10]
    items = [*rec.items.ids[:12].tolist(), "x-1", -4, "x-1"]
    result = rec.recommend(user, k=5, items=items, num_candidates=3)
    assert len(result) == 5  # at least k candidates are kept
    assert set(result.item_ids.tolist()) <= set(items[:12]) - seen_by_user[user]
    assert result.unknown_items == ["x-1", -4]
    everything = rec.recommend(user, k=50, items=items, num_candidates=2)
    assert set(everything.item_ids.tolist()) == set(items[:12]) - seen_by_user[user]
    assert rec.recommend(user, k=5, items=["x-1"], num_candidates=4).item_ids.size == 0


@pytest.mark.parametrize("name", TWO_STAGE)
@pytest.mark.parametrize("chunk_users", [None, 3])
def test_two_stage_batch_equals_one_by_one(recs, name, chunk_users):
    rec = recs[name]
    ids = rec.users.ids
    users = [*ids[:25], UNKNOWN_USERS[0], *ids[150:160], ids[5], UNKNOWN_USERS[1]]
    candidates = [*rec.items.ids[::3], "no-such-item"]
    for kwargs in ({}, {"exclude_seen": False}, {"items": candidates}):
        many = rec.recommend_many(users, k=7, chunk_users=chunk_users, num_candidates=12, **kwargs)
        one = [rec.recommend(u, k=7, num_candidates=12, **kwargs) for u in users]
        for a, b in zip(many, one, strict=True):
            assert a == b
    assert [r.source for r in many].count("popularity") == 2


def test_two_stage_unknown_users_get_popularity(rec):
    assert rec.recommend("nobody", k=4, num_candidates=5) == rec.recommend("nobody", k=4)
    assert rec.recommend("nobody", k=4, num_candidates=5).source == "popularity"


def test_two_stage_scores_are_the_models_probabilities(rec):
    user = rec.users.ids[3]
    result = rec.recommend(user, k=8, num_candidates=20)
    assert result.scores.dtype == np.float32
    expected = rec.score([user] * len(result), result.item_ids)
    np.testing.assert_allclose(result.scores, expected, rtol=0, atol=1e-6)


def test_two_stage_prior_is_computed_once(rec, monkeypatch):
    import hybridrec.recommend.two_stage as module

    calls = []
    real = module.item_prior
    monkeypatch.setattr(module, "item_prior", lambda model: calls.append(1) or real(model))
    new = fresh(rec)
    new.recommend_many(["nobody"], k=3, num_candidates=5)  # no known user: no prior needed
    assert calls == []
    first = new.recommend_many(new.users.ids[:5], k=3, num_candidates=5)
    again = new.recommend_many(new.users.ids[:5], k=3, num_candidates=5)
    assert first == again and calls == [1]


def test_two_stage_auto_is_exhaustive_for_small_catalogues_only(recs, monkeypatch):
    import hybridrec.recommend.two_stage as module

    rec = recs["hybrid"]
    users = list(rec.users.ids[:6])
    exhaustive = rec.recommend_many(users, k=4)
    assert rec.recommend_many(users, k=4, num_candidates="auto") == exhaustive
    assert not fresh(rec).prepare_two_stage("auto")
    monkeypatch.setattr(module, "AUTO_CANDIDATES", 5)
    monkeypatch.setattr(module, "AUTO_MIN_ITEMS", 3)  # this catalogue now counts as large
    assert module.check_num_candidates(rec.model, "hybrid", "auto") == 5
    calls = []
    real = module.item_prior
    monkeypatch.setattr(module, "item_prior", lambda model: calls.append(1) or real(model))
    warmed = fresh(rec)
    assert warmed.prepare_two_stage("auto") and calls == [1]  # computed before any request
    warmed.recommend_many(users, k=4, num_candidates="auto")
    assert calls == [1]
    auto = rec.recommend_many(users, k=4, num_candidates="auto")
    assert auto == rec.recommend_many(users, k=4, num_candidates=5)
    for name in ("mlp", "sasrec"):  # nothing to retrieve by: exhaustive, not an error
        other = recs[name]
        assert module.check_num_candidates(other.model, name, "auto") is None


@pytest.mark.parametrize("n", [0, -2, 2.5, True, "10"])
def test_two_stage_bad_num_candidates(rec, n):
    with pytest.raises(ConfigError, match="num_candidates") as info:
        rec.recommend(rec.users.ids[0], k=3, num_candidates=n)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="num_candidates"):
        rec.recommend_many([], k=3, num_candidates=n)


@pytest.mark.parametrize("name", ["mlp", "popularity", "sasrec"])
def test_two_stage_needs_embeddings(recs, name):
    rec = recs[name]
    with pytest.raises(ConfigError, match="hybrid, mf, gmf, neumf") as info:
        rec.recommend_many(rec.users.ids[:2], k=3, num_candidates=10)
    assert name in str(info.value)
    assert rec.recommend_many(rec.users.ids[:2], k=3)  # without it: exhaustive as before


# ------------------------------------------------------------------ the command line


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def read_back(path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True)
    return pd.read_csv(path)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_cli_writes_recommendations(trained, tmp_path, capsys, suffix):
    rec, out = trained
    users = [*rec.users.ids[:21].tolist(), 987654]  # the last one is unknown
    pd.DataFrame({"userId": users}).to_csv(tmp_path / "users.csv", index=False)
    path = tmp_path / f"recs{suffix}"
    code, stdout, _ = cli(
        capsys, "recommend", "--model", out, "--users", tmp_path / "users.csv", "--k", 4,
        "--output", path, "--chunk-users", 8, "--no-progress",
    )  # fmt: skip
    assert code == 0, stdout
    assert "88 recommendations for 22 users" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, "users.csv"]  # no temp
    got = read_back(path)
    assert list(got.columns) == ["userId", "rank", "itemId", "score", "source"]
    assert got.groupby("userId", sort=False).size().tolist() == [4] * len(users)
    assert got["userId"].drop_duplicates().tolist() == users
    assert got["rank"].tolist() == [1, 2, 3, 4] * len(users)
    expected = rec.recommend_many(users, k=4)
    assert got["itemId"].tolist() == [i for r in expected for i in r.item_ids.tolist()]
    assert got["source"].tolist() == [r.source for r in expected for _ in range(4)]
    assert np.array_equal(
        got["score"].to_numpy(np.float32), np.concatenate([r.scores for r in expected])
    )
    assert got["source"].iloc[-1] == "popularity"


def test_cli_all_users_and_include_seen(trained, tmp_path, capsys, seen_by_user):
    rec, out = trained
    path = tmp_path / "all.parquet"
    code, _, _ = cli(
        capsys, "recommend", "--model", out, "--all", "--k", 3, "--output", path,
        "--include-seen", "--no-progress",
    )  # fmt: skip
    assert code == 0
    got = pd.read_parquet(path)
    assert got["userId"].drop_duplicates().tolist() == rec.users.ids.tolist()
    assert len(got) == 3 * len(rec.users) and set(got["source"]) == {"model"}
    pairs = set(zip(got["userId"], got["itemId"], strict=True))
    assert any((u, i) in pairs for u, items in seen_by_user.items() for i in items)
    expected = rec.recommend_many(rec.users.ids, k=3, exclude_seen=False)
    assert got["itemId"].tolist() == [i for r in expected for i in r.item_ids.tolist()]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_cli_two_stage_writes_recommendations(trained, tmp_path, capsys, suffix):
    rec, out = trained
    users = [*rec.users.ids[:15].tolist(), 987654]
    pd.DataFrame({"userId": users}).to_csv(tmp_path / "users.csv", index=False)
    path = tmp_path / f"recs{suffix}"
    code, stdout, _ = cli(
        capsys, "recommend", "--model", out, "--users", tmp_path / "users.csv", "--k", 4,
        "--output", path, "--two-stage", 9, "--chunk-users", 8, "--no-progress",
    )  # fmt: skip
    assert code == 0, stdout
    assert "64 recommendations for 16 users" in stdout
    got = read_back(path)
    expected = rec.recommend_many(users, k=4, num_candidates=9)
    assert got["itemId"].tolist() == [i for r in expected for i in r.item_ids.tolist()]
    assert got["source"].tolist() == [r.source for r in expected for _ in range(4)]
    assert np.array_equal(
        got["score"].to_numpy(np.float32), np.concatenate([r.scores for r in expected])
    )


def test_cli_two_stage_needs_embeddings(frame, tmp_path, capsys):
    directory = tmp_path / "mlp"
    hybridrec.train(
        frame, model="mlp", out=directory, model_options=options("mlp"), train_config=FAST
    )
    code, _, err = cli(
        capsys, "recommend", "--model", directory, "--all", "--output", tmp_path / "r.csv",
        "--two-stage", 10, "--no-progress",
    )  # fmt: skip
    assert code == 2 and err.startswith("error: model mlp") and err.count("\n") == 1
    assert "hybrid, mf, gmf, neumf" in err and not (tmp_path / "r.csv").exists()


def test_write_recommendations_two_stage_equals_recommend_many(rec, tmp_path):
    users = rec.users.ids[:10]
    path = tmp_path / "r.jsonl"
    assert write_recommendations(rec, users, path, k=3, num_candidates=5, chunk_users=4) == 30
    got = pd.read_json(path, lines=True)
    expected = rec.recommend_many(users, k=3, num_candidates=5)
    assert got["itemId"].tolist() == [i for r in expected for i in r.item_ids.tolist()]


def test_cli_progress_bar_goes_to_stderr(trained, tmp_path, capsys):
    code, out, err = cli(
        capsys, "recommend", "--model", trained[1], "--all", "--output", tmp_path / "r.csv"
    )
    assert code == 0 and "user" in err and "user/s" not in out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--all", "--output", "recs.txt"], ".csv, .jsonl, .parquet"),
        (["--all", "--output", "recs.csv", "--k", "0"], "--k must be >= 1, got 0"),
        (["--all", "--output", "recs.csv", "--chunk-users", "0"], "--chunk-users must be >= 1"),
        (["--all", "--output", "recs.csv", "--two-stage", "0"], "--two-stage must be >= 1"),
        (["--all", "--output", "r.csv", "--two-stage", "-5"], "--two-stage must be >= 1, got -5"),
        (["--users", "missing.csv", "--output", "recs.csv"], "file not found"),
        (["--users", "bad.csv", "--output", "recs.csv"], "missing column 'userId'"),
    ],
)
def test_cli_user_mistakes_exit_2(trained, tmp_path, capsys, monkeypatch, argv, fragment):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.csv").write_text("user\n1\n")
    code, _, err = cli(capsys, "recommend", "--model", trained[1], *argv, "--no-progress")
    assert code == 2
    assert err.startswith("error: ") and fragment in err and "Traceback" not in err
    assert err.count("\n") == 1  # one line
    assert not (tmp_path / "recs.csv").exists() and not (tmp_path / "recs.txt").exists()


def test_cli_missing_model_exits_2(tmp_path, capsys):
    code, _, err = cli(
        capsys, "recommend", "--model", tmp_path / "nope", "--all", "--output", tmp_path / "r.csv"
    )
    assert code == 2 and err.startswith("error: no model directory")


def test_a_failed_write_leaves_no_file(rec, tmp_path, monkeypatch):
    calls = []

    def flaky(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return original(self, *args, **kwargs)

    original = Recommender.recommend_many
    monkeypatch.setattr(Recommender, "recommend_many", flaky)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_recommendations(rec, rec.users.ids, tmp_path / "r.parquet", chunk_users=50)
    assert list(tmp_path.iterdir()) == []


def test_recommendation_equality():
    a = Recommendation(1, np.array([3, 4]), np.array([0.5, 0.2], np.float32), "model")
    b = Recommendation(1, np.array([3, 4]), np.array([0.5, 0.2], np.float32), "model")
    assert a == b and len(a) == 2
    assert a != Recommendation(1, np.array([4, 3]), a.scores, "model")


def test_cli_users_file_uses_the_training_user_column(tmp_path, capsys, monkeypatch):
    """A model trained with --user-col user reads its --users file's 'user' column too."""
    from hybridrec.cli import main

    monkeypatch.chdir(tmp_path)
    rows = pd.DataFrame(
        {"user": [f"u{i % 7}" for i in range(70)], "item": [f"i{i % 31}" for i in range(70)]}
    )
    rows.to_csv("train.csv", index=False)
    pd.DataFrame({"user": ["u1", "nobody"]}).to_csv("users.csv", index=False)
    assert (
        main(
            [
                "train",
                "--train",
                "train.csv",
                "--user-col",
                "user",
                "--item-col",
                "item",
                "--epochs",
                "1",
                "--embedding-dim",
                "4",
                "--device",
                "cpu",
                "--out",
                "m",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "recommend",
                "--model",
                "m",
                "--users",
                "users.csv",
                "--k",
                "3",
                "--output",
                "r.csv",
                "--no-progress",
            ]
        )
        == 0
    )
    out = pd.read_csv("r.csv")
    assert list(out["userId"]) == ["u1"] * 3 + ["nobody"] * 3
    assert list(out["source"]) == ["model"] * 3 + ["popularity"] * 3
    capsys.readouterr()


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda r: r.recommend([1, 2]), "use recommend_many"),  # was an IndexError
        (lambda r: r.recommend(None), "must be one id"),  # was the popular items
        (lambda r: r.recommend(float("nan")), "must be one id"),
        (lambda r: r.recommend(1.0), "must be one id"),  # was an unknown user
        (lambda r: r.recommend(1, k=2**63), r"below 2\^63"),  # was an OverflowError
        (lambda r: r.recommend(1, exclude_seen="no"), "True or False"),  # was true
        (lambda r: r.recommend_many(np.ones((2, 2), dtype=int)), "one-dimensional"),
    ],
)
def test_bad_arguments_are_config_errors_not_internal_ones(rec, call, fragment):
    with pytest.raises(ConfigError, match=fragment):
        call(rec)
