"""The event log under SIGKILL: a server killed while concurrent clients stream batches loses
no acknowledged event and keeps no partial batch, run after run on the same log.

Each run starts the service (``create_app`` with ``events=`` under the service's uvicorn
configuration, on loopback) in a process forked from a launcher that has loaded the model
once, so ten restarts cost seconds; 8 client threads post batches of 50 events, each batch
tagged with its own user id; once a number of batches have been acknowledged the server is
killed with SIGKILL, whatever it is doing. The next run's server opens the log again (the
restart), and the test reads the log: every acknowledged batch is there with exactly the ids
it was acknowledged with, and every batch in the log is whole (acknowledged or not: a batch
committed just before the kill may never have been answered). No sleeps decide anything;
deadlines only bound a hang.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import hybridrec
from hybridrec import TrainConfig
from hybridrec.data.synthetic import SyntheticConfig, write_synthetic_data
from hybridrec.events import read_events

pytestmark = pytest.mark.skipif(os.name != "posix", reason="fork and SIGKILL are POSIX")

RUNS, CLIENTS, BATCH = 10, 8, 50
WAIT = 60.0  # bound on a hang, not a measurement

#: Loads the model once, then for each line on stdin forks a server on a fresh loopback
#: port, prints "pid port", and waits for that server to die (printing "reaped").
LAUNCHER = r"""
import os, socket, sys
os.environ["OMP_NUM_THREADS"] = "1"
from hybridrec.runtime import set_num_threads
set_num_threads(1)
import uvicorn
import hybridrec
from hybridrec.serve import create_app
from hybridrec.serve.run import server_config

rec = hybridrec.load(sys.argv[1])
log = sys.argv[2]
for line in sys.stdin:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        app = create_app(rec, events=log, cache_top=0)
        config = server_config(app, "127.0.0.1", port, "critical", False, 5.0, 1000)
        uvicorn.Server(config).run(sockets=[sock])
        os._exit(0)
    sock.close()
    print(pid, port, flush=True)
    os.waitpid(pid, 0)
    print("reaped", flush=True)
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("kill_events")
    config = SyntheticConfig(num_users=30, num_items=20, num_positives=300, seed=1)
    train_csv, _ = write_synthetic_data(directory, config)
    hybridrec.train(
        train_csv,
        None,
        out=directory / "model",
        model_options={"embedding_dim": 4, "mlp_layer_sizes": (4,)},
        train_config=TrainConfig(epochs=1, device="cpu", seed=0),
    )
    return directory / "model"


def wait_ready(port: int) -> None:
    deadline = time.monotonic() + WAIT
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail("the server did not start")
        time.sleep(0.02)


def post_batch(conn: http.client.HTTPConnection, tag: int) -> tuple[int, int]:
    body = json.dumps({"events": [{"user": tag, "item": i} for i in range(BATCH)]})
    conn.request("POST", "/events", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    answer = json.loads(response.read())
    assert response.status == 200, answer  # never a 4xx/5xx while the server lives
    assert answer["accepted"] == BATCH
    return answer["first_id"], answer["last_id"]


def stream(port: int, run: int, client: int, acked: dict[int, tuple[int, int]]) -> None:
    """Post batches until the server dies; record what was acknowledged."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    for b in range(100_000):
        tag = ((run + 1) * 100 + client) * 1_000_000 + b  # an integer: the model's ids are
        try:
            acked[tag] = post_batch(conn, tag)
        except (OSError, http.client.HTTPException):
            return  # killed: this batch is unacknowledged


def check_log(log: Path, acked: dict[int, tuple[int, int]]) -> int:
    """Every acknowledged batch whole under its ids; every batch in the log whole; the
    number of events in the log."""
    frame, last = read_events(log)
    ids = range(1, last + 1)
    assert len(frame) == len(ids)  # ids 1..last, none missing, none twice
    batches = frame.groupby("userId", sort=False)
    for tag, rows in batches:
        first = int(rows.index[0]) + 1
        assert rows.index.tolist() == list(range(first - 1, first - 1 + BATCH)), tag
        assert rows["itemId"].astype(int).tolist() == list(range(BATCH)), tag
        if tag in acked:
            assert acked[tag] == (first, first + BATCH - 1), tag
    in_log = set(batches.groups)
    missing = [tag for tag in acked if tag not in in_log]
    assert missing == []  # not one acknowledged batch lost
    committed_acked = sum(len(batches.get_group(tag)) for tag in acked)
    assert committed_acked == BATCH * len(acked)
    return len(frame)


def test_sigkill_during_ingestion_loses_no_acknowledged_event(model_dir, tmp_path):
    log = tmp_path / "events.db"
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(model_dir), str(log)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    acked: dict[int, tuple[int, int]] = {}
    try:
        for run in range(RUNS + 1):  # the last start is only the restart after run 10
            launcher.stdin.write("start\n")
            launcher.stdin.flush()
            pid, port = map(int, launcher.stdout.readline().split())
            wait_ready(port)
            if run:  # after the restart: the previous runs' acknowledged events are all there
                total = check_log(log, acked)
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
                restart = 999_000_000 + run  # a tag of its own
                acked[restart] = post_batch(conn, restart)
                assert acked[restart][0] > total  # ids go on, none reused
                conn.close()
            if run == RUNS:
                os.kill(pid, signal.SIGTERM)
                assert launcher.stdout.readline().strip() == "reaped"
                break
            before = len(acked)
            clients = [
                threading.Thread(target=stream, args=(port, run, c, acked)) for c in range(CLIENTS)
            ]
            for t in clients:
                t.start()
            deadline = time.monotonic() + WAIT
            while len(acked) < before + 5 + 4 * run:  # kill at a different depth each run
                assert time.monotonic() < deadline, "ingestion stalled"
                time.sleep(0.002)
            os.kill(pid, signal.SIGKILL)
            for t in clients:
                t.join(WAIT)
            assert launcher.stdout.readline().strip() == "reaped"
        check_log(log, acked)
        assert len(acked) >= sum(5 + 4 * run for run in range(RUNS))
    finally:
        launcher.kill()
        launcher.wait()
