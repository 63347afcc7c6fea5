"""events/ (the durable event log) and what it does in the service: POST /events, the
exclusion of a known user's new items, the fold-in of a user known only to the log, the
cache's bypass, reloads that move the watermark, and a log that cannot be written (503).

In-process through FastAPI's TestClient; no sleeps, no timed assertions.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

import hybridrec
from hybridrec import TrainConfig
from hybridrec.cli import main
from hybridrec.data.synthetic import SyntheticConfig, write_synthetic_data
from hybridrec.errors import ConfigError
from hybridrec.events import Event, EventLog, EventLogUnavailable, read_events, watermark_of
from hybridrec.serve import create_app

TINY = {"embedding_dim": 8, "mlp_layer_sizes": (16, 8)}
ADMIN = {"Authorization": "Bearer s3cret"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("events_model")
    config = SyntheticConfig(num_users=80, num_items=50, num_positives=1500, seed=2)
    train_csv, val_csv = write_synthetic_data(directory, config)
    hybridrec.train(
        train_csv,
        val_csv,
        out=directory / "model",
        model_options=TINY,
        train_config=TrainConfig(epochs=1, device="cpu", seed=0),
    )
    return directory / "model"


@pytest.fixture(scope="module")
def rec(model_dir) -> hybridrec.Recommender:
    return hybridrec.load(model_dir)


@pytest.fixture
def log_path(tmp_path) -> Path:
    return tmp_path / "events.db"


@pytest.fixture
def client(rec, log_path):
    with TestClient(create_app(rec, events=log_path)) as c:
        yield c


def post(client: TestClient, events: list[dict[str, Any]]) -> Any:
    return client.post("/events", json={"events": events})


def top(client: TestClient, user: Any, k: int = 10, query: str = "") -> dict[str, Any]:
    response = client.get(f"/recommend/{user}?k={k}{query}")
    assert response.status_code == 200, response.text
    return response.json()


def ids(answer: dict[str, Any]) -> list[Any]:
    return [item["item_id"] for item in answer["items"]]


# --------------------------------------------------------------------------- the log itself


def test_log_assigns_increasing_ids_and_keeps_id_types(tmp_path):
    log = EventLog(tmp_path / "log.db")
    try:
        assert log.write([Event(1, "a"), Event("007", 2, 0.0, 5.5)]) == (1, 2)
        assert log.write([Event(2**63 - 1, -(2**63))]) == (3, 3)
        assert log.last_id() == 3
    finally:
        log.close()
    conn = sqlite3.connect(tmp_path / "log.db")
    kinds = conn.execute("SELECT typeof(user), typeof(item) FROM events ORDER BY id").fetchall()
    assert kinds == [("integer", "text"), ("text", "integer"), ("integer", "integer")]
    conn.close()
    frame, last = read_events(tmp_path / "log.db")
    assert last == 3
    assert list(frame.columns) == ["userId", "itemId", "target", "timestamp"]
    # a column holding a text id is text throughout, as the file readers make it
    assert frame["userId"].tolist() == ["1", "007", str(2**63 - 1)]
    assert frame["itemId"].tolist() == ["a", "2", str(-(2**63))]
    assert frame["target"].tolist() == [1.0, 0.0, 1.0]
    assert frame["timestamp"].isna().tolist() == [True, False, True]
    later, last = read_events(tmp_path / "log.db", after=1, user_col="u", item_col="i")
    assert last == 3 and len(later) == 2 and list(later.columns[:2]) == ["u", "i"]
    assert later["i"].dtype == np.int64 and later["i"].tolist() == [2, -(2**63)]
    none, last = read_events(tmp_path / "log.db", after=3)
    assert len(none) == 0 and last == 3


def test_concurrent_batches_are_group_committed_whole(tmp_path):
    log = EventLog(tmp_path / "log.db")
    results: dict[int, tuple[int, int]] = {}

    def client(c: int) -> None:
        for b in range(20):
            results[c * 100 + b] = log.write([Event(f"c{c}b{b}", i) for i in range(c + 1)])

    threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    frame, last = read_events(tmp_path / "log.db")
    assert last == len(frame) == sum(20 * (c + 1) for c in range(8))
    for key, (first, end) in results.items():
        c, b = divmod(key, 100)
        rows = frame.iloc[first - 1 : end]
        assert end - first + 1 == c + 1
        assert set(rows["userId"]) == {f"c{c}b{b}"}
        assert rows["itemId"].tolist() == list(range(c + 1))


def test_a_batch_that_cannot_be_written_fails_alone(tmp_path, monkeypatch):
    """A write that fails fails its own batch, nothing of it written, even when it was
    grouped with others; the writer goes on."""
    import hybridrec.events.log as log_module

    real = log_module.json.dumps

    def dumps(rows: Any, **kwargs: Any) -> str:
        if any(row[0] == "boom" for row in rows):
            raise sqlite3.OperationalError("disk I/O error")
        return real(rows, **kwargs)

    monkeypatch.setattr(log_module.json, "dumps", dumps)
    log = EventLog(tmp_path / "log.db")
    try:
        futures = [log.append([Event(u, 1), Event(u, 2)]) for u in ("a", "boom", "b")]
        with pytest.raises(EventLogUnavailable, match="I/O error"):
            futures[1].result()
        assert futures[0].result() == (1, 2) and futures[2].result() == (3, 4)
        assert log.write([Event("c", 4)]) == (5, 5)
    finally:
        log.close()
    assert read_events(tmp_path / "log.db")[0]["userId"].tolist() == ["a", "a", "b", "b", "c"]
    with pytest.raises(EventLogUnavailable, match="closed"):
        log.append([Event(5, 5)])


@pytest.mark.parametrize(
    "event",
    [
        Event(2**64, 1),
        Event(1, True),
        Event(1.5, 1),
        Event(1, 2, float("nan")),
        Event(1, 2, 1.0, float("inf")),
        Event(None, 1),
        Event(1, 2, "1"),
        Event("a\x00b", 1),
    ],  # fmt: skip
)
def test_the_python_api_refuses_what_the_log_cannot_store_exactly(tmp_path, event):
    log = EventLog(tmp_path / "log.db")
    try:
        with pytest.raises(ValueError, match="event 1"):
            log.append([Event(1, 1), event])
        assert log.write([Event(1, 1)]) == (1, 1)
    finally:
        log.close()


def test_read_events_refuses_what_is_not_an_event_log(tmp_path):
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    text = tmp_path / "notes.txt"
    text.write_text("userId,itemId\n1,2\n" * 100)
    for path in (tmp_path / "missing.db", tmp_path, other, text):
        with pytest.raises(ConfigError, match=str(path.name)):
            read_events(path)
        if path.exists() and path.is_file():
            with pytest.raises(ConfigError, match=path.name):
                EventLog(path)
    EventLog(tmp_path / "ok.db").close()
    for after in (-1, 1.5, True, "3"):
        with pytest.raises(ConfigError, match="after"):
            read_events(tmp_path / "ok.db", after)  # type: ignore[arg-type]


def test_watermark_of():
    assert watermark_of({}) == 0
    assert watermark_of({"settings": {}}) == 0
    assert watermark_of({"settings": {"watermark": {"event_id": None, "rows": 3}}}) == 0
    assert watermark_of({"settings": {"watermark": {"event_id": 41, "timestamp": 1.0}}}) == 41
    assert watermark_of({"settings": None}) == 0


# --------------------------------------------------------------------------- POST /events


def test_post_events_commits_and_answers_the_ids(client, log_path):
    # an integer spelled as text stays text in the log (the model's encoder finds 6)
    first = post(client, [{"user": 5, "item": 3}, {"user": "6", "item": 7, "target": 0}])
    assert first.status_code == 200
    assert first.json() == {"accepted": 2, "first_id": 1, "last_id": 2}
    stamped = [
        {"user": 9, "item": 1, "timestamp": 1_700_000_000},
        {"user": 9, "item": 2, "timestamp": "2024-01-01T00:00:00"},
        {"user": 9, "item": 3, "timestamp": "2024-01-01T01:00:00+01:00"},
        {"user": 9, "item": 4, "timestamp": " 12.5 ", "target": 1},
    ]
    assert post(client, stamped).json() == {"accepted": 4, "first_id": 3, "last_id": 6}
    frame, last = read_events(log_path)
    assert last == 6
    assert frame["userId"].tolist() == ["5", "6", "9", "9", "9", "9"]
    assert frame["target"].tolist() == [1.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    assert frame["timestamp"].tolist()[2:] == [1_700_000_000.0, 1704067200.0, 1704067200.0, 12.5]
    _, after = read_events(log_path, after=2)
    assert len(_) == 4 and after == 6


def test_the_largest_batch_is_parsed_off_the_event_loop_and_committed(client, log_path):
    events = [{"user": 9000 + i % 7, "item": i, "timestamp": i} for i in range(1000)]
    assert len(json.dumps({"events": events})) > 16 * 1024  # parsed in a worker thread
    assert post(client, events).json() == {"accepted": 1000, "first_id": 1, "last_id": 1000}
    frame, _ = read_events(log_path)
    assert frame["itemId"].tolist() == list(range(1000))


BAD_EVENTS = [
    ({"user": 1.5, "item": 1}, "user"),
    ({"user": True, "item": 1}, "user"),
    ({"user": 1, "item": "  "}, "item"),
    ({"user": 1, "item": 2**63}, "item"),
    ({"user": 1, "item": None}, "item"),
    ({"user": "a\u0000b", "item": 1}, "user"),  # SQLite would store "a": another user
    ({"user": 1, "item": "\u0000"}, "item"),
    ({"item": 1}, "user"),
    ({"user": 1, "item": 2, "target": "1"}, "target"),
    ({"user": 1, "item": 2, "target": True}, "target"),
    ({"user": 1, "item": 2, "timestamp": "yesterday"}, "timestamp"),
    ({"user": 1, "item": 2, "timestamp": "nan"}, "timestamp"),
    ({"user": 1, "item": 2, "timestamp": [1]}, "timestamp"),
    # pandas reads these as NaT or as the clock; Python's float() reads the last two
    ({"user": 1, "item": 2, "timestamp": ""}, "timestamp"),
    ({"user": 1, "item": 2, "timestamp": "NaT"}, "timestamp"),
    ({"user": 1, "item": 2, "timestamp": "now"}, "timestamp"),
    ({"user": 1, "item": 2, "timestamp": "today"}, "timestamp"),
    ({"user": 1, "item": 2, "timestamp": "1_000"}, "timestamp"),
    ({"user": 1, "item": 2, "timestamp": "\u0663"}, "timestamp"),
    ({"user": 1, "item": 2, "rating": 5}, "rating"),
]


@pytest.mark.parametrize(
    ("bad", "field", "fragment"),
    [
        ({"user": "new-1", "item": 1}, "user", "user ids are integers"),
        ({"user": "042", "item": 1}, "user", "user ids are integers"),  # not how 42 is written
        # int64, but read back by `update --events` as text (19 digits): never matched
        ({"user": 2**63 - 1, "item": 1}, "user", "user ids are integers"),
        ({"user": 1, "item": -(10**18)}, "item", "item ids are integers"),
        ({"user": 1, "item": "x"}, "item", "item ids are integers"),
        ({"user": 1, "item": 2, "target": 0.5}, "target", "is not 0 or 1"),
        ({"user": 1, "item": 2, "target": 5}, "target", "is not 0 or 1"),
    ],
)
def test_events_the_models_update_would_refuse_are_422(client, log_path, bad, field, fragment):
    """Acknowledged, such an event would stop every later `update --events` (its watermark
    cannot pass it): text ids for an integer-id model, labels other than 0/1 for a model
    trained without --threshold."""
    response = post(client, [{"user": 1, "item": 1}, bad])
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "events", 1, field] and fragment in error["msg"]
    assert read_events(log_path)[1] == 0  # nothing written


@pytest.mark.parametrize(("bad", "field"), BAD_EVENTS)
def test_a_bad_event_is_422_naming_its_index_and_field_and_nothing_is_written(
    client, log_path, bad, field
):
    events = [{"user": 1, "item": 1}, {"user": 2, "item": 2}, bad, {"user": 3, "item": 3}]
    response = post(client, events)
    assert response.status_code == 422
    assert len(response.content) < 1024
    locs = [error["loc"] for error in response.json()["detail"]]
    assert any(loc[:4] == ["body", "events", 2, field] for loc in locs), locs
    frame, last = read_events(log_path)
    assert len(frame) == 0 and last == 0


@pytest.mark.parametrize(
    "raw",
    [
        b'{"events": []}',
        b'{"events": [{"user": 1, "item": 2, "target": NaN}]}',
        b'{"events": [{"user": 1, "item": 2, "target": Infinity}]}',
        b'{"events": [{"user": 1, "item": 2, "timestamp": -Infinity}]}',
        b'{"events": {"user": 1}}',
        b'{"events": [], "more": 1}',
        b"[]",
        b"not json",
        json.dumps({"events": [{"user": 1, "item": i} for i in range(1001)]}).encode(),
    ],
)
def test_bad_bodies_are_422_and_nothing_is_written(client, log_path, raw):
    response = client.post("/events", content=raw)
    assert response.status_code == 422
    assert len(response.content) < 1024
    assert len(read_events(log_path)[0]) == 0


def test_without_an_event_log_post_events_says_how_to_enable_it(rec):
    with TestClient(create_app(rec)) as c:
        response = post(c, [{"user": 1, "item": 1}])
    assert response.status_code == 404
    assert "--events" in response.json()["detail"]


def test_a_locked_log_is_503_and_nothing_of_the_batch_is_written(rec, log_path):
    log = EventLog(log_path, busy_timeout=0.05)
    try:
        with TestClient(create_app(rec, events=log)) as c:
            assert post(c, [{"user": 1, "item": 1}]).status_code == 200
            other = sqlite3.connect(log_path, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            response = post(c, [{"user": 2, "item": 2}, {"user": 3, "item": 3}])
            assert response.status_code == 503
            assert len(response.content) < 1024
            assert "locked" in response.json()["detail"]
            assert response.headers["retry-after"] == "1"
            other.execute("ROLLBACK")
            other.close()
            assert post(c, [{"user": 4, "item": 4}]).json()["first_id"] == 2
    finally:
        log.close()
    assert read_events(log_path)[0]["userId"].tolist() == [1, 4]


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_log_file_removed_or_replaced_while_serving_is_503(rec, log_path, tmp_path, how):
    """The open connection would commit into a file nobody reads (and a new log would
    reuse its ids): refused, nothing acknowledged."""
    log = EventLog(log_path)
    try:
        with TestClient(create_app(rec, events=log)) as c:
            assert post(c, [{"user": 1, "item": 1}]).status_code == 200
            for path in log_path.parent.glob(log_path.name + "*"):
                path.rename(tmp_path / ("moved-" + path.name))
            if how == "replaced":
                EventLog(log_path).close()  # another, empty log at the path
            response = post(c, [{"user": 2, "item": 2}])
            assert response.status_code == 503
            assert "removed or replaced" in response.json()["detail"]
            assert str(log_path) not in response.text
    finally:
        log.close()


def test_a_read_only_log_is_503(rec, log_path):
    log = EventLog(log_path)
    try:
        log._conn.execute("PRAGMA query_only = ON")  # the writer's connection cannot write
        with TestClient(create_app(rec, events=log)) as c:
            response = post(c, [{"user": 1, "item": 1}])
        assert response.status_code == 503
        assert "read-only" in response.json()["detail"]
    finally:
        log.close()
    assert len(read_events(log_path)[0]) == 0


def test_serve_cli_refuses_a_bad_event_log(model_dir, tmp_path, capsys):
    not_a_log = tmp_path / "x.db"
    not_a_log.write_text("hello")
    for path in (tmp_path, not_a_log, tmp_path / "missing" / "e.db"):
        argv = ["serve", "--model", str(model_dir), "--port", "0", "--events", str(path)]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "event log" in err and "Traceback" not in err


# --------------------------------------------------------------------------- /recommend


def test_a_known_users_new_items_are_excluded_at_once(client, rec):
    user = int(rec.users.ids[3])
    before = top(client, user, k=10)
    assert before["source"] == "model"
    gone = ids(before)[:3]
    post(client, [{"user": user, "item": item} for item in gone])
    after = top(client, user, k=10)  # the cached fast path must not answer the stale list
    assert after["source"] == "model+events"
    assert not set(gone) & set(ids(after))
    want = rec.recommend(user, k=13)
    assert ids(after) == [i for i in want.item_ids.tolist() if i not in gone][:10]
    # the same through the model (k beyond the cached depth is not asked: uncached app below)
    assert top(client, user, k=10, query="&exclude_seen=false")["source"] == "model"
    batch = client.post("/recommend", json={"user_ids": [user, int(rec.users.ids[4])], "k": 10})
    results = batch.json()["results"]
    assert results[0] == after
    assert results[1] == top(client, int(rec.users.ids[4]), k=10)
    assert results[1]["source"] == "model"


def test_exclusion_is_the_same_without_the_cache(rec, log_path):
    user = int(rec.users.ids[7])
    with TestClient(create_app(rec, events=log_path)) as cached:
        gone = ids(top(cached, user, k=5))[:2]
        post(cached, [{"user": user, "item": item} for item in gone])
        via_cache = top(cached, user, k=8)
        via_batch = cached.post("/recommend", json={"user_ids": [user], "k": 8}).json()
    with TestClient(create_app(rec, events=log_path, cache_top=0)) as uncached:
        via_model = top(uncached, user, k=8)  # loaded from the log at startup
    assert ids(via_cache) == ids(via_model) == ids(via_batch["results"][0])
    assert via_model["source"] == "model+events"
    np.testing.assert_allclose(
        [i["score"] for i in via_cache["items"]], [i["score"] for i in via_model["items"]]
    )


def test_a_cached_list_too_short_after_the_exclusion_goes_to_the_model(rec, log_path):
    user = int(rec.users.ids[9])
    with TestClient(create_app(rec, events=log_path, cache_top=5)) as c:
        gone = ids(top(c, user, k=5))[:2]
        post(c, [{"user": user, "item": item} for item in gone])
        answer = top(c, user, k=5)
    want = rec.recommend(user, k=7).item_ids.tolist()
    assert ids(answer) == [i for i in want if i not in gone][:5]
    assert answer["source"] == "model+events"


def test_a_user_only_the_log_knows_is_folded_in_from_their_events(client, rec):
    items = [int(i) for i in rec.items.ids[:4]]
    assert top(client, 7001)["source"] == "popularity"
    post(client, [{"user": 7001, "item": i} for i in items])
    post(client, [{"user": 7001, "item": int(rec.items.ids[10]), "target": 0}])
    answer = top(client, 7001, k=10)
    assert answer["source"] == "events" and answer["user_id"] == "7001"  # as the URL spells it
    want = rec.recommend_for_items(items, k=11)  # the target-0 item is excluded, not fitted
    skip = int(rec.items.ids[10])
    assert ids(answer) == [i for i in want.item_ids.tolist() if i != skip][:10]
    assert not set(items) & set(ids(answer))
    assert top(client, 7001, k=10) == answer  # the memoised answer is the same
    batch = client.post("/recommend", json={"user_ids": ["7001", 7002], "k": 10})
    assert [r["source"] for r in batch.json()["results"]] == ["events", "popularity"]
    assert batch.json()["results"][0] == answer


def test_a_batch_of_users_only_the_log_knows_folds_each_once_in_one_call(client, rec, monkeypatch):
    """10,000 copies of two such users cost two fold-ins in one model call, not 10,000
    fits; candidates the model does not know are listed once, for the batch."""
    from hybridrec.recommend import Recommender

    post(client, [{"user": 7101, "item": int(i)} for i in rec.items.ids[:3]])
    post(client, [{"user": 7102, "item": int(i)} for i in rec.items.ids[5:9]])
    alone = {u: top(client, u, k=5) for u in (7101, 7102)}
    calls = []
    many = Recommender.recommend_for_items_many

    def counted(self, requests):
        calls.append(len(requests))
        return many(self, requests)

    monkeypatch.setattr(Recommender, "recommend_for_items_many", counted)
    users = [7101, 7102] * 5000
    batch = client.post("/recommend", json={"user_ids": users, "k": 5})
    assert batch.status_code == 200 and calls == [2]
    results = batch.json()["results"]
    assert len(results) == 10_000
    for user, result in zip(users[:4], results[:4], strict=True):
        assert ids(result) == ids(alone[user]) and result["source"] == "events"
    candidates = [int(i) for i in rec.items.ids[10:30]] + ["x" * 1000, "nope"]
    body = {"user_ids": users[:200], "k": 5, "items": candidates}
    restricted = client.post("/recommend", json=body).json()
    assert restricted["unknown_items"] == ["x" * 1000, "nope"]
    assert all(r["unknown_items"] == [] for r in restricted["results"])
    assert all(set(ids(r)) <= set(candidates[:-2]) for r in restricted["results"])
    assert len(json.dumps(restricted)) < 200 * 400  # no per-user echo of the candidates


def test_score_scores_a_user_only_the_log_knows_as_their_fold_in_ranks(client, rec):
    given = [int(i) for i in rec.items.ids[:4]]
    post(client, [{"user": 7201, "item": i} for i in given])
    answer = top(client, 7201, k=5)
    assert answer["source"] == "events"
    unseen = [int(i) for i in rec.items.ids[20:40]]
    known = int(rec.users.ids[3])
    pairs = [{"user_id": u, "item_id": i} for i in unseen for u in (7201, "7201", 7202, known)]
    response = client.post("/score", json={"pairs": pairs})
    assert response.status_code == 200, response.text
    scores = np.asarray(response.json()["scores"]).reshape(len(unseen), 4)
    np.testing.assert_array_equal(scores[:, 0], scores[:, 1])  # one user, two spellings
    # a user without events, and a known one, are scored by the model alone, as before
    np.testing.assert_allclose(scores[:, 2], rec.score([7202] * len(unseen), unseen), rtol=1e-6)
    np.testing.assert_allclose(scores[:, 3], rec.score([known] * len(unseen), unseen), rtol=1e-6)
    assert not np.allclose(scores[:, 0], scores[:, 2])  # the events changed the scores
    # ... to the scores the fold-in ranks by: /recommend's items and scores, to float noise
    fold = rec.recommend_for_items(given, k=len(rec.items.ids))
    by_item = dict(zip(fold.item_ids.tolist(), fold.scores.tolist(), strict=True))
    np.testing.assert_allclose(scores[:, 0], [by_item[i] for i in unseen], rtol=1e-4)
    shown = {item["item_id"]: item["score"] for item in answer["items"]}
    got = client.post("/score", json={"pairs": [{"user_id": 7201, "item_id": i} for i in shown]})
    np.testing.assert_allclose(got.json()["scores"], list(shown.values()), rtol=1e-4)


def test_integer_and_text_spellings_of_a_user_are_one_user(client, rec):
    user = int(rec.users.ids[12])
    gone = ids(top(client, user, k=3))[0]
    post(client, [{"user": str(user), "item": gone}])  # text "12" for an integer model
    assert gone not in ids(top(client, user, k=10))
    other = int(rec.users.ids[13])
    batch = client.post("/recommend", json={"user_ids": [other, str(user), user], "k": 10})
    results = batch.json()["results"]
    assert [r["source"] for r in results] == ["model", "model+events", "model+events"]
    assert [r["user_id"] for r in results] == [other, user, user]  # the model's own ids
    assert all(gone not in ids(r) for r in results[1:])


def _with_watermark(model_dir: Path, target: Path, event_id: int) -> Path:
    shutil.copytree(model_dir, target)
    config = json.loads((target / "config.json").read_text())
    config["settings"]["watermark"] = {"event_id": event_id, "timestamp": None, "rows": 0}
    (target / "config.json").write_text(json.dumps(config))
    return target


def test_after_a_reload_the_new_models_watermark_applies(model_dir, tmp_path, log_path):
    root = tmp_path / "models"
    root.mkdir()
    old = root / "old"
    shutil.copytree(model_dir, old)
    app = create_app(model_dir=old, events=log_path, admin_token="s3cret", models_root=root)
    with TestClient(app, headers=ADMIN) as c:
        rec = app.state.holder.get().recommender
        user = int(rec.users.ids[1])
        gone = ids(top(c, user, k=5))[:2]
        first = post(c, [{"user": user, "item": gone[0]}]).json()["last_id"]
        post(c, [{"user": user, "item": gone[1]}])
        assert not set(gone) & set(ids(top(c, user, k=10)))
        # a model that has consumed the first event: only the second one is still new
        new = _with_watermark(model_dir, root / "new", first)
        assert c.post("/admin/reload", json={"model_dir": str(new)}).status_code == 200
        answer = top(c, user, k=10)
        assert gone[0] in ids(answer) and gone[1] not in ids(answer)
        # events keep arriving after the reload and still count
        post(c, [{"user": user, "item": gone[0]}])
        assert gone[0] not in ids(top(c, user, k=10))
        # one that has consumed them all: the model's own list again
        newest = _with_watermark(model_dir, root / "newest", 10**6)
        assert c.post("/admin/reload", json={"model_dir": str(newest)}).status_code == 200
        assert top(c, user, k=10)["source"] == "model"


def test_events_of_concurrent_clients_are_all_excluded(client, rec):
    user = int(rec.users.ids[20])
    ranked = ids(top(client, user, k=20))
    threads = [
        threading.Thread(target=post, args=(client, [{"user": user, "item": item}]))
        for item in ranked[:8]
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not set(ranked[:8]) & set(ids(top(client, user, k=10)))


def test_the_log_is_flushed_when_the_app_stops(rec, log_path):
    with TestClient(create_app(rec, events=log_path)) as c:
        for n in range(5):
            post(c, [{"user": n, "item": n}])
    frame, last = read_events(log_path)
    assert last == 5 and frame["userId"].tolist() == list(range(5))
    assert isinstance(frame, pd.DataFrame)


@pytest.mark.parametrize(("sync", "pragma"), [("full", 2), ("normal", 1)])
def test_serve_opens_the_log_with_its_sync_setting_and_closes_it(
    monkeypatch, model_dir, tmp_path, sync, pragma
):
    import uvicorn

    from hybridrec.serve.run import freeze_heap

    seen: dict[str, Any] = {}

    def run(server: Any, sockets: Any = None) -> None:
        state = server.config.app.state
        seen["log"], seen["listeners"] = state.events.log, list(state.holder.listeners)
        seen["pragma"] = seen["log"]._conn.execute("PRAGMA synchronous").fetchone()[0]

    monkeypatch.setattr(uvicorn.Server, "run", run)
    argv = ["serve", "--model", str(model_dir), "--port", "0", "--events", str(tmp_path / "e.db")]
    assert main([*argv, "--events-sync", sync]) == 0
    assert seen["log"].synchronous == sync.upper() and seen["pragma"] == pragma
    assert freeze_heap in seen["listeners"]  # the heap is frozen after every model load
    with pytest.raises(EventLogUnavailable, match="closed"):  # closed when serve returns
        seen["log"].append([Event(1, 1)])


def test_with_a_threshold_model_ratings_are_events_and_count_from_the_threshold(tmp_path):
    """A model trained on ratings with --threshold 4 takes ratings as targets (its update
    thresholds them too), and only a rating >= 4 makes a new user's positive."""
    from hybridrec import DataConfig

    rng = np.random.default_rng(0)
    rows = [(u, int(i), int(rng.integers(1, 6))) for u in range(1, 41)
            for i in rng.choice(np.arange(1, 31), 6, replace=False)]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["userId", "itemId", "rating"])
    rec = hybridrec.train(
        frame, None, model_options=TINY, train_config=TrainConfig(epochs=1, device="cpu"),
        data_config=DataConfig(target_col="rating", threshold=4.0),
    ).recommender  # fmt: skip
    with TestClient(create_app(rec, events=tmp_path / "e.db")) as c:
        liked, meh = int(rec.items.ids[0]), int(rec.items.ids[1])
        events = [{"user": 9001, "item": liked, "target": 5}, {"user": 9001, "item": meh,
                                                                "target": 2.5}]  # fmt: skip
        assert post(c, events).status_code == 200
        answer = top(c, 9001, k=5)
    assert answer["source"] == "events"
    want = rec.recommend_for_items([liked], k=7).item_ids.tolist()  # fitted on 5 alone
    assert ids(answer) == [i for i in want if i not in (liked, meh)][:5]


def test_a_kept_fold_in_answer_repeats_each_requests_own_spelling(client, rec):
    """The memo is keyed by the id as given: ' 7301' first must not make '7301' answer
    with a leading space."""
    post(client, [{"user": 7301, "item": int(rec.items.ids[0])}])
    spaced = client.get("/recommend/%207301", params={"k": 4}).json()
    plain = client.get("/recommend/7301", params={"k": 4}).json()
    assert spaced["user_id"] == " 7301" and plain["user_id"] == "7301"
    assert ids(spaced) == ids(plain) and plain["source"] == "events"


def test_a_hand_edited_log_with_a_text_target_names_the_event(log_path):
    """SQLite stores any type in any column: a value that is no number was a ValueError
    traceback in `update --events`."""
    log = EventLog(log_path)
    log.write([Event(1, 2, 1.0, None), Event(3, 4, 1.0, 5.0)])
    log.close()
    with sqlite3.connect(log_path) as conn:
        conn.execute("UPDATE events SET timestamp = 'soon' WHERE id = 2")
    with pytest.raises(ConfigError, match="event 2 has timestamp 'soon', not a number"):
        read_events(log_path)


def test_text_ids_with_spaces_are_the_same_user_everywhere(tmp_path):
    """Events strip text ids, and so do lookups: " u1" is the known user u1 (was a new
    user folded from u1's events alone); a batch of one unknown user's spellings answers
    each with its own."""
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{int(i)}") for u in range(1, 31) for i in rng.choice(40, 8, replace=False)]
    frame = pd.DataFrame(rows, columns=["userId", "itemId"])
    rec = hybridrec.train(
        frame, None, model_options=TINY, train_config=TrainConfig(epochs=1, seed=0)
    ).recommender
    with TestClient(create_app(rec, events=tmp_path / "events.db")) as client:
        item = rec.recommend("u1", k=1).item_ids[0]
        assert post(client, [{"user": " u1 ", "item": item}]).status_code == 200
        spaced = top(client, "%20u1")
        assert spaced["source"] == "model+events" and spaced["user_id"] == "u1"
        assert ids(spaced) == ids(top(client, "u1")) and item not in ids(spaced)
        pairs = [{"user_id": u, "item_id": "i3"} for u in ("u1", " u1")]
        scores = client.post("/score", json={"pairs": pairs}).json()["scores"]
        assert scores[0] == pytest.approx(scores[1], abs=1e-6)
        post(client, [{"user": "zz", "item": item}])
        batch = client.post("/recommend", json={"user_ids": ["zz", " zz", "zz "], "k": 1})
        assert [r["user_id"] for r in batch.json()["results"]] == ["zz", " zz", "zz "]
