"""The HTTP service answers exactly what the Recommender answers, and reloads never drop requests.

Everything runs in-process through FastAPI's TestClient: no server, no sockets, no sleeps.
"""

from __future__ import annotations

import json
import math
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import hybridrec
from hybridrec import TrainConfig
from hybridrec.data.synthetic import SyntheticConfig, write_synthetic_data
from hybridrec.errors import ConfigError, HybridRecError, UnknownIdError
from hybridrec.serve import ModelHolder, create_app, install_reload_signal, serve

TINY = {"embedding_dim": 8, "mlp_layer_sizes": (16, 8)}
UNKNOWN_USER = "nobody-like-this"
UNKNOWN_ITEM = "no-such-item"


def _train(directory: Path, seed: int) -> Path:
    config = SyntheticConfig(num_users=100, num_items=60, num_positives=2000, seed=seed)
    train_csv, val_csv = write_synthetic_data(directory, config)
    out = directory / "model"
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


@pytest.fixture
def reload_client(model_dirs):
    """A fresh app that loads model A in its lifespan; tests may reload it freely."""
    with TestClient(create_app(model_dir=model_dirs[0])) as c:
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
        "model_dir": str(model_dirs[0]),
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
    assert r.json() == {"results": want}
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
    assert r.json() == {"results": []}


def test_recommend_batch_restricted_items(client, rec):
    users = known_users(rec, 2)
    items = [*known_items(rec, 8), UNKNOWN_ITEM]
    body = {"user_ids": users, "k": 3, "exclude_seen": False, "items": items}
    r = client.post("/recommend", json=body)
    assert r.status_code == 200
    results = rec.recommend_many(users, k=3, exclude_seen=False, items=items)
    assert r.json() == {"results": [expected(x, u) for x, u in zip(results, users, strict=True)]}
    for result in r.json()["results"]:
        assert {x["item_id"] for x in result["items"]} <= set(items[:-1])
        assert result["unknown_items"] == [UNKNOWN_ITEM]


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
    with TestClient(create_app(failing)) as client:
        r = client.get("/recommend/1")
    assert r.status_code == status
    assert r.json() == {"detail": error.args[0]}


def test_bugs_are_not_disguised_as_user_errors(rec):
    failing = Failing(rec.model, rec.users, rec.items)
    failing.error = RuntimeError("a bug")
    with TestClient(create_app(failing), raise_server_exceptions=False) as client:
        assert client.get("/recommend/1").status_code == 500


# --------------------------------------------------------------------------- reloading


def test_reload_failure_keeps_old_model(reload_client, rec, tmp_path):
    before = reload_client.get("/recommend/1", params={"k": 5}).json()
    missing = tmp_path / "missing"
    r = reload_client.post("/admin/reload", json={"model_dir": str(missing)})
    assert r.status_code == 409
    assert str(missing) in r.json()["detail"]
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
    assert info["model_dir"] == str(model_dirs[1])
    assert info["num_users"] == len(rec_b.users)
    after = reload_client.get(f"/recommend/{user}").json()
    assert after == expected(rec_b.recommend(str(user)), user)
    assert after != before
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
    assert reload_client.get("/model").json()["model_dir"] == str(model_dirs[0])


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
    with TestClient(create_app(bare)) as client:
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
        seen["handler"] = signal.getsignal(signal.SIGHUP) if hasattr(signal, "SIGHUP") else None

    before = signal.getsignal(signal.SIGHUP) if hasattr(signal, "SIGHUP") else None
    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    serve(model_dirs[0], host="127.0.0.1", port=8123, log_level="warning")
    assert (seen["host"], seen["port"]) == ("127.0.0.1", 8123)
    if hasattr(signal, "SIGHUP"):
        assert seen["handler"] is not before  # installed while serving
        assert signal.getsignal(signal.SIGHUP) == before  # and restored afterwards
