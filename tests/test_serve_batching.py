"""Micro-batching in the model gate: requests that wait together are answered by one call,
each exactly as it would have been alone, each failing alone, each holding its own slot."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi import HTTPException

import hybridrec
from hybridrec import TrainConfig
from hybridrec.data.synthetic import SyntheticConfig, write_synthetic_data
from hybridrec.serve.app import _recommend_known_batch, _recommend_one
from hybridrec.serve.gate import ModelGate


@pytest.fixture(scope="module")
def rec(tmp_path_factory) -> hybridrec.Recommender:
    directory: Path = tmp_path_factory.mktemp("batching")
    config = SyntheticConfig(num_users=60, num_items=50, num_positives=1200, seed=3)
    train_csv, _ = write_synthetic_data(directory, config)
    result = hybridrec.train(
        train_csv,
        model_options={"embedding_dim": 8, "mlp_layer_sizes": (16, 8)},
        train_config=TrainConfig(epochs=2, device="cpu", early_stop="none"),
    )
    return result.recommender


def test_batched_known_users_answer_exactly_as_one_at_a_time(rec):
    users = [str(u) for u in rec.users.ids[:12]]
    requests = [
        (rec, user, k, exclude_seen)
        for user, k, exclude_seen in zip(
            [*users, "nobody", users[0]],
            [1, 3, 7, 10, 49, 200, 2, 5, 11, 4, 8, 9, 6, 12],
            [True, False] * 7,
            strict=True,
        )
    ]
    batched = _recommend_known_batch(requests)
    lengths = []
    for request, answer in zip(requests, batched, strict=True):
        alone = _recommend_one(*request)
        assert answer.body == alone.body, request[1:]  # byte for byte
        lengths.append(len(json.loads(answer.body)["items"]))
        assert lengths[-1] <= request[2]
    assert max(lengths) == len(rec.items)  # the deep request that excludes nothing: all


class _Broken(hybridrec.Recommender):
    """recommend_many fails for everyone; recommend only for the user 'bad'."""

    def recommend_many(self, *args: Any, **kwargs: Any) -> Any:
        raise ValueError("batch failed")

    def recommend(self, user_id: Any, *args: Any, **kwargs: Any) -> Any:
        if user_id == "bad":
            raise ValueError("bad user")
        return super().recommend_many([user_id], *args, **kwargs)[0]


def test_a_failed_batch_is_answered_one_by_one(rec):
    broken = _Broken(rec.model, rec.users, rec.items, seen=rec.seen)
    good = str(rec.users.ids[0])
    answers = _recommend_known_batch([(broken, good, 5, True), (broken, "bad", 5, True)])
    assert answers[0].body == _recommend_one(rec, good, 5, True).body
    assert isinstance(answers[1], HTTPException) and answers[1].status_code == 422


def _blocked_gate(max_pending: int) -> tuple[ModelGate, threading.Event, threading.Event]:
    gate = ModelGate(max_pending)
    started, release = threading.Event(), threading.Event()

    def block() -> None:
        started.set()
        release.wait(10)

    gate._worker().submit(block)  # the worker is busy until released
    started.wait(10)
    return gate, started, release


def test_requests_waiting_together_are_one_call_each_failing_alone():
    gate, _, release = _blocked_gate(8)
    calls: list[list[int]] = []

    def double(batch: list[int]) -> list[int | BaseException]:
        calls.append(list(batch))
        return [ValueError("odd") if x == 3 else 2 * x for x in batch]

    async def main() -> list[Any]:
        tasks = [asyncio.ensure_future(gate.run_batched(double, x)) for x in range(5)]
        while gate.pending < 5:
            await asyncio.sleep(0.001)
        release.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(main())
    gate.close()
    assert calls == [[0, 1, 2, 3, 4]]  # one call, in arrival order
    assert results[:3] == [0, 2, 4] and results[4] == 8
    assert isinstance(results[3], ValueError)
    assert gate.pending == 0


def test_batched_requests_hold_their_slots_then_503():
    gate, _, release = _blocked_gate(3)

    async def main() -> list[Any]:
        waiting = [asyncio.ensure_future(gate.run_batched(list, x)) for x in range(3)]
        while gate.pending < 3:
            await asyncio.sleep(0.001)
        with pytest.raises(HTTPException) as refused:
            await gate.run_batched(list, 99)
        assert refused.value.status_code == 503
        assert refused.value.headers == {"Retry-After": "1"}
        waiting[0].cancel()  # a client that went away: left out, its slot freed after
        release.set()
        return await asyncio.gather(*waiting, return_exceptions=True)

    results = asyncio.run(main())
    gate.close()
    assert isinstance(results[0], asyncio.CancelledError)
    assert results[1:] == [1, 2]  # list([1, 2]) answered each with its own element
    assert gate.pending == 0


def test_a_batch_function_that_raises_fails_every_request_of_the_batch():
    gate = ModelGate(4)

    def broken(batch: list[int]) -> list[int]:
        raise RuntimeError("no")

    async def main() -> Any:
        return await asyncio.gather(
            gate.run_batched(broken, 1), gate.run_batched(broken, 2), return_exceptions=True
        )

    results = asyncio.run(main())
    gate.close()
    assert all(isinstance(r, RuntimeError) for r in results)
    assert gate.pending == 0


# ---------------------------------------------------------------- fold-ins scored together


def _same_answer(batched: Any, alone: Any) -> None:
    """One scoring call for many users rounds like one call each to float32's last bits."""
    assert batched.source == alone.source
    assert list(batched.unknown_items) == list(alone.unknown_items)
    assert list(batched.item_ids) == list(alone.item_ids)
    assert list(batched.scores) == pytest.approx(list(alone.scores), abs=1e-5)


def test_fold_ins_many_answer_as_one_at_a_time_up_to_rounding(rec):
    from hybridrec.errors import ConfigError

    items = [str(i) for i in rec.items.ids]
    asked = [
        (items[:5], 10, True),
        (items[3:20], 7, False),
        (["not an item", items[7]], 3, True),  # an unknown item is reported
        (["not an item"], 4, True),  # nothing known: the popular items, one by one
        (items[10:12], 0, True),  # a bad k fails alone
        (items[:40], 50, True),
    ]
    answers = rec.recommend_for_items_many(asked)
    assert len(answers) == len(asked)
    for (item_ids, k, exclude), answer in zip(asked, answers, strict=True):
        if k == 0:
            assert isinstance(answer, ConfigError)
            continue
        _same_answer(answer, rec.recommend_for_items(item_ids, k=k, exclude_seen=exclude))
    assert list(answers[2].unknown_items) == ["not an item"]
    assert answers[3].source == "popularity"


def test_fold_in_requests_waiting_together_are_answered_each(rec):
    from types import SimpleNamespace

    from hybridrec.serve.routes import _fold_in_batch
    from hybridrec.serve.schemas import RecommendRequest, plain

    served = SimpleNamespace(recommender=rec)
    items = [int(i) if str(i).isdigit() else i for i in rec.items.ids]
    bodies = [
        RecommendRequest(item_ids=items[:6], k=5),
        RecommendRequest(item_ids=items[6:15], k=8, exclude_seen=False),
        RecommendRequest(item_ids=[10**9], k=3),  # no known item: popularity
    ]
    answers = _fold_in_batch([(served, body) for body in bodies])
    for body, answer in zip(bodies, answers, strict=True):
        got = json.loads(answer.body)
        alone = rec.recommend_for_items(body.item_ids, k=body.k, exclude_seen=body.exclude_seen)
        assert got["source"] == alone.source
        assert [x["item_id"] for x in got["items"]] == [plain(i) for i in alone.item_ids]
        assert [x["score"] for x in got["items"]] == pytest.approx(list(alone.scores), abs=1e-5)


def test_closed_form_rows_of_many_users_are_each_users_own(rec):
    """The batched solve is the per-user solve with every user's sums in one matrix."""
    import numpy as np

    from hybridrec.recommend import fold_in

    lin = rec.linearisation()
    givens = [np.array([1, 2, 3]), np.array([4]), np.arange(5, 30)]
    many = fold_in.closed_form_rows_many(rec.model, lin, givens)
    for r, given in enumerate(givens):
        alone = fold_in.closed_form_rows(rec.model, lin, given)
        for part, own in zip(many, alone, strict=True):
            assert torch.allclose(part[r : r + 1], own, atol=1e-6)
    assert not torch.allclose(many[0][0], many[0][2])  # different items, different rows


def test_fold_ins_of_a_sequence_model_are_answered_one_by_one(tmp_path):
    """sasrec reads the items as a history (no fitted rows): the batch method answers each
    request as recommend_for_items does, exactly."""
    config = SyntheticConfig(num_users=30, num_items=25, num_positives=400, seed=4)
    train_csv, _ = write_synthetic_data(tmp_path, config)
    seq = hybridrec.train(
        train_csv, model="sasrec", model_options={"hidden_dim": 8, "max_len": 4},
        train_config=TrainConfig(epochs=1, device="cpu", early_stop="none"),
    ).recommender  # fmt: skip
    items = [str(i) for i in seq.items.ids]
    asked = [(items[:3], 5, True), (items[4:9], 2, False)]
    for (item_ids, k, exclude), got in zip(asked, seq.recommend_for_items_many(asked), strict=True):
        alone = seq.recommend_for_items(item_ids, k=k, exclude_seen=exclude)
        assert list(got.item_ids) == list(alone.item_ids)
        assert list(got.scores) == list(alone.scores)
