"""The cold-start protocol: ranking among a fixed candidate set, ties handled."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hybridrec.evaluation.cold import evaluate_cold


class Table(nn.Module):
    """forward(u, i) = scores[u, i]: a model whose scores are written by hand."""

    def __init__(self, scores):
        super().__init__()
        self.scores = nn.Parameter(torch.tensor(scores, dtype=torch.float32))

    def forward(self, u, i):
        return self.scores[u, i]


def test_ranks_only_among_candidates_by_hand():
    # user 1 scores items 1..5; candidates are 2, 3, 4 (item 5 scores highest but is not one)
    model = Table([[0, 0, 0, 0, 0, 0], [0, 9, 3, 2, 1, 8]])
    out = evaluate_cold(model, torch.tensor([1]), torch.tensor([3]),
                        candidates=torch.tensor([2, 3, 4]), ks=[1, 2])  # fmt: skip
    assert out["candidates"] == 3 and out["users"] == 1
    assert out["recall@1"] == 0.0 and out["recall@2"] == 1.0  # item 3 is second
    assert out["ndcg@2"] == pytest.approx(1 / math.log2(3))
    assert out["auc"] == pytest.approx(0.5)  # above item 4, below item 2


def test_ties_count_half_for_auc_and_are_broken_for_top_k():
    model = Table([[0, 0, 0, 0], [0, 1, 1, 1]])  # every candidate ties
    out = evaluate_cold(model, torch.tensor([1]), torch.tensor([2]),
                        candidates=torch.tensor([1, 2, 3]), ks=[3])  # fmt: skip
    assert out["auc"] == pytest.approx(0.5)
    assert out["recall@3"] == 1.0
    hits = [evaluate_cold(model, torch.tensor([1]), torch.tensor([2]),
                          candidates=torch.tensor([1, 2, 3]), ks=[1], seed=s)["recall@1"]
            for s in range(30)]  # fmt: skip
    assert 0 < sum(hits) < 30  # the seeded order puts the tied item first sometimes


def test_default_candidates_are_the_test_items_and_unknowns_are_skipped():
    model = Table([[0] * 5, [0, 1, 2, 3, 4], [0, 4, 3, 2, 1]])
    out = evaluate_cold(model, torch.tensor([1, 2, 0]), torch.tensor([4, 1, 2]), ks=[1])
    assert out["candidates"] == 2  # items 4 and 1 (user 0's row is skipped)
    assert out["users"] == 2 and out["recall@1"] == 1.0 and out["auc"] == 1.0
