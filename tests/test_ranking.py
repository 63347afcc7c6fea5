"""Ranking evaluation: hand-computed cases, a slow loop reference, properties and file reading."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from hybridrec.data.encoding import IdEncoder
from hybridrec.errors import ConfigError, DataError
from hybridrec.evaluation import (
    RANKING_METRICS,
    evaluate_full,
    evaluate_sampled,
    format_metrics,
    metrics_from_ranks,
    read_candidates,
)
from hybridrec.evaluation.protocols import _sample_negatives
from hybridrec.models.mf import MatrixFactorization, MFConfig
from hybridrec.models.popularity import Popularity, PopularityConfig

ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "movielens-100k-loo"
INF = math.inf
IDCG2 = 1 + 1 / math.log2(3)  # ideal DCG of two relevant items


class DotModel(nn.Module):
    """Random user/item embeddings scored by dot product.

    With ``integer=True`` the embeddings are small integers, so every score is an exact
    integer whatever the batching, and ties are common.
    """

    def __init__(self, num_users: int, num_items: int, seed: int, integer: bool) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        if integer:
            users = torch.randint(-1, 2, (num_users, 2), generator=g).float()
            items = torch.randint(-1, 2, (num_items, 2), generator=g).float()
        else:
            users = torch.randn(num_users, 4, generator=g)
            items = torch.randn(num_items, 4, generator=g)
        self.user = nn.Parameter(users)
        self.item = nn.Parameter(items)

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return (self.user[user_idx] * self.item[item_idx]).sum(-1)

    def score_all(self, user_idx: torch.Tensor) -> torch.Tensor:
        return self.user[user_idx] @ self.item.T


class TableModel(nn.Module):
    """Scores read from a fixed (num_users, num_items) table."""

    def __init__(self, table: list[list[float]] | torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", torch.as_tensor(table, dtype=torch.float32))

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return self.table[user_idx, item_idx]

    def score_all(self, user_idx: torch.Tensor) -> torch.Tensor:
        return self.table[user_idx]


def t(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


def assert_metrics_equal(actual: dict[str, float], expected: dict[str, float]) -> None:
    assert set(actual) == set(expected)
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(actual[key]), key
        else:
            assert actual[key] == pytest.approx(value, abs=1e-6), key


# ---------------------------------------------------------------- slow reference (loops)


def reference_user(ranks: list[float], aucs: list[float], ks: list[int]) -> dict[str, float]:
    """One user's metrics straight from the definitions."""
    n = len(ranks)
    out = {}
    for k in ks:
        hits = sorted(r for r in ranks if r < k)
        idcg = sum(1 / math.log2(j + 2) for j in range(min(n, k)))
        out[f"hr@{k}"] = 1.0 if hits else 0.0
        out[f"ndcg@{k}"] = sum(1 / math.log2(r + 2) for r in hits) / idcg
        out[f"recall@{k}"] = len(hits) / n
        out[f"precision@{k}"] = len(hits) / k
        out[f"map@{k}"] = sum(sum(h <= r for h in hits) / (r + 1) for r in hits) / min(n, k)
    best = min(ranks)
    out["mrr"] = 0.0 if best == INF else 1 / (best + 1)
    out["auc"] = sum(aucs) / len(aucs) if aucs else math.nan
    return out


def reference_mean(per_user: list[dict[str, float]], ks: list[int]) -> dict[str, float]:
    keys = [f"{m}@{k}" for k in ks for m in RANKING_METRICS] + ["mrr"]
    if not per_user:
        return {key: math.nan for key in [*keys, "auc"]} | {"users": 0.0}
    out = {key: sum(u[key] for u in per_user) / len(per_user) for key in keys}
    aucs = [u["auc"] for u in per_user if not math.isnan(u["auc"])]
    out["auc"] = sum(aucs) / len(aucs) if aucs else math.nan
    out["users"] = float(len(per_user))
    return out


def reference_full(model, train, test, num_items, ks):
    """Full ranking with plain loops: candidate list per user, count scores >= the item's."""
    num_users = model.user.shape[0] if isinstance(model, DotModel) else model.table.shape[0]
    scores = model.score_all(torch.arange(num_users)).tolist()
    train_set = set(train)
    relevant: dict[int, set[int]] = {}
    unknown: dict[int, int] = {}
    for u, i in test:
        if u == 0:
            continue
        relevant.setdefault(u, set())
        unknown.setdefault(u, 0)
        if i == 0:
            unknown[u] += 1
        else:
            relevant[u].add(i)
    per_user = []
    for u in sorted(relevant):
        s = scores[u]
        rel = relevant[u]
        cands = [j for j in range(1, num_items) if (u, j) not in train_set or j in rel]
        negs = [j for j in cands if j not in rel]
        ranks, aucs = [], []
        for j in sorted(rel):
            ranks.append(sum(1 for c in cands if c != j and s[c] >= s[j]))
            if negs:
                aucs.append(sum(1 for c in negs if s[c] < s[j]) / len(negs))
        ranks += [INF] * unknown[u]
        aucs += [0.0] * unknown[u] if negs else []
        per_user.append(reference_user(ranks, aucs, ks))
    out = reference_mean(per_user, ks)
    out["unknown_test_items"] = float(sum(unknown.values()))
    out["unknown_test_users"] = float(sum(1 for u, _ in test if u == 0))
    return out


def reference_sampled(model, test, candidates, ks):
    """Sampled ranking with plain loops: each test row against its user's negatives."""
    negatives: dict[int, set[int]] = {}
    for u, i in candidates:
        if u != 0 and i != 0:
            negatives.setdefault(u, set()).add(i)
    per_query, users, skipped, unknown_items, done = [], set(), 0, 0, set()
    for u, i in test:
        if u == 0 or (i != 0 and (u, i) in done):
            continue
        done.add((u, i))
        negs = sorted(negatives.get(u, set()) - {i})
        if not negs:
            skipped += 1
            continue
        users.add(u)
        if i == 0:
            unknown_items += 1
            per_query.append(reference_user([INF], [0.0], ks))
            continue
        score = model(torch.tensor([u]), torch.tensor([i])).item()
        neg_scores = model(torch.full((len(negs),), u), torch.tensor(negs)).tolist()
        rank = sum(1 for s in neg_scores if s >= score)
        auc = sum(1 for s in neg_scores if s < score) / len(negs)
        per_query.append(reference_user([rank], [auc], ks))
    out = reference_mean(per_query, ks)
    out["users"] = float(len(users))
    out["queries"] = float(len(per_query))
    out["unknown_test_items"] = float(unknown_items)
    out["unknown_test_users"] = float(sum(1 for u, _ in test if u == 0))
    out["unknown_candidates"] = float(sum(1 for u, i in candidates if u == 0 or i == 0))
    out["test_items_without_candidates"] = float(skipped)
    return out


def random_case(seed: int):
    """Small random interactions with duplicates, unknown ids and test items also in train."""
    g = torch.Generator().manual_seed(seed)

    def ints(low: int, high: int, n: int) -> list[int]:
        return torch.randint(low, high, (n,), generator=g).tolist()

    num_users = int(ints(2, 8, 1)[0])
    num_items = int(ints(3, 25, 1)[0])
    n_train = int(ints(0, 3 * num_users * num_items // 4 + 1, 1)[0])
    train = list(zip(ints(1, num_users, n_train), ints(1, num_items, n_train), strict=True))
    n_test = int(ints(1, 2 * num_users, 1)[0])
    test = list(zip(ints(0, num_users, n_test), ints(0, num_items, n_test), strict=True))
    n_cand = int(ints(0, 4 * num_users, 1)[0])
    cands = list(zip(ints(0, num_users, n_cand), ints(0, num_items, n_cand), strict=True))
    return num_users, num_items, train, test, cands


def columns(pairs: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    if not pairs:
        return t([]), t([])
    users, items = zip(*pairs, strict=True)
    return t(list(users)), t(list(items))


# ---------------------------------------------------------------- metrics_from_ranks


def test_metrics_from_ranks_hand_computed():
    # A: relevant items at ranks 0 and 3 among 4 negatives (2 negatives above the second).
    # B: one relevant item at rank 1 among 5 negatives. C: one unrankable item (a miss).
    # D: no relevant items, ignored.
    ranks = torch.tensor([[0.0, 3.0], [1.0, INF], [INF, INF], [INF, INF]])
    neg_above = torch.tensor([[0, 2], [1, 0], [5, 0], [0, 0]])
    metrics = metrics_from_ranks(ranks, neg_above, t([2, 1, 1, 0]), t([4, 5, 5, 9]), ks=[1, 2, 3])
    ndcg_a = 1 / IDCG2  # hit at rank 0 only, two relevant items
    ndcg_b = 1 / math.log2(3)  # hit at rank 1, one relevant item
    expected = {
        "hr@1": 1 / 3,
        "ndcg@1": 1 / 3,
        "recall@1": (1 / 2) / 3,
        "precision@1": 1 / 3,
        "map@1": 1 / 3,
        "hr@2": 2 / 3,
        "ndcg@2": (ndcg_a + ndcg_b) / 3,
        "recall@2": (1 / 2 + 1) / 3,
        "precision@2": (1 / 2 + 1 / 2) / 3,
        "map@2": (1 / 2 + 1 / 2) / 3,  # A: (1/1)/min(2,2); B: (1/2)/1
        "hr@3": 2 / 3,
        "ndcg@3": (ndcg_a + ndcg_b) / 3,
        "recall@3": (1 / 2 + 1) / 3,
        "precision@3": (1 / 3 + 1 / 3) / 3,
        "map@3": (1 / 2 + 1 / 2) / 3,
        "mrr": (1 + 1 / 2 + 0) / 3,
        "auc": ((1 + 1 / 2) / 2 + 4 / 5 + 0) / 3,
        "users": 3.0,
    }
    assert_metrics_equal(metrics, expected)


def test_metrics_from_ranks_second_hit_counts_in_map_and_ndcg():
    metrics = metrics_from_ranks(
        torch.tensor([[3.0, 0.0]]), torch.tensor([[2, 0]]), t([2]), t([4]), ks=[4]
    )
    assert metrics["ndcg@4"] == pytest.approx((1 + 1 / math.log2(5)) / IDCG2)
    assert metrics["map@4"] == pytest.approx((1 / 1 + 2 / 4) / 2)
    assert metrics["recall@4"] == 1.0
    assert metrics["precision@4"] == 0.5


def test_metrics_from_ranks_no_users_is_nan():
    metrics = metrics_from_ranks(torch.zeros(0, 1), torch.zeros(0, 1), t([]), t([]), ks=[5])
    assert metrics["users"] == 0.0
    assert math.isnan(metrics["hr@5"]) and math.isnan(metrics["auc"])


@pytest.mark.parametrize("ks", [[], [0], [3, -1]])
def test_metrics_from_ranks_rejects_bad_ks(ks):
    with pytest.raises(ConfigError, match="cut-offs"):
        metrics_from_ranks(torch.zeros(1, 1), torch.zeros(1, 1), t([1]), t([1]), ks=ks)


def pessimistic_ranks(offsets: list[int], tied: list[bool], misses: int) -> list[float]:
    """Ranks a real ranking can produce: the p-th smallest is >= p, a tie group shares the
    rank of its last member, and unranked items are inf."""
    ranks = [offset + p for p, offset in enumerate(sorted(offsets))]
    for p in range(len(ranks) - 1, 0, -1):
        if tied[p % len(tied)]:
            ranks[p - 1] = ranks[p]
    return [float(r) for r in ranks] + [INF] * misses


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.builds(
            pessimistic_ranks,
            st.lists(st.integers(0, 30), max_size=4),
            st.lists(st.booleans(), min_size=1, max_size=4),
            st.integers(0, 2),
        ).filter(bool),
        min_size=1,
        max_size=6,
    )
)
def test_metrics_from_ranks_bounds_and_monotone(rows):
    width = max(len(r) for r in rows)
    ranks = torch.tensor([r + [INF] * (width - len(r)) for r in rows], dtype=torch.float64)
    neg_above = torch.where(torch.isinf(ranks), 31.0, ranks)
    ks = [1, 2, 3, 5, 10, 40]
    metrics = metrics_from_ranks(
        ranks, neg_above, t([len(r) for r in rows]), t([31] * len(rows)), ks
    )
    for key, value in metrics.items():
        if key != "users":
            assert 0.0 <= value <= 1.0 + 1e-12, key
    for name in ("hr", "recall"):
        values = [metrics[f"{name}@{k}"] for k in ks]
        assert values == sorted(values), name


# ---------------------------------------------------------------- evaluate_full


def test_evaluate_full_hand_computed():
    # User 1: train {1}; test {2, 3} tied at 5 behind item 5 -> both pessimistic rank 2.
    # User 2: train {2} but 2 is also a test item, so it stays a candidate (rank 1);
    # a second test row has an unknown item (a miss). User 0's row is skipped.
    table = [
        [0, 0, 0, 0, 0, 0],
        [0, 9, 5, 5, 3, 6],
        [0, 0, 1, 2, 0, 0],
    ]
    metrics = evaluate_full(
        TableModel(table),
        t([1, 2]),
        t([1, 2]),
        t([1, 1, 2, 2, 0]),
        t([2, 3, 2, 0, 3]),
        6,
        ks=(1, 3),
    )
    zeros = {f"{m}@1": 0.0 for m in RANKING_METRICS}
    expected = {
        **zeros,
        "hr@3": 1.0,
        "ndcg@3": (2 / math.log2(4) / IDCG2 + 1 / math.log2(3) / IDCG2) / 2,
        "recall@3": (1 + 1 / 2) / 2,
        "precision@3": (2 / 3 + 1 / 3) / 2,
        "map@3": ((2 / 3 + 2 / 3) / 2 + (1 / 2) / 2) / 2,  # tied hits: 2 hits at rank <= 2
        "mrr": (1 / 3 + 1 / 2) / 2,
        "auc": ((1 / 2 + 1 / 2) / 2 + (3 / 4 + 0) / 2) / 2,
        "users": 2.0,
        "unknown_test_items": 1.0,
        "unknown_test_users": 1.0,
    }
    assert_metrics_equal(metrics, expected)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 100_000), integer=st.booleans())
def test_evaluate_full_matches_loop_reference(seed, integer):
    num_users, num_items, train, test, _ = random_case(seed)
    model = DotModel(num_users, num_items, seed, integer)
    ks = [1, 2, 5]
    metrics = evaluate_full(model, *columns(train), *columns(test), num_items, ks=ks)
    assert_metrics_equal(metrics, reference_full(model, train, test, num_items, ks))
    for key, value in metrics.items():
        if "@" in key or key in ("mrr", "auc"):
            assert math.isnan(value) or 0.0 <= value <= 1.0 + 1e-12, key
    for name in ("hr", "recall"):
        values = [metrics[f"{name}@{k}"] for k in ks]
        assert metrics["users"] == 0 or values == sorted(values), name


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 100_000))
def test_evaluate_full_chunking_does_not_change_results(seed):
    num_users, num_items, train, test, _ = random_case(seed)
    model = DotModel(num_users, num_items, seed, integer=True)
    args = (model, *columns(train), *columns(test), num_items)
    one = evaluate_full(*args, ks=(1, 3), chunk_users=1)
    many = evaluate_full(*args, ks=(1, 3), chunk_users=1000)
    assert_metrics_equal(one, many)


def test_evaluate_full_popularity_matches_reference_and_keeps_train_mode():
    # Popularity has no parameters (only a buffer) and scores with many ties.
    num_users, num_items, train, test, _ = random_case(7)
    model = Popularity(PopularityConfig(num_users=num_users, num_items=num_items))
    model.prepare(*columns(train), torch.ones(len(train)))
    model.train()
    metrics = evaluate_full(model, *columns(train), *columns(test), num_items, ks=[1, 3])
    assert model.training

    table = TableModel(model.score_all(torch.arange(num_users)))
    assert_metrics_equal(metrics, reference_full(table, train, test, num_items, [1, 3]))


def test_evaluate_full_excludes_train_items():
    # Every user's train items score highest; the test item is the best of the rest.
    num_users, num_items = 5, 30
    g = torch.Generator().manual_seed(0)
    table = torch.rand(num_users, num_items, generator=g)
    train = [(u, i) for u in range(1, num_users) for i in range(1, 8)]
    test = [(u, 10 + u) for u in range(1, num_users)]
    for u, i in train:
        table[u, i] = 10.0
    for u, i in test:
        table[u, i] = 5.0
    metrics = evaluate_full(TableModel(table), *columns(train), *columns(test), num_items, ks=[1])
    assert metrics["hr@1"] == 1.0 and metrics["mrr"] == 1.0 and metrics["auc"] == 1.0
    # Without the train exclusion the same model misses everything at K=1.
    metrics = evaluate_full(TableModel(table), t([]), t([]), *columns(test), num_items, ks=[1])
    assert metrics["hr@1"] == 0.0


def test_evaluate_full_ties_count_against_the_model():
    model = TableModel(torch.zeros(3, 20))
    metrics = evaluate_full(model, t([]), t([]), t([1, 2]), t([4, 9]), 20, ks=(10,))
    assert metrics["hr@10"] == 0.0 and metrics["ndcg@10"] == 0.0
    assert metrics["mrr"] == pytest.approx(1 / 19)  # 18 other candidates tie above
    assert metrics["auc"] == 0.0


def test_evaluate_full_unknown_test_items_are_misses():
    table = torch.zeros(3, 10)
    table[1, 4] = table[2, 5] = 1.0  # a perfect model for the known test items
    model = TableModel(table)
    known = evaluate_full(model, t([]), t([]), t([1, 2]), t([4, 5]), 10, ks=(1,))
    assert known["hr@1"] == 1.0 and known["unknown_test_items"] == 0.0
    with_unknown = evaluate_full(model, t([]), t([]), t([1, 2, 2]), t([4, 5, 0]), 10, ks=(1,))
    assert with_unknown["unknown_test_items"] == 1.0
    assert with_unknown["recall@1"] == pytest.approx((1 + 1 / 2) / 2)
    only_unknown = evaluate_full(model, t([]), t([]), t([1, 2]), t([4, 0]), 10, ks=(1,))
    assert only_unknown["hr@1"] == 0.5 and only_unknown["users"] == 2.0


def test_evaluate_full_rejects_out_of_range_items():
    with pytest.raises(ValueError, match="num_items"):
        evaluate_full(TableModel(torch.zeros(2, 5)), t([1]), t([5]), t([1]), t([2]), 5)


def test_evaluate_full_on_matrix_factorisation_runs():
    model = MatrixFactorization(MFConfig(num_users=20, num_items=40, embedding_dim=4))
    g = torch.Generator().manual_seed(1)
    train_u, train_i = torch.randint(1, 20, (200,), generator=g), torch.randint(1, 40, (200,))
    metrics = evaluate_full(model, train_u, train_i, t(list(range(1, 20))), t([3] * 19), 40)
    assert metrics["users"] == 19.0 and 0.0 <= metrics["hr@10"] <= 1.0


# ---------------------------------------------------------------- evaluate_sampled


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 100_000), integer=st.booleans())
def test_evaluate_sampled_matches_loop_reference(seed, integer):
    num_users, num_items, train, test, cands = random_case(seed)
    model = DotModel(num_users, num_items, seed, integer)
    ks = [1, 3]
    metrics = evaluate_sampled(
        model, *columns(train), *columns(test), num_items, ks=ks, candidates=columns(cands)
    )
    expected = reference_sampled(model, test, cands, ks)
    negatives = metrics.pop("negatives")
    assert math.isnan(negatives) == (expected["queries"] == 0)
    assert_metrics_equal(metrics, expected)


def test_evaluate_sampled_hand_computed():
    # User 1: test items 2 (score 5) and 3 (score 7), negatives 1, 4 (score 6), 5.
    # The other test item never competes: item 2 has rank 1 (item 4), item 3 rank 0.
    table = [[0] * 6, [0, 1, 5, 7, 6, 2]]
    metrics = evaluate_sampled(
        TableModel(table),
        t([]),
        t([]),
        t([1, 1]),
        t([2, 3]),
        6,
        ks=(1,),
        candidates=(t([1, 1, 1, 1, 0]), t([1, 4, 5, 0, 2])),
    )
    assert metrics["hr@1"] == 0.5 and metrics["mrr"] == pytest.approx(0.75)
    assert metrics["auc"] == pytest.approx((2 / 3 + 1) / 2)
    assert metrics["users"] == 1.0 and metrics["queries"] == 2.0
    assert metrics["negatives"] == 3.0 and metrics["unknown_candidates"] == 2.0


def test_evaluate_sampled_is_deterministic_and_avoids_seen_items():
    # Seen items (train and test) score above every unseen item, the test items above
    # the rest: HR@1 = 1 exactly when no sampled negative is a seen item.
    num_users, num_items = 12, 60
    g = torch.Generator().manual_seed(3)
    table = torch.rand(num_users, num_items, generator=g)
    train = [(u, i) for u in range(1, num_users) for i in range(u, u + 15)]
    test = [(u, 40 + u % 5) for u in range(1, num_users)] + [(u, 50) for u in range(1, 4)]
    for u, i in train:
        table[u, i] = 10.0
    for u, i in test:
        table[u, i] = 5.0
    args = (TableModel(table), *columns(train), *columns(test), num_items)
    first = evaluate_sampled(*args, ks=(1,), num_negatives=20, seed=11)
    again = evaluate_sampled(*args, ks=(1,), num_negatives=20, seed=11)
    assert first == again
    assert first["negatives"] == 20.0 and first["queries"] == len(test)
    # Ties (the user's two test items score alike) would show as rank >= 1 too.
    assert first["hr@1"] == 1.0 and first["auc"] == 1.0

    all_users = t(list(range(1, num_users)))
    users, negatives = _sample_negatives(
        all_users, *columns(train), *columns(test), num_items, 20, seed=11
    )
    seen = set(train) | set(test)
    for u, row in zip(users.tolist(), negatives.tolist(), strict=True):
        assert len(set(row)) == 20 and 0 not in row
        assert not any((u, i) in seen for i in row)
    _, other = _sample_negatives(t([1, 2]), *columns(train), *columns(test), num_items, 20, seed=12)
    assert not torch.equal(other, negatives[:2])


def test_evaluate_sampled_takes_what_is_left_when_few_unseen_items():
    table = torch.zeros(2, 6)
    table[1, 5] = 1.0
    metrics = evaluate_sampled(
        TableModel(table), t([1, 1]), t([1, 2]), t([1]), t([5]), 6, ks=(1,), num_negatives=100
    )
    assert metrics["negatives"] == 2.0 and metrics["hr@1"] == 1.0
    # A user who has seen every item has no negatives and is skipped, not scored a hit.
    metrics = evaluate_sampled(
        TableModel(table), t([1, 1, 1, 1]), t([1, 2, 3, 4]), t([1]), t([5]), 6, ks=(1,)
    )
    assert metrics["queries"] == 0.0 and metrics["test_items_without_candidates"] == 1.0


def test_sampled_ties_count_against_the_model():
    model = TableModel(torch.zeros(3, 40))
    metrics = evaluate_sampled(model, t([]), t([]), t([1, 2]), t([4, 9]), 40, num_negatives=20)
    assert metrics["hr@10"] == 0.0 and metrics["auc"] == 0.0


# ---------------------------------------------------------------- read_candidates


INT_USERS = IdEncoder.fit([1, 2, 3])
INT_ITEMS = IdEncoder.fit([10, 20, 30, 40])


def test_read_candidates_wide(tiny_csv):
    path = tiny_csv("userId,neg_1,neg_2,neg_3\n1,10,20,30\n3, 40 ,99,10\n", "negs.csv")
    users, items = read_candidates(path, INT_USERS, INT_ITEMS)
    assert users.tolist() == [1, 1, 1, 3, 3, 3]
    assert items.tolist() == [1, 2, 3, 4, 0, 1]  # 99 is unknown -> 0
    assert users.dtype == items.dtype == torch.int64


def test_read_candidates_long_and_string_ids(tiny_csv):
    path = tiny_csv({"user": ["u1", "u2", "zz"], "item": ["b", "a", "b"]}, "cands.csv")
    users, items = read_candidates(
        path, IdEncoder.fit(["u1", "u2"]), IdEncoder.fit(["a", "b"]), "user", "item"
    )
    assert users.tolist() == [1, 2, 0] and items.tolist() == [2, 1, 2]


def test_read_candidates_long_parquet(tiny_csv):
    frame = pd.DataFrame({"userId": [2, 1], "itemId": [40, 10]})
    users, items = read_candidates(tiny_csv(frame, "c.parquet"), INT_USERS, INT_ITEMS)
    assert users.tolist() == [2, 1] and items.tolist() == [4, 1]


def test_read_candidates_noncanonical_ids_stay_strings(tiny_csv):
    # "010" is not the integer 10, exactly as in read_interactions.
    path = tiny_csv("userId,neg_1,neg_2\n1,010,20\n", "negs.csv")
    _, items = read_candidates(path, INT_USERS, INT_ITEMS)
    assert items.tolist()[0] == 0


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("user,neg_1\n1,10\n", r"missing user column 'userId'"),
        ("userId,neg_1,neg_2\n1,10,20\n2,30,\n", r"row 2 \(line 3\), column 'neg_2'.*blank"),
        ("userId,itemId\n1,10\n ,20\n", r"row 2 \(line 3\), column 'userId'.*blank id"),
        ("userId,itemId,neg_1\n1,10,20\n", r"ambiguous"),
        ("userId\n1\n", r"only the user column"),
        ("userId,neg_1\n", r"no rows"),
    ],
)
def test_read_candidates_errors(tiny_csv, text, match):
    with pytest.raises(DataError, match=match):
        read_candidates(tiny_csv(text, "negs.csv"), INT_USERS, INT_ITEMS)


def test_read_candidates_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv.*file not found"):
        read_candidates(tmp_path / "nope.csv", INT_USERS, INT_ITEMS)


@pytest.mark.skipif(not ML100K.exists(), reason="../shared/data not present")
def test_read_candidates_movielens_100k_loo():
    train = pd.read_csv(ML100K / "train.csv", dtype=str)
    users = IdEncoder.fit(train["userId"].astype("int64"))
    items = IdEncoder.fit(train["itemId"].astype("int64"))
    user_idx, item_idx = read_candidates(ML100K / "test_negatives.csv", users, items)
    assert len(user_idx) == len(item_idx) == 943 * 100
    assert torch.unique(user_idx).tolist() == list(range(1, 944))
    assert torch.bincount(user_idx).tolist()[1:] == [100] * 943


# ---------------------------------------------------------------- format_metrics


def test_format_metrics_full_and_sampled():
    metrics = metrics_from_ranks(
        torch.tensor([[0.0], [4.0]]), torch.zeros(2, 1), t([1, 1]), t([9, 9]), [5, 10]
    )
    full = format_metrics({**metrics, "unknown_test_items": 2.0}, "full")
    assert full.startswith("full ranking (all items not in train), 2 users:")
    assert "HR@5 1.0000" in full and "NDCG@10" in full and "MRR 0.6000" in full
    assert "2 test rows with an unknown item counted as misses" in full
    sampled = format_metrics({**metrics, "negatives": 100.0, "queries": 2.0}, "sampled")
    assert sampled.splitlines()[0] == "sampled (test item vs 100 negatives), 2 users:"
    assert len(sampled.splitlines()) == 4
