"""evaluation/metrics.py (and pointwise_metrics, which applies it): AUC and accuracy against
hand-computed values and a slow, obviously correct reference; metrics_from_ranks by hand and
by its properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridrec.errors import ConfigError
from hybridrec.evaluation import accuracy, auc, metrics_from_ranks, pointwise_metrics
from tests.helpers import IDCG2, INF, assert_metrics_equal, t

# ---------------------------------------------------------------- AUC and accuracy


def reference_auc(scores, target):
    """Share of (positive, negative) pairs ranked correctly; a tie counts one half."""
    pos = [s for s, t in zip(scores, target, strict=True) if t > 0.5]
    neg = [s for s, t in zip(scores, target, strict=True) if t <= 0.5]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize(
    ("scores", "target", "expected"),
    [
        ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),  # the classic sklearn example
        ([1.0, 2.0, 3.0], [0, 1, 1], 1.0),
        ([3.0, 2.0, 1.0], [0, 1, 1], 0.0),
        ([5.0, 5.0, 5.0, 5.0], [0, 1, 0, 1], 0.5),  # all tied
        ([1.0, 2.0, 2.0, 3.0], [0, 1, 0, 1], 0.875),  # one tied pair: (1 + .5 + 1 + 1) / 4
    ],
)
def test_auc_hand_computed(scores, target, expected):
    assert auc(torch.tensor(scores), torch.tensor(target, dtype=torch.float32)) == pytest.approx(
        expected
    )


@pytest.mark.parametrize("target", [[1, 1, 1], [0, 0, 0], []])
def test_auc_is_nan_for_one_class(target):
    scores = torch.arange(len(target), dtype=torch.float32)
    assert math.isnan(auc(scores, torch.tensor(target, dtype=torch.float32)))


def test_auc_seeded_random_with_ties():
    gen = torch.Generator().manual_seed(0)
    for n in [2, 5, 17, 60]:
        for _ in range(20):
            scores = torch.randint(0, 4, (n,), generator=gen).float()  # many ties
            target = torch.randint(0, 2, (n,), generator=gen).float()
            if target.min() == target.max():
                continue
            assert auc(scores, target) == pytest.approx(
                reference_auc(scores.tolist(), target.tolist()), abs=1e-12
            )


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-3, 3).map(float) | st.floats(-5, 5), st.booleans()),
        min_size=2,
        max_size=40,
    )
)
def test_auc_matches_pairwise_reference(rows):
    scores = [s for s, _ in rows]
    target = [float(t) for _, t in rows]
    result = auc(torch.tensor(scores, dtype=torch.float64), torch.tensor(target))
    if len(set(target)) < 2:
        assert math.isnan(result)
    else:
        assert result == pytest.approx(reference_auc(scores, target), abs=1e-9)
        assert 0.0 <= result <= 1.0


def test_auc_is_invariant_to_monotone_transforms():
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(200, generator=gen)
    target = (torch.rand(200, generator=gen) < 0.4).float()
    assert auc(scores, target) == pytest.approx(auc(torch.sigmoid(scores) * 7 + 3, target))
    assert auc(-scores, target) == pytest.approx(1 - auc(scores, target))


def test_accuracy_known_example():
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0, 0.0])
    target = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0])
    # predictions (logit > 0): 1, 0, 1, 0, 0 -> right, right, wrong, wrong, right
    assert accuracy(logits, target) == pytest.approx(3 / 5)


def test_accuracy_empty_is_nan():
    assert math.isnan(accuracy(torch.zeros(0), torch.zeros(0)))


def test_pointwise_metrics():
    logits = torch.tensor([0.0, 0.0])
    target = torch.tensor([1.0, 0.0])
    metrics = pointwise_metrics(logits, target)
    assert metrics["loss"] == pytest.approx(math.log(2))  # BCE of p = 0.5
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["auc"] == pytest.approx(0.5)
    assert all(math.isnan(v) for v in pointwise_metrics(torch.zeros(0), torch.zeros(0)).values())


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
