"""evaluation/protocols.py: the full and sampled ranking protocols against hand-computed
cases and a slow loop reference."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from hybridrec.evaluation import RANKING_METRICS, evaluate_full, evaluate_sampled
from hybridrec.evaluation.protocols import _sample_negatives
from hybridrec.models.mf import MatrixFactorization, MFConfig
from hybridrec.models.popularity import Popularity, PopularityConfig
from tests.helpers import IDCG2, INF, assert_metrics_equal, t


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
    out["test_items_in_train"] = float(
        sum((u, i) in train_set for u in relevant for i in relevant[u])
    )
    return out


def reference_sampled(model, test, candidates, ks, train=()):
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
    known = {(u, i) for u, i in test if u != 0 and i != 0}
    out["test_items_in_train"] = float(len(known & set(train)))
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
        "test_items_in_train": 1.0,  # user 2's item 2
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


def test_test_items_the_user_also_has_in_train_are_counted_by_both_protocols():
    table = torch.zeros(3, 10)
    table[1, 4] = table[2, 5] = 1.0
    model = TableModel(table)
    train_u, train_i = t([1, 1, 2]), t([4, 7, 8])  # user 1's test item 4 is also in train
    test_u, test_i = t([1, 1, 2, 2]), t([4, 4, 5, 0])  # a duplicate row, an unknown item
    full = evaluate_full(model, train_u, train_i, test_u, test_i, 10, ks=(1,))
    sampled = evaluate_sampled(model, train_u, train_i, test_u, test_i, 10, ks=(1,))
    assert full["test_items_in_train"] == sampled["test_items_in_train"] == 1.0
    clean = evaluate_full(model, train_u, train_i, t([2]), t([5]), 10, ks=(1,))
    assert clean["test_items_in_train"] == 0.0


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
    expected = reference_sampled(model, test, cands, ks, train)
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
