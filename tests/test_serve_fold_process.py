"""serve/fold_process: new users' fold-ins computed in a child process answer exactly what
the model thread answers, follow model swaps, and fall back to the model thread whenever
the child cannot answer (not started, another model, dead)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

import hybridrec
from hybridrec.serve import create_app
from hybridrec.serve.fold_process import FoldInProcess
from tests.test_serve import _train


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> tuple[Path, Path]:
    return (
        _train(tmp_path_factory.mktemp("fold_a"), seed=0),  # test_serve's tiny artifacts
        _train(tmp_path_factory.mktemp("fold_b"), seed=1),
    )


@pytest.fixture(scope="module")
def folder(model_dirs):
    process = FoldInProcess()
    yield process
    process.close()


def _asked(rec, seed: int) -> list[tuple[list, int, bool]]:
    items = [int(i) for i in rec.items.ids]
    return [
        (items[seed : seed + 5], 5, True),
        (items[seed + 3 : seed + 12], 7, False),
        (items[:2] + ["no-such-item"], 3, True),
        (items[:4], 0, True),  # a bad k: its error takes its place
    ]


def _same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        if isinstance(y, Exception):
            assert type(x) is type(y) and str(x) == str(y)
        else:
            assert x.item_ids.tolist() == y.item_ids.tolist()
            assert x.scores.tolist() == y.scores.tolist()
            assert x.unknown_items == y.unknown_items


def test_the_child_answers_what_the_model_answers(folder, model_dirs):
    rec = hybridrec.load(model_dirs[0])
    other = hybridrec.load(model_dirs[1])
    assert folder.recommend_for_items_many(rec, _asked(rec, 0)) is None  # not started
    assert folder.load(rec)
    before = folder.answered
    got = folder.recommend_for_items_many(rec, _asked(rec, 1))
    assert got is not None and folder.answered == before + 4
    _same(got, rec.recommend_for_items_many(_asked(rec, 1)))
    assert isinstance(got[3], ValueError)  # the bad k, as the model thread reports it
    # a model the child does not hold: the server computes
    assert folder.recommend_for_items_many(other, _asked(other, 0)) is None
    folder.follow(other).join(timeout=120)
    assert folder.holds(other) and not folder.holds(rec)
    _same(folder.recommend_for_items_many(other, _asked(other, 2)),
          other.recommend_for_items_many(_asked(other, 2)))  # fmt: skip


def test_a_dead_child_leaves_fold_ins_to_the_server(model_dirs):
    rec = hybridrec.load(model_dirs[0])
    process = FoldInProcess()
    try:
        assert process.load(rec)
        os.kill(process._process.pid, 9)
        process._process.join(timeout=10)
        assert process.recommend_for_items_many(rec, _asked(rec, 0)) is None
        assert not process.holds(rec)
        assert process.load(rec)  # a later swap starts a new child
        assert process.recommend_for_items_many(rec, _asked(rec, 0)) is not None
    finally:
        process.close()
    assert process.recommend_for_items_many(rec, _asked(rec, 0)) is None


def test_the_service_answers_fold_ins_from_the_child(model_dirs):
    rec = hybridrec.load(model_dirs[0])
    items = [int(i) for i in rec.items.ids[:6]]
    with TestClient(create_app(rec)) as plain_client:
        want = plain_client.post("/recommend", json={"item_ids": items, "k": 5})
        bad = plain_client.post("/recommend", json={"item_ids": ["no-such-item"], "k": 5})
    app = create_app(rec, fold_in_process=True)
    with TestClient(app) as client:
        folder = app.state.fold_process
        for thread in threading.enumerate():
            if thread.name == "hybridrec-fold-in-load":
                thread.join(timeout=120)
        assert folder.holds(rec)
        got = client.post("/recommend", json={"item_ids": items, "k": 5})
        assert got.status_code == 200 and got.json() == want.json()
        assert folder.answered >= 1
        again = client.post("/recommend", json={"item_ids": ["no-such-item"], "k": 5})
        assert (again.status_code, again.json()) == (bad.status_code, bad.json())
    assert not folder.holds(rec)  # stopped with the app


def test_fold_ins_do_not_wait_for_the_model_worker(model_dirs):
    """The child's fold-ins are waited for in a thread of their own: a busy model worker
    (here: blocked) does not hold them up, and what the child cannot answer still goes to
    the model worker."""
    rec = hybridrec.load(model_dirs[0])
    items = [int(i) for i in rec.items.ids[:6]]
    app = create_app(rec, fold_in_process=True)
    with TestClient(app) as client:
        for thread in threading.enumerate():
            if thread.name == "hybridrec-fold-in-load":
                thread.join(timeout=120)
        release = threading.Event()
        busy = app.state.gate._worker().submit(release.wait, 20)  # the model worker, blocked
        try:
            got = client.post("/recommend", json={"item_ids": items, "k": 5})
            assert got.status_code == 200 and len(got.json()["items"]) == 5
            assert not busy.done()  # answered while the model worker was still blocked
        finally:
            release.set()
        busy.result(timeout=10)
        app.state.fold_process.close()  # no child: the model worker computes the fold-in
        again = client.post("/recommend", json={"item_ids": items, "k": 5})
        assert again.status_code == 200 and again.json() == got.json()


def _wait_for_child(app) -> None:
    for thread in threading.enumerate():
        if thread.name == "hybridrec-fold-in-load":
            thread.join(timeout=120)


@pytest.mark.parametrize("fault", ["killed", "stuck"])
def test_a_fold_in_whose_child_dies_or_hangs_is_answered_by_the_server(model_dirs, fault):
    """The event loop's line to the child (FoldInQueue): a child that died, or that does not
    answer within the timeout, costs the fold-in nothing but time: it is computed in the
    model worker, with the same answer, and the next model swap starts a new child."""
    import signal

    rec = hybridrec.load(model_dirs[0])
    items = [int(i) for i in rec.items.ids[:6]]
    with TestClient(create_app(rec)) as plain:
        want = plain.post("/recommend", json={"item_ids": items, "k": 5}).json()
    app = create_app(rec, fold_in_process=True)
    with TestClient(app) as client:
        _wait_for_child(app)
        folder = app.state.fold_process
        assert folder.holds(rec)
        pid = folder._process.pid
        if fault == "killed":
            os.kill(pid, signal.SIGKILL)
            folder._process.join(timeout=10)
        else:
            app.state.fold_queue.timeout = 0.5
            os.kill(pid, signal.SIGSTOP)
        try:
            got = client.post("/recommend", json={"item_ids": items, "k": 5})
            assert got.status_code == 200 and got.json() == want
            again = client.post("/recommend", json={"item_ids": items, "k": 5})
            assert again.status_code == 200 and again.json() == want
        finally:
            if fault == "stuck":
                os.kill(pid, signal.SIGKILL)  # stopped: the background stop kills it too
        for thread in threading.enumerate():  # the child is stopped in the background
            if thread.name == "hybridrec-fold-in-stop":
                thread.join(timeout=30)
        assert not folder.holds(rec)


def test_concurrent_fold_ins_through_the_queue_get_their_own_answers(folder, model_dirs):
    """Many fold-ins at once through the event loop's queue (up to FOLD_DEPTH batches in
    the pipe, the rest batched as they wait): each gets the answer it would get alone."""
    import asyncio

    from hybridrec.serve.fold_process import FoldInQueue

    rec = hybridrec.load(model_dirs[0])
    assert folder.load(rec)
    items = [int(i) for i in rec.items.ids]
    asked = [(items[j : j + 3 + j % 5], 3 + j % 4, j % 2 == 0) for j in range(30)]
    asked[7] = (items[:2], 0, True)  # a bad k fails alone

    async def all_at_once():
        queue = FoldInQueue(folder)
        try:
            return await asyncio.gather(*(queue.ask(rec, a) for a in asked))
        finally:
            queue.close()

    before = folder.answered
    got = asyncio.run(all_at_once())
    assert folder.answered == before + len(asked)  # every one answered by the child
    alone = [rec.recommend_for_items_many([a])[0] for a in asked]
    for x, y in zip(got, alone, strict=True):  # batched: equal up to float32 rounding
        if isinstance(y, Exception):
            assert type(x) is type(y) and str(x) == str(y)
        else:
            assert x.item_ids.tolist() == y.item_ids.tolist()
            assert np.allclose(x.scores, y.scores, rtol=1e-5, atol=1e-7)
