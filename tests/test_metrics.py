"""AUC and accuracy against hand-computed values and a slow, obviously correct reference."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridrec.evaluation import accuracy, auc, pointwise_metrics


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
