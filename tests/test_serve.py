"""serve/ (the HTTP service): it answers exactly what the Recommender answers, and reloads
never drop requests.

Everything runs in-process through FastAPI's TestClient: no server, no sockets, no sleeps.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

import hybridrec
import hybridrec.serve
from hybridrec import TrainConfig
from hybridrec.data.encoding import IdEncoder
from hybridrec.data.synthetic import SyntheticConfig, write_synthetic_data
from hybridrec.errors import ConfigError, HybridRecError, UnknownIdError
from hybridrec.recommend import Recommendation
from hybridrec.serve import (
    CachedRecommendations,
    ModelHolder,
    build_cache,
    create_app,
    install_reload_signal,
    serve,
)
from hybridrec.serve.app import _fast_query

TINY = {"embedding_dim": 8, "mlp_layer_sizes": (16, 8)}
UNKNOWN_USER = "nobody-like-this"
UNKNOWN_ITEM = "no-such-item"


def _train(directory: Path, seed: int) -> Path:
    config = SyntheticConfig(num_users=100, num_items=60, num_positives=2000, seed=seed)
    train_csv, val_csv = write_synthetic_data(directory, config)
    out = directory / f"model-{seed}"  # distinct names: GET /model shows the name
    hybridrec.train(
        train_csv,
        val_csv,
        out=out,
        model_options=TINY,
        train_config=TrainConfig(epochs=2, device="cpu", seed=seed),
    )
    return out


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny artifacts from different data and seeds, so a swap is visible."""
    return (
        _train(tmp_path_factory.mktemp("serve_a"), seed=0),
        _train(tmp_path_factory.mktemp("serve_b"), seed=1),
    )


@pytest.fixture(scope="module")
def rec(model_dirs):
    return hybridrec.load(model_dirs[0])


@pytest.fixture(scope="module")
def rec_b(model_dirs):
    return hybridrec.load(model_dirs[1])


@pytest.fixture(scope="module")
def client(rec):
    """A read-only app around the injected recommender (reload tests build their own)."""
    with TestClient(create_app(rec)) as c:
        yield c


ADMIN = {"Authorization": "Bearer s3cret"}


@pytest.fixture
def reload_client(model_dirs):
    """A fresh app that loads model A in its lifespan; tests may reload it freely (it sends
    the admin token)."""
    root = os.path.commonpath([str(d) for d in model_dirs])  # both models may be reloaded
    app = create_app(model_dir=model_dirs[0], admin_token="s3cret", models_root=root)
    with TestClient(app, headers=ADMIN) as c:
        yield c


def plain(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x


def expected(recommendation: Any, user_id: Any = None) -> dict[str, Any]:
    """A Recommendation as the JSON the service should send (written independently of serve)."""
    return {
        "user_id": user_id,
        "items": [
            {"item_id": plain(i), "score": float(s)}
            for i, s in zip(recommendation.item_ids, recommendation.scores, strict=True)
        ],
        "source": recommendation.source,
        "unknown_items": [plain(i) for i in recommendation.unknown_items],
    }


def known_users(rec, n: int) -> list[int]:
    return [int(u) for u in rec.users.ids[:n]]


def known_items(rec, n: int) -> list[int]:
    return [int(i) for i in rec.items.ids[:n]]


# --------------------------------------------------------------------------- service endpoints


def test_health(client):
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "model": "hybrid"}


def test_model_metadata(client, rec, model_dirs):
    r = client.get("/model")
    assert r.status_code == 200
    final = json.loads((model_dirs[0] / "metrics.json").read_text())["final"]
    assert final  # the artifact has final metrics to report
    assert r.json() == {
        "model": "hybrid",
        "model_dir": model_dirs[0].name,  # its name: a public route names no server paths
        "format_version": rec.config["format_version"],
        "hybridrec_version": hybridrec.__version__,
        "num_users": len(rec.users),
        "num_items": len(rec.items),
        "model_config": rec.config["model_config"],
        "metrics": {
            k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in final.items()
        },
    }


def test_docs_and_openapi(client):
    assert client.get("/docs").status_code == 200
    r = client.get("/openapi.json")
    assert r.status_code == 200
    paths = set(r.json()["paths"])
    assert paths >= {
        "/health",
        "/model",
        "/recommend/{user_id}",
        "/recommend",
        "/score",
        "/similar/{item_id}",
        "/admin/reload",
    }


# --------------------------------------------------------------------------- recommendations


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_recommend_known_user(client, rec, exclude_seen):
    user = known_users(rec, 1)[0]
    flag = str(exclude_seen).lower()
    r = client.get(f"/recommend/{user}", params={"k": 5, "exclude_seen": flag})
    assert r.status_code == 200
    body = r.json()
    # the URL's "7" comes back as the model's own id 7: ints stay ints
    assert body == expected(rec.recommend(str(user), k=5, exclude_seen=exclude_seen), user)
    assert body["source"] == "model"
    assert len(body["items"]) == 5
    assert all(type(x["item_id"]) is int for x in body["items"])


def test_recommend_default_k(client, rec):
    user = known_users(rec, 1)[0]
    body = client.get(f"/recommend/{user}").json()
    assert body == expected(rec.recommend(str(user)), user)
    assert len(body["items"]) == 10


def test_unknown_user_gets_popularity(client, rec):
    r = client.get(f"/recommend/{UNKNOWN_USER}", params={"k": 3})
    assert r.status_code == 200
    body = r.json()
    assert body["source"] == "popularity"
    assert body == expected(rec.recommend(UNKNOWN_USER, k=3), UNKNOWN_USER)


@pytest.mark.parametrize("k", ["0", "1001", "x", "-1", "2.5"])
@pytest.mark.parametrize("path", ["/recommend/1", "/similar/1"])
def test_bad_k_in_query_is_422(client, path, k):
    assert client.get(path, params={"k": k}).status_code == 422


@pytest.mark.parametrize("k", [0, 1001, "x", "10", 2.5, True, None])
def test_bad_k_in_body_is_422(client, rec, k):
    r = client.post("/recommend", json={"user_ids": known_users(rec, 1), "k": k})
    assert r.status_code == 422


def test_recommend_batch(client, rec):
    users = [*known_users(rec, 3), UNKNOWN_USER]
    r = client.post("/recommend", json={"user_ids": users, "k": 4})
    assert r.status_code == 200
    want = [expected(x, u) for x, u in zip(rec.recommend_many(users, k=4), users, strict=True)]
    assert r.json() == {"results": want, "unknown_items": []}
    assert [x["source"] for x in r.json()["results"]] == ["model"] * 3 + ["popularity"]


def test_recommend_batch_text_ids_come_back_as_the_models_ids(client, rec):
    users = known_users(rec, 2)
    as_text = client.post("/recommend", json={"user_ids": [str(u) for u in users], "k": 3})
    as_int = client.post("/recommend", json={"user_ids": users, "k": 3})
    assert as_text.status_code == as_int.status_code == 200
    assert as_text.json() == as_int.json()
    assert [x["user_id"] for x in as_text.json()["results"]] == users


def test_recommend_batch_empty(client):
    r = client.post("/recommend", json={"user_ids": [], "k": 3})
    assert r.status_code == 200
    assert r.json() == {"results": [], "unknown_items": []}


def test_recommend_batch_restricted_items(client, rec):
    users = known_users(rec, 2)
    items = [*known_items(rec, 8), UNKNOWN_ITEM]
    body = {"user_ids": users, "k": 3, "exclude_seen": False, "items": items}
    r = client.post("/recommend", json=body)
    assert r.status_code == 200
    results = rec.recommend_many(users, k=3, exclude_seen=False, items=items)
    # the unknown candidates are listed once for the batch, not in every user's answer
    want = [{**expected(x, u), "unknown_items": []} for x, u in zip(results, users, strict=True)]
    assert r.json()["results"] == want
    assert r.json()["unknown_items"] == [UNKNOWN_ITEM]
    for result in r.json()["results"]:
        assert {x["item_id"] for x in result["items"]} <= set(items[:-1])
        assert result["unknown_items"] == []


def test_recommend_for_new_user_items(client, rec):
    items = [*known_items(rec, 3), UNKNOWN_ITEM]
    r = client.post("/recommend", json={"item_ids": items, "k": 5})
    assert r.status_code == 200
    body = r.json()
    assert body == expected(rec.recommend_for_items(items, k=5), None)
    assert body["source"] == "items"
    assert body["unknown_items"] == [UNKNOWN_ITEM]
    assert not {x["item_id"] for x in body["items"]} & set(items)  # seen items are excluded


@pytest.mark.parametrize(
    "body",
    [
        {"user_ids": [1], "item_ids": [1]},
        {"k": 5},
        {},
    ],
)
def test_recommend_needs_exactly_one_of_users_or_items(client, body):
    r = client.post("/recommend", json=body)
    assert r.status_code == 422
    assert "exactly one of user_ids" in r.text


def test_recommend_rejects_bad_bodies(client):
    assert client.post("/recommend", json={"item_ids": [1], "items": [2]}).status_code == 422
    assert client.post("/recommend", json={"user_ids": [1.5]}).status_code == 422
    assert client.post("/recommend", json={"user_ids": [1], "typo": 1}).status_code == 422
    assert client.post("/recommend", content=b"not json").status_code == 422


def test_score(client, rec):
    users = [*known_users(rec, 3), UNKNOWN_USER, "1"]
    items = [*known_items(rec, 3), known_items(rec, 1)[0], UNKNOWN_ITEM]
    pairs = [{"user_id": u, "item_id": i} for u, i in zip(users, items, strict=True)]
    r = client.post("/score", json={"pairs": pairs})
    assert r.status_code == 200
    assert r.json() == {"scores": [float(s) for s in rec.score(users, items)]}
    assert all(0 < s < 1 for s in r.json()["scores"])


def test_score_edge_cases(client):
    assert client.post("/score", json={"pairs": []}).json() == {"scores": []}
    assert client.post("/score", json={"pairs": [{"user_id": 1}]}).status_code == 422
    assert client.post("/score", json={}).status_code == 422


def test_similar(client, rec):
    item = known_items(rec, 1)[0]
    r = client.get(f"/similar/{item}", params={"k": 4})
    assert r.status_code == 200
    body = r.json()
    assert body["source"] == "similar"
    assert body == expected(rec.similar_items(str(item), k=4), None)
    assert item not in {x["item_id"] for x in body["items"]}


def test_similar_unknown_item_is_404(client):
    r = client.get(f"/similar/{UNKNOWN_ITEM}")
    assert r.status_code == 404
    assert UNKNOWN_ITEM in r.json()["detail"]


class Failing(hybridrec.Recommender):
    """Raises what a recommender may raise, to pin down how each maps to a status."""

    error: Exception

    def recommend(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error

    # the service scores waiting users together, and one by one (recommend) if that fails
    def recommend_many(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (UnknownIdError("user 'u' is unknown"), 404),
        (KeyError("u"), 404),
        (ConfigError("k must be >= 1"), 422),
        (HybridRecError("model mlp has no item embeddings"), 422),
        (ValueError("bad"), 422),
    ],
)
def test_recommender_errors_map_to_4xx(rec, error, status):
    failing = Failing(rec.model, rec.users, rec.items)
    failing.error = error
    # uncached: the cache is filled by recommend_many and would answer without recommend
    with TestClient(create_app(failing, cache_top=0)) as client:
        r = client.get("/recommend/1")
    assert r.status_code == status
    assert r.json() == {"detail": error.args[0]}


def test_bugs_are_not_disguised_as_user_errors(rec):
    failing = Failing(rec.model, rec.users, rec.items)
    failing.error = RuntimeError("a bug")
    app = create_app(failing, cache_top=0)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/recommend/1").status_code == 500


# --------------------------------------------------------------------------- the top-k cache
# GET /recommend/{user_id} is answered from lists computed at load (TopCache), by a middleware
# in front of FastAPI for canonical queries and by the endpoint for the rest. Every answer
# must be exactly the Recommender's, bit for bit, for every user, k and exclude_seen.


@pytest.fixture(scope="module")
def uncached(rec):
    """The same service with the cache off: every request goes through the model."""
    with TestClient(create_app(rec, cache_top=0)) as c:
        yield c


def text_id_recommender(rec) -> hybridrec.Recommender:
    """``rec``'s model with text ids that need JSON escaping (quotes, backslashes, accents)."""
    users = IdEncoder(np.array(sorted(f'user "{u}"' for u in rec.users.ids), dtype=object))
    items = IdEncoder(np.array(sorted(f"ítem\\{i}" for i in rec.items.ids), dtype=object))
    return hybridrec.Recommender(rec.model, users, items, model_name="hybrid", seen=rec.seen)


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_cache_equals_recommend_for_every_user_and_k(rec, exclude_seen):
    cache = build_cache(rec, depth=12)
    assert cache is not None
    users = [*rec.users.ids.tolist(), UNKNOWN_USER]
    for user in users:
        for k in (1, 2, 3, 7, 8, 9, 10, 11, 12):
            body = cache.body(str(user), k, exclude_seen)
            want = rec.recommend(str(user), k=k, exclude_seen=exclude_seen)
            assert json.loads(body) == expected(want, user), (user, k)
        assert cache.body(str(user), 13, exclude_seen) is None  # deeper than kept: the model


def test_cache_with_text_ids(rec):
    text = text_id_recommender(rec)
    cache = build_cache(text, depth=10)
    for user in [*text.users.ids.tolist(), UNKNOWN_USER, "1"]:
        for exclude_seen in (True, False):
            want = text.recommend(user, k=10, exclude_seen=exclude_seen)
            assert json.loads(cache.body(user, 10, exclude_seen)) == expected(want, user)
    with TestClient(create_app(text)) as c:
        user = text.users.ids[3]
        r = c.get(f"/recommend/{user}", params={"k": 4})
        assert r.status_code == 200
        assert r.json() == expected(text.recommend(user, k=4), user)


def test_cache_keeps_the_whole_ranking_of_small_catalogues(rec):
    cache = build_cache(rec)  # default depth 61 > 60 items: every k is answered
    user = str(rec.users.ids[0])
    want = rec.recommend(user, k=1000, exclude_seen=False)
    assert json.loads(cache.body(user, 1000, False)) == expected(want, rec.users.ids[0])
    assert len(want) == len(rec.items)


@pytest.mark.parametrize("model", ["mf", "neumf", "popularity", "sasrec"])
def test_cache_equals_recommend_for_other_models(tmp_path, model):
    config = SyntheticConfig(num_users=40, num_items=30, num_positives=600, seed=2)
    train_csv, _ = write_synthetic_data(tmp_path, config)
    options = {
        "mf": {"embedding_dim": 4},
        "neumf": {"embedding_dim": 4, "mlp_layer_sizes": (8, 4)},
        "popularity": {},
        "sasrec": {},
    }[model]
    other = hybridrec.train(
        train_csv,
        model=model,
        model_options=options,
        train_config=TrainConfig(epochs=1, device="cpu"),
    ).recommender
    cache = build_cache(other, depth=6)
    assert cache is not None
    for user in [*other.users.ids.tolist(), UNKNOWN_USER]:
        for exclude_seen in (True, False):
            for k in (1, 5, 6):
                want = other.recommend(str(user), k=k, exclude_seen=exclude_seen)
                assert json.loads(cache.body(str(user), k, exclude_seen)) == expected(want, user)


def test_cache_refuses_logits_that_are_not_the_rankings(rec, monkeypatch, caplog):
    """A model whose scores the cache cannot reproduce is served uncached, never wrongly."""
    other = hybridrec.Recommender(rec.model, rec.users, rec.items, seen=rec.seen)
    real = other.recommend_many

    def ranked_another_way(*args: Any, **kwargs: Any) -> list[Any]:
        return [
            Recommendation(r.user_id, r.item_ids, r.scores / 2, r.source, r.unknown_items)
            for r in real(*args, **kwargs)
        ]

    monkeypatch.setattr(other, "recommend_many", ranked_another_way)
    assert build_cache(other) is None
    assert "not caching" in caplog.text


def test_cache_memory_of_finished_responses_is_bounded(rec, monkeypatch):
    monkeypatch.setattr(hybridrec.serve.cache, "_MEMO_BYTES", 2000)
    cache = build_cache(rec, depth=10)
    for _ in range(2):  # the second round answers from memory, or after starting afresh
        for user in [*known_users(rec, 20), UNKNOWN_USER, "another unknown"]:
            want = expected(rec.recommend(str(user), k=10), user)
            assert json.loads(cache.body(str(user), 10, True)) == want
            assert cache._memo_bytes <= 2000


def test_cache_is_skipped_beyond_its_budget(rec, monkeypatch):
    assert build_cache(rec, depth=0) is None
    monkeypatch.setattr(
        hybridrec.serve.cache, "CACHE_MAX_PAIRS", len(rec.users) * len(rec.items) - 1
    )
    assert build_cache(rec) is None
    with TestClient(create_app(rec)) as c:
        assert c.app.state.holder.get().cache is None
        user = known_users(rec, 1)[0]
        assert c.get(f"/recommend/{user}").json() == expected(rec.recommend(str(user)), user)


QUERIES = [
    "",
    "k=1",
    "k=7",
    "k=8&exclude_seen=false",
    "exclude_seen=true&k=9",
    "exclude_seen=false",
    # not canonical: the middleware leaves these to FastAPI (cache or model behind it)
    "k=07",
    "exclude_seen=False",
    "exclude_seen=0",
    "k=5&k=6",
    "k=5&other=1",
    "k=5&",
    "k=%35",
    # deeper than the cache of depth 8: the model answers
    "k=9",
    "k=1000",
    # errors
    "k=0",
    "k=1001",
    "k=99999999999999999999",
    "k=",
    "k=x",
    "exclude_seen=maybe",
]


def test_cache_depth_grows_with_fewer_users_within_its_bounds():
    from hybridrec.serve import CACHE_TOP, cache_depth
    from hybridrec.serve.schemas import MAX_K

    assert cache_depth(943, 1_683) == MAX_K  # ML-100K: every k a request may ask
    assert cache_depth(943, 300) == 301  # no deeper than the catalogue (+1: lists are complete)
    assert cache_depth(10_000, 27_000) == 200
    assert cache_depth(138_000, 27_000) == CACHE_TOP  # many users: the floor
    assert cache_depth(943, 1_683, requested=8) == 8  # --cache-top wins
    assert cache_depth(943, 1_683, requested=5_000) == MAX_K


def test_default_cache_answers_deep_requests_without_the_model(tmp_path):
    """With the automatic depth a small model's k=150 (deeper than the old fixed 100) is a
    lookup, not a model call."""
    config = SyntheticConfig(num_users=30, num_items=240, num_positives=600, seed=1)
    train_csv, _ = write_synthetic_data(tmp_path, config)
    result = hybridrec.train(
        train_csv, model_options={"embedding_dim": 4, "mlp_layer_sizes": (4,)},
        train_config=TrainConfig(epochs=1, device="cpu"), show_progress=False,
    )  # fmt: skip
    own = result.recommender
    user = own.users.ids[0]
    want = own.recommend(user, k=150)
    with TestClient(create_app(own)) as cached:
        own.__class__ = Failing  # any model call fails from now on
        own.error = RuntimeError("the model was called")
        got = cached.get(f"/recommend/{user}?k=150")
    assert got.status_code == 200 and len(want) == 150
    assert got.json() == expected(want, user)


@pytest.mark.parametrize("query", QUERIES)
def test_cached_service_answers_as_the_model_does(rec, uncached, query):
    users = [*known_users(rec, 5), UNKNOWN_USER, "%201", "1%2F2", "ü"]
    with TestClient(create_app(rec, cache_top=8)) as cached:
        for user in users:
            url = f"/recommend/{user}?{query}"
            a, b = cached.get(url), uncached.get(url)
            assert a.status_code == b.status_code, url
            assert a.json() == b.json(), url
            if a.status_code == 200:
                assert a.headers["content-type"] == "application/json"
                assert int(a.headers["content-length"]) == len(a.content)


@pytest.mark.parametrize(
    ("query", "parsed"),
    [
        (b"", (10, True)),
        (b"k=3", (3, True)),
        (b"exclude_seen=false&k=1000", (1000, False)),
        (b"k=1001", None),
        (b"k=0", None),
        (b"k=03", None),
        (b"k=3&k=3", None),
        (b"exclude_seen=1", None),
        (b"k=3&x=1", None),
        (b"k=%33", None),
    ],
)
def test_fast_query(query, parsed):
    assert _fast_query(query) == parsed


def call_middleware(holder: ModelHolder, path: str, query: bytes) -> list[dict[str, Any]]:
    """Run one GET through the middleware alone; the app behind it only records the call."""
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        sent.append({"type": "passed on"})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "query_string": query}
    asyncio.run(CachedRecommendations(app, holder)(scope, None, send))
    return sent


def test_middleware_answers_canonical_requests_itself(rec):
    holder = ModelHolder(rec)
    start, body = call_middleware(holder, "/recommend/1", b"k=3&exclude_seen=false")
    assert start["status"] == 200
    assert json.loads(body["body"]) == expected(rec.recommend("1", k=3, exclude_seen=False), 1)
    for path, query in [
        ("/recommend/1", b"k=3&exclude_seen=0"),
        ("/recommend/", b""),
        ("/similar/1", b""),
        ("/recommend/1/x", b""),
    ]:
        assert call_middleware(holder, path, query) == [{"type": "passed on"}]
    assert call_middleware(ModelHolder(), "/recommend/1", b"") == [{"type": "passed on"}]


def batch_bodies(rec) -> list[dict[str, Any]]:
    users = known_users(rec, 4)
    return [
        {"user_ids": users, "k": 5},
        {"user_ids": [*users, *users[:2]], "k": 8, "exclude_seen": False},
        {"user_ids": [str(users[0]), f" {users[1]}", f"0{users[2]}", UNKNOWN_USER], "k": 3},
        {"user_ids": [users[0], 10**6, -1, 2**63, -(2**63) - 1, "ü"], "k": 2},
        {"user_ids": [], "k": 3},
        {"user_ids": users, "k": 9},  # deeper than the cache of depth 8: the model
        {"user_ids": users, "k": 3, "items": known_items(rec, 6)},  # restricted: the model
        {"item_ids": known_items(rec, 3), "k": 4},
        {"user_ids": users, "k": 0},
        {"user_ids": [1.5]},
    ]


def test_cached_batches_answer_as_the_model_does(rec, uncached):
    with TestClient(create_app(rec, cache_top=8)) as cached:
        cache = cached.app.state.holder.get().cache
        assert cache.batch(known_users(rec, 4), 5, True) is not None  # answered by the cache
        assert cache.batch(known_users(rec, 4), 9, True) is None  # too deep: the model
        for body in batch_bodies(rec):
            a, b = cached.post("/recommend", json=body), uncached.post("/recommend", json=body)
            assert a.status_code == b.status_code, body
            assert a.json() == b.json(), body
    users = [*known_users(rec, 3), UNKNOWN_USER, 10**6]
    want = [expected(x, u) for x, u in zip(rec.recommend_many(users, k=4), users, strict=True)]
    with TestClient(create_app(rec)) as cached:
        r = cached.post("/recommend", json={"user_ids": users, "k": 4})
        assert r.json() == {"results": want, "unknown_items": []}
        assert r.headers["content-type"] == "application/json"


def test_cached_service_before_startup_is_503(model_dirs):
    client = TestClient(create_app(model_dir=model_dirs[0]))  # lifespan not run: no model
    assert client.get("/recommend/1").status_code == 503


# --------------------------------------------------------------------------- reloading


def test_reload_failure_keeps_old_model(reload_client, rec, model_dirs):
    before = reload_client.get("/recommend/1", params={"k": 5}).json()
    missing = model_dirs[0].parent / "missing"
    r = reload_client.post("/admin/reload", json={"model_dir": str(missing)})
    assert r.status_code == 409
    assert str(missing) not in r.json()["detail"]  # the answer names no server paths
    assert reload_client.get("/health").json() == {"status": "ok", "model": "hybrid"}
    assert reload_client.get("/recommend/1", params={"k": 5}).json() == before
    assert before == expected(rec.recommend("1", k=5), 1)


def test_reload_swaps_model(reload_client, model_dirs, rec, rec_b):
    user = known_users(rec, 1)[0]
    before = reload_client.get(f"/recommend/{user}").json()
    r = reload_client.post("/admin/reload", json={"model_dir": str(model_dirs[1])})
    assert r.status_code == 200
    assert r.json() == {"status": "reloaded", "model": "hybrid", "model_dir": str(model_dirs[1])}
    info = reload_client.get("/model").json()
    assert info["model_dir"] == model_dirs[1].name
    assert info["num_users"] == len(rec_b.users)
    after = reload_client.get(f"/recommend/{user}").json()
    assert after == expected(rec_b.recommend(str(user)), user)
    assert after != before
    # the cached lists were rebuilt for B: every user and both settings answer as B does
    for u in known_users(rec_b, len(rec_b.users)):
        for exclude_seen in (True, False):
            flag = str(exclude_seen).lower()
            got = reload_client.get(f"/recommend/{u}?k=10&exclude_seen={flag}").json()
            assert got == expected(rec_b.recommend(str(u), exclude_seen=exclude_seen), u)
    # no body: reload the directory now served
    r = reload_client.post("/admin/reload")
    assert r.status_code == 200
    assert r.json()["model_dir"] == str(model_dirs[1])


def test_reload_under_concurrent_requests(reload_client, model_dirs, rec, rec_b):
    """4 threads x 50 requests while the model is swapped 6 times: no errors, no mixes."""
    users = known_users(rec, 10)
    answers = {  # every response must be exactly one model's answer, never a mix
        u: [expected(r.recommend(str(u), k=5), u) for r in (rec, rec_b)] for u in users
    }
    done = 0
    progress = threading.Condition()

    def hammer(worker: int) -> list[tuple[int, int | None]]:
        nonlocal done
        out = []
        for n in range(50):
            user = users[(worker + n) % len(users)]
            r = reload_client.get(f"/recommend/{user}", params={"k": 5})
            body = r.json() if r.status_code == 200 else None
            out.append(
                (r.status_code, answers[user].index(body) if body in answers[user] else None)
            )
            with progress:
                done += 1
                progress.notify_all()
        return out

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(hammer, w) for w in range(4)]
        for n in range(6):  # B, A, B, A, B, A: spread over the requests, not all at the start
            with progress:
                progress.wait_for(lambda n=n: done >= 25 * (n + 1), timeout=30)
            target = model_dirs[(n + 1) % 2]
            r = reload_client.post("/admin/reload", json={"model_dir": str(target)})
            assert r.status_code == 200
        results = [x for f in futures for x in f.result()]
    assert len(results) == 200
    assert [s for s, _ in results if s != 200] == []
    assert None not in [which for _, which in results]
    assert {which for _, which in results} == {0, 1}  # both models answered
    assert reload_client.get("/model").json()["model_dir"] == model_dirs[0].name


# --------------------------------------------------------------------------- app and server setup


def test_create_app_needs_exactly_one_source(rec, model_dirs):
    with pytest.raises(ValueError, match="exactly one"):
        create_app()
    with pytest.raises(ValueError, match="exactly one"):
        create_app(rec, model_dirs[0])


def test_before_startup_answers_503(model_dirs):
    client = TestClient(create_app(model_dir=model_dirs[0]))  # no `with`: lifespan not run
    r = client.get("/health")
    assert r.status_code == 503
    assert "no model loaded" in r.json()["detail"]


def test_injected_model_reload_without_dir_is_409(rec):
    # a recommender built in memory has no directory to reload from
    bare = hybridrec.Recommender(rec.model, rec.users, rec.items, model_name=rec.model_name)
    with TestClient(create_app(bare, admin_token="s3cret"), headers=ADMIN) as client:
        r = client.post("/admin/reload", json={})
        assert r.status_code == 409
        assert "no model_dir" in r.json()["detail"]
        assert client.get("/health").status_code == 200


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_sighup_reloads_in_background(rec, model_dirs):
    holder = ModelHolder(rec)
    first = holder.get()
    before = signal.getsignal(signal.SIGHUP)
    restore = install_reload_signal(holder)
    assert restore is not None
    try:
        handler = signal.getsignal(signal.SIGHUP)
        assert callable(handler)
        handler(signal.SIGHUP, None)  # what the interpreter does on SIGHUP
        for thread in threading.enumerate():
            if thread.name == "hybridrec-reload":
                thread.join(timeout=30)
    finally:
        restore()
    assert signal.getsignal(signal.SIGHUP) == before
    assert holder.get() is not first
    assert holder.get().model_dir == str(model_dirs[0])


def test_sighup_not_installed_off_main_thread(rec):
    results = []
    thread = threading.Thread(
        target=lambda: results.append(install_reload_signal(ModelHolder(rec)))
    )
    thread.start()
    thread.join()
    assert results == [None]


def test_serve_runs_uvicorn_with_sighup(monkeypatch, model_dirs):
    import uvicorn

    seen = {}

    def fake_run(self, sockets=None):
        seen["host"], seen["port"] = self.config.host, self.config.port
        seen["access_log"] = self.config.access_log
        seen["handler"] = signal.getsignal(signal.SIGHUP) if hasattr(signal, "SIGHUP") else None

    before = signal.getsignal(signal.SIGHUP) if hasattr(signal, "SIGHUP") else None
    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    serve(model_dirs[0], host="127.0.0.1", port=8123, log_level="warning")
    assert (seen["host"], seen["port"]) == ("127.0.0.1", 8123)
    assert seen["access_log"] is False
    if hasattr(signal, "SIGHUP"):
        assert seen["handler"] is not before  # installed while serving
        assert signal.getsignal(signal.SIGHUP) == before  # and restored afterwards


def test_cli_serve_options(monkeypatch, model_dirs, capsys):
    from hybridrec.cli import main

    calls = []
    monkeypatch.setattr(hybridrec.serve, "serve", lambda *a, **kw: calls.append((a, kw)))
    model = str(model_dirs[0])
    assert main(["serve", "--model", model, "--port", "8124"]) == 0
    assert main(["serve", "--model", model, "--cache-top", "0", "--access-log"]) == 0
    assert [kw["cache_top"] for _, kw in calls] == [None, 0]  # None: automatic depth
    assert [kw["access_log"] for _, kw in calls] == [False, True]
    assert main(["serve", "--model", model, "--cache-top", "-1"]) == 2
    assert "--cache-top must be >= 0" in capsys.readouterr().err
    assert len(calls) == 2


def test_a_422_is_short_and_never_a_500(client):
    """The error names what is wrong without echoing the input: a NaN literal (which the
    echo could not render) and a megabyte of bad ids both get a short 422."""
    for body in (b'{"user_ids": [NaN]}', b'{"user_ids": [Infinity], "k": NaN}'):
        r = client.post("/recommend", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, body
        assert r.json()["detail"][0]["loc"][0] == "body"
    huge = {"user_ids": [1.5] * 100_000, "x" * 100_000: 1}
    r = client.post("/recommend", json=huge)
    assert r.status_code == 422
    assert len(r.content) < 5_000


def test_admin_endpoints_need_a_configured_token(rec, model_dirs, monkeypatch):
    """Off without a secret (403), a bearer token compared in constant time otherwise (401
    when missing or wrong); the model keeps serving either way."""
    monkeypatch.delenv("HYBRIDREC_ADMIN_TOKEN", raising=False)
    body = {"model_dir": str(model_dirs[1])}
    with TestClient(create_app(model_dir=model_dirs[0])) as off:
        r = off.post("/admin/reload", json=body, headers=ADMIN)
        assert r.status_code == 403 and "admin endpoints are off" in r.json()["detail"]
    monkeypatch.setenv("HYBRIDREC_ADMIN_TOKEN", "from-env")
    root = os.path.commonpath([str(d) for d in model_dirs])
    with TestClient(create_app(model_dir=model_dirs[0], models_root=root)) as on:
        for headers in ({}, ADMIN, {"Authorization": "from-env"}):
            r = on.post("/admin/reload", json=body, headers=headers)
            assert r.status_code == 401, headers
        assert on.get("/model").json()["model_dir"] == model_dirs[0].name
        r = on.post("/admin/reload", json=body, headers={"Authorization": "Bearer from-env"})
        assert r.status_code == 200
        assert on.get("/model").json()["model_dir"] == model_dirs[1].name


def test_a_non_ascii_admin_token_is_compared_as_utf8(model_dirs, monkeypatch):
    """HTTP headers arrive as Latin-1; the secret is compared with the header's raw bytes,
    so a client sending the token as UTF-8 (curl from a UTF-8 shell does) gets in."""
    monkeypatch.delenv("HYBRIDREC_ADMIN_TOKEN", raising=False)
    token = "t\u00f6k\u00e9n-\u263a"
    with TestClient(create_app(model_dir=model_dirs[0], admin_token=token)) as c:
        utf8 = ("Bearer " + token).encode("utf-8")
        r = c.post("/admin/reload", headers={"Authorization": utf8})
        assert r.status_code == 200, r.text
        latin = {"Authorization": b"Bearer t\xf6k\xe9n-?"}
        assert c.post("/admin/reload", headers=latin).status_code == 401


def test_a_reload_path_with_a_nul_or_too_long_is_422(reload_client):
    for bad in ("m\u0000x", "a/" * 3000):
        r = reload_client.post("/admin/reload", json={"model_dir": bad})
        assert r.status_code == 422 and "NUL" in r.json()["detail"], bad
        assert len(r.content) < 300
    assert reload_client.get("/health").status_code == 200


def test_reload_is_confined_to_the_models_root(model_dirs, tmp_path):
    """Even with the token, a directory outside the models root (default: the served
    model's parent) is refused before anything is read."""
    with TestClient(create_app(model_dir=model_dirs[0], admin_token="s3cret"), headers=ADMIN) as c:
        for outside in (model_dirs[1], tmp_path, "/"):
            r = c.post("/admin/reload", json={"model_dir": str(outside)})
            assert r.status_code == 403 and "models root" in r.json()["detail"]
        assert c.get("/model").json()["model_dir"] == model_dirs[0].name


def test_a_batch_may_ask_for_at_most_max_results_items(client, rec):
    from hybridrec.serve.schemas import MAX_RESULTS

    users = [int(u) for u in known_users(rec, 5)]
    per_user = MAX_RESULTS // len(users)
    ok = client.post("/recommend", json={"user_ids": users, "k": min(per_user, 1000)})
    assert ok.status_code == 200
    many = users * 2_000  # 10,000 users x k=1000 = 10M items: refused before any work
    r = client.post("/recommend", json={"user_ids": many, "k": 1000})
    assert r.status_code == 422
    assert "split the request" in r.json()["detail"][0]["msg"]


def test_a_score_request_may_hold_at_most_max_score_pairs(client, rec):
    from hybridrec.serve.schemas import MAX_SCORE_PAIRS

    pair = {"user_id": known_users(rec, 1)[0], "item_id": known_items(rec, 1)[0]}
    ok = client.post("/score", json={"pairs": [pair] * MAX_SCORE_PAIRS})
    assert ok.status_code == 200 and len(ok.json()["scores"]) == MAX_SCORE_PAIRS
    r = client.post("/score", json={"pairs": [pair] * (MAX_SCORE_PAIRS + 1)})
    assert r.status_code == 422 and len(r.content) < 1000  # refused, input not echoed
    assert r.json()["detail"][0]["loc"] == ["body", "pairs"]


def test_an_oversized_body_is_a_413(client):
    import hybridrec.serve.app as app_module

    app = create_app(client.app.state.holder.current.recommender)
    for middleware in app.user_middleware:
        if middleware.cls is app_module.BodyLimit:
            middleware.kwargs["limit"] = 1000
    with TestClient(app) as limited:
        r = limited.post(
            "/recommend",
            content=b'{"user_ids": [' + b"1," * 2000 + b"1]}",
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 413 and "request body over 1000 bytes" in r.json()["detail"]
        streamed = limited.post(
            "/recommend",
            content=iter([b'{"user_ids": [', b"1," * 2000, b"1]}"]),
            headers={"content-type": "application/json"},
        )
        assert streamed.status_code == 413
        assert limited.post("/recommend", json={"user_ids": [1], "k": 2}).status_code == 200
        small = limited.post(  # a chunked body under the limit is handed on whole
            "/recommend",
            content=iter([b'{"user_ids": [1]', b', "k": 2}']),
            headers={"content-type": "application/json"},
        )
        assert small.status_code == 200 and len(small.json()["results"][0]["items"]) == 2


def test_head_is_answered_wherever_get_is(client):
    """Health checkers that use HEAD got 405 from FastAPI's GET routes."""
    for path in ("/health", "/model", "/recommend/1?k=3", "/similar/1"):
        got, head = client.get(path), client.head(path)
        assert head.status_code == got.status_code == 200, path
        assert head.content == b"" and head.headers["content-length"] == str(len(got.content))
    assert client.head("/no-such-route").status_code == 404


def test_a_path_id_that_is_not_utf8_is_400_not_another_users_answer(client, rec):
    # %FF and %C3%28 both decode to U+FFFD: answered, every such id would be one user
    for path in ("/recommend/%FF", "/recommend/a%C3%28", "/similar/%FE%FF"):
        for method in (client.get, client.head):
            response = method(path)
            assert response.status_code == 400, (path, response.text)
        assert "UTF-8" in client.get(path).json()["detail"]
    # an id that is U+FFFD itself, sent as UTF-8, is an ordinary (unknown) id
    response = client.get("/recommend/%EF%BF%BD")
    assert response.status_code == 200 and response.json()["source"] == "popularity"
    assert client.get("/recommend/caf%C3%A9").status_code == 200
