"""The service against hostile clients: connections that never finish a request, more
expensive work than it can take, and generated bodies no well-behaved client would send.

The connection tests run the real uvicorn server (the service's own configuration) on an
ephemeral loopback port and talk to it over raw sockets. Nothing here asserts a duration:
a socket timeout only bounds how long a test waits for what must happen anyway.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import uvicorn
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hybridrec
from hybridrec import TrainConfig
from hybridrec.data.synthetic import SyntheticConfig, write_synthetic_data
from hybridrec.events import read_events
from hybridrec.serve import create_app
from hybridrec.serve.connections import guarded_protocol
from hybridrec.serve.run import server_config

WAIT = 60.0  # the longest any socket read waits: a bound on a hang, not a timing assertion


@pytest.fixture(scope="module")
def rec(tmp_path_factory) -> hybridrec.Recommender:
    directory = tmp_path_factory.mktemp("hostile")
    config = SyntheticConfig(num_users=60, num_items=40, num_positives=1000, seed=3)
    train_csv, val_csv = write_synthetic_data(directory, config)
    out = directory / "model"
    options = {"embedding_dim": 8, "mlp_layer_sizes": (16, 8)}
    hybridrec.train(
        train_csv, val_csv, out=out, model_options=options, train_config=TrainConfig(epochs=1)
    )
    return hybridrec.load(out)


class Server:
    """The service's uvicorn configuration, run in a thread on a free loopback port."""

    def __init__(
        self,
        app: Any,
        header_timeout: float,
        max_connections: int,
        body_timeout: float | None = None,
    ) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = server_config(
            app, "127.0.0.1", self.port, "critical", False, header_timeout, max_connections,
            body_timeout,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + WAIT
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.server.started
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(WAIT)
        self.sock.close()

    def connect(self) -> socket.socket:
        conn = socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)
        return conn


def read_all(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def status_and_body(response: bytes) -> tuple[int, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def get(server: Server, path: str) -> tuple[int, bytes]:
    with server.connect() as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        return status_and_body(read_all(conn))


@pytest.fixture(scope="module")
def server(rec) -> Iterator[Server]:
    with Server(create_app(rec), header_timeout=0.5, max_connections=50, body_timeout=1.0) as s:
        yield s


# --------------------------------------------------------------------------- connections


def test_an_idle_connection_is_closed(server):
    """A connection that never sends a byte is closed without an answer."""
    with server.connect() as conn:
        assert read_all(conn) == b""
    assert get(server, "/health")[0] == 200  # and the server still serves


def test_incomplete_headers_get_a_408_and_are_closed(server):
    with server.connect() as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n")  # no blank line: never complete
        status, body = status_and_body(read_all(conn))
    assert status == 408 and "not complete" in json.loads(body)["detail"]


def test_a_partial_request_behind_a_complete_one_gets_its_408(server):
    """Pipelined: the first request is answered, the half-sent second one (its bytes in
    the same packet) gets the 408 a lone half-sent request gets, not a silent close."""
    with server.connect() as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\nGET /health HTTP/1.1\r\nHo")
        answers = read_all(conn)
    first, _, rest = answers.partition(b"HTTP/1.1 408")
    assert first.startswith(b"HTTP/1.1 200") and b"not complete" in rest


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /health HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHo\x00st: t\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"POST /score HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_bytes_that_are_not_http_get_a_json_400(server, raw):
    with server.connect() as conn:
        conn.sendall(raw)
        status, body = status_and_body(read_all(conn))
    assert status == 400 and "malformed HTTP request" in json.loads(body)["detail"]


def test_headers_trickled_byte_by_byte_are_cut_off(server):
    """Slowloris: every byte arrives in time, the headers never complete."""
    with server.connect() as conn:
        request = b"GET /health HTTP/1.1\r\nHost: t\r\n" + b"X-Slow: " + b"a" * 100_000
        received = b""
        for byte in request:
            try:
                conn.sendall(bytes([byte]))
            except OSError:  # closed by the server while we were sending
                break
            time.sleep(0.01)
            if b"\r\n\r\n" in (received := received + _peek(conn)):
                break
        received += _drain(conn)
    assert status_and_body(received)[0] == 408


def _peek(conn: socket.socket) -> bytes:
    conn.setblocking(False)
    try:
        return conn.recv(65536)
    except BlockingIOError:
        return b""
    finally:
        conn.setblocking(True)
        conn.settimeout(WAIT)


def _drain(conn: socket.socket) -> bytes:
    try:
        return read_all(conn)
    except ConnectionResetError:
        return b""


def test_oversized_headers_get_a_431(server):
    with server.connect() as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 200_000)
        status, body = status_and_body(_drain(conn) or b"HTTP/1.1 431 -\r\n\r\n{}")
    assert status == 431


@pytest.mark.parametrize(
    "head",
    [
        b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 80_000 + b"\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: t\r\n" + b"X-A: b\r\n" * 10_000 + b"\r\n",
        b"GET /recommend/" + b"1" * 70_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
    ],
)
def test_headers_over_the_limit_in_one_read_get_a_431(server, head):
    """Complete headers that arrive in one read were parsed before being counted: 64-128
    KB got through, and a long request line got a 400."""
    with server.connect() as conn:
        conn.sendall(head)
        status, _ = status_and_body(_drain(conn) or b"HTTP/1.1 000 -\r\n\r\n{}")
    assert status == 431


def test_a_large_body_in_the_headers_read_is_no_header_bytes(server):
    payload = json.dumps({"user_ids": [f"{u % 50 + 1:>6}" for u in range(9_000)], "k": 1})
    assert len(payload) > 70_000  # more than the header limit, sent with the headers
    with server.connect() as conn:
        conn.sendall(
            b"POST /recommend HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\n"
            b"Connection: close\r\ncontent-length: %d\r\n\r\n" % len(payload) + payload.encode()
        )
        status, _ = status_and_body(read_all(conn))
    assert status == 200


def test_an_answer_before_the_body_leaves_the_next_request_intact(rec):
    """A 401 is sent before the request's body is read: the rest of that body is not the
    next request's header bytes (it got an unasked-for 431 and the pipelined request was
    lost)."""
    body = b"x" * 200_000
    app = create_app(rec, admin_token="s3cret")
    with Server(app, 0.5, 50, body_timeout=2.0) as s, s.connect() as conn:
        conn.sendall(
            b"POST /admin/items HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(body) + body
            + b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )  # fmt: skip
        answers = read_all(conn)
    assert answers.startswith(b"HTTP/1.1 401") and answers.count(b"HTTP/1.1 ") == 2
    assert b"HTTP/1.1 200" in answers and b"431" not in answers


def test_keep_alive_still_works(server):
    """Two requests on one connection, then the idle connection is closed."""
    with server.connect() as conn:
        for _ in range(2):
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(65536)
            assert head.startswith(b"HTTP/1.1 200")
        read_all(conn)  # returns: the server closes the idle connection


def test_over_the_connection_cap_a_request_gets_a_json_503(rec):
    """With 3 connections held open, a 4th connection's request is refused cleanly; once
    they are gone the server serves again."""
    with Server(create_app(rec), header_timeout=60, max_connections=3) as server:
        held = [server.connect() for _ in range(3)]
        status, body = get(server, "/health")
        assert status == 503 and "too many open connections" in json.loads(body)["detail"]
        for conn in held:
            conn.close()
        for _ in range(1000):  # the server notices the closed connections soon
            if (status := get(server, "/health")[0]) == 200:
                break
            time.sleep(0.01)
        assert status == 200


def test_a_flood_of_connections_is_refused_at_accept(rec):
    """Beyond twice the cap, connections are closed as soon as they are accepted, so a
    flood cannot use up the process's file descriptors."""
    with Server(create_app(rec), header_timeout=60, max_connections=2) as server:
        conns = [server.connect() for _ in range(8)]
        answers = [_drain(conn) for conn in conns[4:]]  # these are closed at once
        assert all(a == b"" or a.startswith(b"HTTP/1.1 503") for a in answers)
        for conn in conns:
            conn.close()


def test_a_body_trickled_past_its_deadline_gets_a_408_and_is_closed(server):
    """Slowloris on the body: the headers are complete and quick, the body never is."""
    with server.connect() as conn:
        conn.sendall(
            b"POST /recommend HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\n"
            b"content-length: 100000\r\n\r\n{"
        )
        start, closed = time.monotonic(), b""
        while time.monotonic() - start < WAIT:  # a byte every 0.1 s: each in time
            try:
                conn.sendall(b" ")
            except OSError:  # closed by the server
                break
            if closed := _peek(conn):
                break
            time.sleep(0.1)
        answer = closed + _drain(conn)
    assert time.monotonic() - start < WAIT
    status, body = status_and_body(answer)
    assert status == 408 and "body not complete" in json.loads(body)["detail"]
    assert get(server, "/health")[0] == 200  # and the server still serves


@pytest.mark.parametrize("path", ["/recommend", "/score", "/events"])
def test_a_client_leaving_mid_body_logs_no_traceback(server, caplog, path):
    """The client's doing, not the server's: uvicorn logged 'Exception in ASGI
    application' and a ClientDisconnect traceback for each such request."""
    caplog.set_level(logging.ERROR, logger="uvicorn.error")
    with server.connect() as conn:
        conn.sendall(
            f"POST {path} HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\n"
            "content-length: 100\r\n\r\n".encode()
            + b'{"user_ids": [1'
        )
        time.sleep(0.2)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and get(server, "/health")[0] != 200:
        time.sleep(0.05)
    time.sleep(0.3)  # the app has seen the disconnect by now
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_an_answer_the_client_never_reads_is_dropped_after_the_deadline(server):
    """A client that stops reading held its connection and megabytes of buffered answer
    for ever; now the send deadline (the body timeout, 1 s here) aborts it."""
    # ~10 MB of answer (each unknown id is echoed): more than the kernel's socket buffers
    # (4 MB at most on Linux by default) take, so the rest waits in the process
    payload = json.dumps({"user_ids": [f"{i}-" + "x" * 700 for i in range(10_000)], "k": 10})
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.settimeout(WAIT)
    with conn:
        conn.connect(("127.0.0.1", server.port))
        conn.sendall(
            b"POST /recommend HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(payload) + payload.encode()
        )
        assert conn.recv(1, socket.MSG_PEEK)  # the answer has begun
        time.sleep(3.0)  # read nothing more for three deadlines
        received, ended = 0, False
        try:
            while chunk := conn.recv(65536):
                received += len(chunk)
            ended = True
        except ConnectionResetError:
            ended = True
    assert ended and received < 7_000_000  # cut off, not the whole ~10 MB answer
    assert get(server, "/health")[0] == 200


def test_a_body_sent_in_time_is_served(server):
    """The body deadline does not touch an ordinary request with a body."""
    payload = json.dumps({"user_ids": ["1"], "k": 3}).encode()
    with server.connect() as conn:
        conn.sendall(
            b"POST /recommend HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\n"
            b"Connection: close\r\ncontent-length: %d\r\n\r\n" % len(payload) + payload
        )
        status, _ = status_and_body(read_all(conn))
    assert status == 200


def test_protocol_limits_must_be_positive():
    for bad in ({"header_timeout": 0}, {"max_connections": 0}, {"max_header_bytes": 0},
                {"body_timeout": 0}):  # fmt: skip
        with pytest.raises(ValueError, match="must be positive"):
            guarded_protocol(**bad)


# --------------------------------------------------------------------------- model work


class Blocking(hybridrec.Recommender):
    """Fold-in that waits for the test to let it finish: an expensive request in progress."""

    started: threading.Semaphore
    release: threading.Event

    def recommend_for_items(self, *args: Any, **kwargs: Any) -> Any:
        self.started.release()
        assert self.release.wait(WAIT)
        return super().recommend_for_items(*args, **kwargs)

    def recommend_for_items_many(self, *args: Any, **kwargs: Any) -> Any:
        # the service's fold-ins that waited together, in one call
        self.started.release()
        assert self.release.wait(WAIT)
        return super().recommend_for_items_many(*args, **kwargs)


@pytest.fixture
def blocking(rec) -> Blocking:
    slow = Blocking(rec.model, rec.users, rec.items, model_name="hybrid", seen=rec.seen)
    slow.started, slow.release = threading.Semaphore(0), threading.Event()
    return slow


def fold_in(client: TestClient, rec: hybridrec.Recommender) -> Any:
    return client.post("/recommend", json={"item_ids": [int(i) for i in rec.items.ids[:5]]})


def test_cached_requests_are_answered_while_the_model_is_busy(blocking):
    """The event loop answers cached requests while a fold-in holds the model worker."""
    user = int(blocking.users.ids[0])
    with TestClient(create_app(blocking)) as client, ThreadPoolExecutor(1) as pool:
        expensive = pool.submit(fold_in, client, blocking)
        assert blocking.started.acquire(timeout=WAIT)  # the fold-in is running now
        for path in (f"/recommend/{user}", f"/recommend/{user}?k=3&exclude_seen=false"):
            assert client.get(path).status_code == 200
        batch = client.post("/recommend", json={"user_ids": [user], "k": 2})
        assert batch.status_code == 200
        assert not expensive.done()
        blocking.release.set()
        assert expensive.result().status_code == 200


def test_model_work_beyond_the_bound_gets_503_with_retry_after(blocking):
    """Two model requests may run or wait; the third is refused at once, not queued."""
    with TestClient(create_app(blocking, max_pending=2)) as client, ThreadPoolExecutor(2) as pool:
        first = pool.submit(fold_in, client, blocking)
        assert blocking.started.acquire(timeout=WAIT)
        second = pool.submit(fold_in, client, blocking)
        gate = client.app.state.gate
        deadline = time.monotonic() + WAIT
        while gate.pending < 2:  # the second is queued behind the first
            assert time.monotonic() < deadline, "the second request never reached the queue"
            time.sleep(0.001)
        for refused in (fold_in(client, blocking), client.post("/score", json={"pairs": []})):
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert "busy" in refused.json()["detail"]
        blocking.release.set()
        assert first.result().status_code == second.result().status_code == 200
        assert fold_in(client, blocking).status_code == 200  # the slots are free again


def test_a_reload_during_model_work_keeps_each_request_on_one_model(blocking, rec, tmp_path):
    """A request that started on the old model finishes on it while a reload swaps in a
    new one; later requests see the new one."""
    rec.save(tmp_path / "other")
    app = create_app(blocking, admin_token="t", models_root=tmp_path)
    headers = {"Authorization": "Bearer t"}
    with TestClient(app) as client, ThreadPoolExecutor(1) as pool:
        expensive = pool.submit(fold_in, client, blocking)
        assert blocking.started.acquire(timeout=WAIT)
        reload = client.post(
            "/admin/reload", json={"model_dir": str(tmp_path / "other")}, headers=headers
        )
        assert reload.status_code == 200  # not queued behind the model work
        assert type(client.app.state.holder.current.recommender) is hybridrec.Recommender
        blocking.release.set()
        assert expensive.result().status_code == 200


# --------------------------------------------------------------------------- hostile bodies

ADMIN = {"Authorization": "Bearer s3cret"}

ids = st.one_of(
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**64 + 2),
    st.integers(min_value=-(2**64), max_value=-(2**63) + 2),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.booleans(),
    st.none(),
)
leaves = st.one_of(ids, st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = ["user_ids", "item_ids", "k", "exclude_seen", "items", "pairs", "model_dir", "extra"]
field_values = st.one_of(
    values,
    st.lists(ids, max_size=30),
    st.lists(st.fixed_dictionaries({"user_id": ids, "item_id": ids}), max_size=10),
    st.integers(min_value=-5, max_value=2000),
)
bodies = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=4),
    values,
)


def deep(depth: int, opener: bytes, closer: bytes) -> bytes:
    return opener * depth + closer * depth


raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda d: deep(d, b"[", b"]"), st.integers(1, 200_000)),
    st.builds(lambda d: deep(d, b'{"a":', b"}").replace(b"}", b"1}", 1), st.integers(1, 5000)),
    st.sampled_from(
        [
            b"",
            b"null",
            b"NaN",
            b'{"k": NaN}',
            b'{"user_ids": [Infinity]}',
            b'{"user_ids": [-Infinity], "k": 1e999}',
            b'{"user_ids": [1',
            b"\xff\xfe",
        ]
    ),
    st.builds(lambda body: json.dumps(body).encode(), bodies),
)
POSTS = ("/recommend", "/score", "/admin/reload", "/admin/items", "/events")


def assert_contract(response: Any) -> None:
    """Never a 5xx; a 4xx is a short JSON object with a ``detail``."""
    assert response.status_code < 500, (response.status_code, response.content[:300])
    if response.status_code >= 400:
        assert len(response.content) < 1024, response.content[:300]
        assert response.json()["detail"]


@pytest.fixture(scope="module")
def hostile_client(rec, tmp_path_factory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("models-root")  # holds no model: a reload is refused
    # as `hybridrec serve` runs: new users' fold-ins go to the child process once it holds
    # the model (the first requests may find it loading and take the model thread's path)
    app = create_app(rec, admin_token="s3cret", models_root=root, fold_in_process=True)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


HOSTILE = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@HOSTILE
@given(body=bodies)
def test_generated_json_bodies_never_give_a_5xx(hostile_client, body):
    raw = json.dumps(body).encode()  # NaN and Infinity become literals, as a client may send
    for path in POSTS:
        response = hostile_client.post(path, content=raw, headers=ADMIN)
        assert_contract(response)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=raw_bodies)
def test_generated_raw_bodies_never_give_a_5xx(hostile_client, raw):
    for path in POSTS:
        assert_contract(hostile_client.post(path, content=raw, headers=ADMIN))


EVENT_FIELDS = ["user", "item", "target", "timestamp", "extra"]
timestamps = st.one_of(
    ids,
    st.sampled_from(["2024-01-01", "2024-02-30", "1e999", " 12 ", "nan", "T", "2024-01-01T25:00"]),
    st.datetimes().map(lambda d: d.isoformat()),
)
event = st.one_of(
    st.fixed_dictionaries(
        {"user": ids, "item": ids}, optional={"target": ids, "timestamp": timestamps}
    ),
    st.dictionaries(st.sampled_from(EVENT_FIELDS), values, max_size=5),
    values,
)
good_id = st.one_of(
    st.integers(-(2**63), 2**63 - 1), st.text(min_size=1, max_size=30).filter(str.strip)
)
good_event = st.fixed_dictionaries(
    {"user": good_id, "item": good_id},
    optional={
        "target": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-9, 9),
        "timestamp": st.floats(allow_nan=False, allow_infinity=False)
        | st.datetimes().map(lambda d: d.isoformat()),
    },
)
event_bodies = st.one_of(
    st.fixed_dictionaries({"events": st.lists(event, max_size=8)}),
    st.fixed_dictionaries({"events": st.lists(good_event, min_size=1, max_size=8)}),
    st.dictionaries(st.sampled_from(["events", "extra"]), values, max_size=2),
    values,
)


@pytest.fixture(scope="module")
def events_client(rec, tmp_path_factory) -> Iterator[tuple[TestClient, Path]]:
    log = tmp_path_factory.mktemp("events") / "events.db"
    with TestClient(create_app(rec, events=log), raise_server_exceptions=False) as client:
        yield client, log


@HOSTILE
@given(body=event_bodies)
def test_generated_event_bodies_never_give_a_5xx_and_write_all_or_nothing(events_client, body):
    client, log = events_client
    _, before = read_events(log)
    response = client.post("/events", content=json.dumps(body).encode())
    assert_contract(response)
    frame, after = read_events(log, before)
    if response.status_code == 200:
        answer = response.json()
        assert answer == {"accepted": len(body["events"]), "first_id": before + 1, "last_id": after}
        assert len(frame) == len(body["events"])
        users = [e["user"] for e in body["events"]]
        for user in users[:2]:  # the users' answers now come through their events
            assert_contract(client.get("/recommend/" + quote(str(user), safe="")))
        assert_contract(client.post("/recommend", json={"user_ids": users}))
    else:
        assert len(frame) == 0 and after == before  # nothing of a refused batch


@pytest.fixture(scope="module")
def fold_clients(rec) -> Iterator[tuple[TestClient, TestClient]]:
    """The model served as `hybridrec serve` serves it (fold-ins in a child process) and
    served without the child: the reference answers. Neither takes admin requests, so
    both keep the same model."""
    with (
        TestClient(create_app(rec, fold_in_process=True), raise_server_exceptions=False) as a,
        TestClient(create_app(rec), raise_server_exceptions=False) as b,
    ):
        folder, holder = a.app.state.fold_process, a.app.state.holder
        deadline = time.monotonic() + WAIT
        while not folder.holds(holder.current.recommender) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert folder.holds(holder.current.recommender)
        yield a, b
        assert folder.answered > 0  # the child, not the fallback, answered


fold_in_bodies = st.fixed_dictionaries(
    {"item_ids": st.lists(st.one_of(st.integers(0, 45), ids), max_size=30)},
    optional={
        "k": st.one_of(st.integers(-2, 60), ids),
        "exclude_seen": st.one_of(st.booleans(), ids),
    },
)


@HOSTILE
@given(body=fold_in_bodies)
def test_generated_fold_ins_answer_the_same_through_the_child(fold_clients, body):
    """What `hybridrec serve` answers a new user's items through its child process is
    byte-for-byte what the model thread answers, errors included."""
    raw = json.dumps(body).encode()
    served = fold_clients[0].post("/recommend", content=raw)
    assert_contract(served)
    reference = fold_clients[1].post("/recommend", content=raw)
    assert (served.status_code, served.content) == (reference.status_code, reference.content)


queries = st.dictionaries(
    st.sampled_from(["k", "exclude_seen", "x", "k "]),
    st.one_of(
        st.text(max_size=20),
        st.integers(-(2**70), 2**70).map(str),
        st.sampled_from(["NaN", "inf", "1e3", "true", "0", "1001"]),
    ),
    max_size=3,
)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(["/recommend/", "/similar/"]),
    raw_id=st.one_of(
        st.text(max_size=40), st.integers().map(str), st.text(min_size=2000, max_size=3000)
    ),
    query=queries,
)
def test_generated_urls_never_give_a_5xx(hostile_client, path, raw_id, query):
    url = (
        path
        + quote(raw_id, safe="")
        + "?"
        + "&".join(f"{quote(name)}={quote(value)}" for name, value in query.items())
    )
    assert_contract(hostile_client.get(url))


@pytest.mark.parametrize("k", ["1_0", "+10", "10.0", " 10", "\u0663", "1e1"])
def test_k_in_a_query_is_plain_digits(hostile_client, k):
    """pydantic's int parsing reads these as numbers; no client means them as k."""
    r = hostile_client.get("/recommend/1", params={"k": k})
    assert r.status_code == 422 and "digits" in r.text
    assert hostile_client.get("/recommend/1", params={"k": "10"}).status_code == 200


@pytest.mark.parametrize("flag", ["no", "off", 0, 0.0, 1, "true", None])
def test_exclude_seen_in_a_body_is_a_json_boolean(hostile_client, flag):
    body = {"user_ids": [1], "exclude_seen": flag}
    assert hostile_client.post("/recommend", json=body).status_code == 422


def test_property_suites_cover_every_endpoint(hostile_client):
    """The generated requests above reach every route but the documentation and the two
    parameterless GETs."""
    skipped = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/health", "/model"}
    routes = {getattr(r, "path", "") for r in hostile_client.app.routes} - skipped
    assert routes == {
        "/recommend/{user_id}",
        "/recommend",
        "/score",
        "/similar/{item_id}",
        "/admin/reload",
        "/admin/items",
        "/events",
    }


def test_serve_runs_uvicorn_with_the_guarded_protocol(monkeypatch, rec, tmp_path):
    """``serve()`` passes its limits to the protocol and turns WebSockets off."""
    from hybridrec.serve import serve
    from hybridrec.serve.connections import GuardedHttpProtocol

    seen = {}
    monkeypatch.setattr(
        uvicorn.Server, "run", lambda self, sockets=None: seen.update(c=self.config)
    )
    rec.save(tmp_path / "model")
    serve(tmp_path / "model", port=8125, header_timeout=2.5, max_connections=7, max_pending=3)
    config = seen["c"]
    assert issubclass(config.http, GuardedHttpProtocol)
    assert (config.http.header_timeout, config.http.max_connections) == (2.5, 7)
    assert config.ws == "none" and config.timeout_keep_alive == 2.5
    assert config.app.state.gate.max_pending == 3
