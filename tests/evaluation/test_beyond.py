"""evaluation/beyond.py: beyond-accuracy metrics on small hand-computed lists, and the top-K
lists the full protocol keeps for them."""

from __future__ import annotations

import math

import pytest
import torch

from hybridrec.evaluation.beyond import (
    ItemPopularity,
    beyond_accuracy,
    coverage,
    gini_index,
    intra_list_diversity,
)
from hybridrec.evaluation.protocols import evaluate_full, rank_full
from tests.evaluation.test_protocols import TableModel

# Training: item 1 has 4 users, item 2 two, item 3 one, item 4 none (5 rows: 0 = unknown).
TRAIN_USERS = torch.tensor([1, 1, 2, 2, 3, 4, 4, 4])
TRAIN_ITEMS = torch.tensor([1, 2, 1, 3, 1, 1, 2, 2])  # user 4's item 2 twice: counts once
# Three users' top-2 lists; user C has a single candidate left.
TOP = torch.tensor([[1, 2], [1, 3], [2, -1]])


def popularity() -> ItemPopularity:
    return ItemPopularity.from_pairs(TRAIN_USERS, TRAIN_ITEMS, num_items=5)


def test_popularity_counts_distinct_users():
    pop = popularity()
    assert pop.counts.tolist() == [0, 4, 2, 1, 0]
    assert pop.num_users == 4
    # -log2(k / 4); an item nobody had counts as one user's
    assert pop.self_information().tolist() == [2.0, 0.0, 1.0, 2.0, 2.0]


def test_tail_is_outside_the_items_making_up_80_percent():
    # 7 interactions; 80% = 5.6 is reached by items 1 and 2 (4 + 2): they are the head
    assert popularity().tail().tolist() == [False, False, False, True, True]
    # ties with the last head item are head too, whatever their order
    tied = ItemPopularity(torch.tensor([0, 3, 3, 3, 1]), 3)
    assert tied.tail().tolist() == [False, False, False, False, True]


def test_hand_computed_lists():
    metrics, per_user = beyond_accuracy(TOP, [1, 2], popularity())
    # K=2: items recommended 1:2, 2:2, 3:1, 4:0 -> 3 of 4 items covered;
    # Gini of the sorted counts [0, 1, 2, 2]: (-3*0 - 1*1 + 1*2 + 3*2) / (4 * 5) = 7/20
    assert metrics["coverage@2"] == 0.75
    assert metrics["gini@2"] == pytest.approx(0.35)
    # popularity (4+2)/2, (4+1)/2, 2/1
    assert per_user["popularity@2"].tolist() == [3.0, 2.5, 2.0]
    assert metrics["popularity@2"] == pytest.approx(2.5)
    # self-information (0+1)/2, (0+2)/2, 1/1
    assert per_user["novelty@2"].tolist() == [0.5, 1.0, 1.0]
    assert metrics["novelty@2"] == pytest.approx(2.5 / 3)
    # item 3 is the only tail item recommended
    assert per_user["tail@2"].tolist() == [0.0, 0.5, 0.0]
    assert metrics["tail@2"] == pytest.approx(1 / 6)
    # K=1: lists [1], [1], [2]: half the catalogue; sorted counts [0, 0, 1, 2] -> 7/12
    assert metrics["coverage@1"] == 0.5
    assert metrics["gini@1"] == pytest.approx(7 / 12)
    assert metrics["tail_items"] == 2 and metrics["catalogue_items"] == 4
    assert "diversity@2" not in metrics


def test_gini_extremes():
    assert gini_index(torch.tensor([0, 5, 5, 5, 5])) == 0.0  # every item equally often
    assert gini_index(torch.tensor([0, 0, 9, 0, 0])) == pytest.approx(3 / 4)  # (n - 1) / n
    assert math.isnan(gini_index(torch.zeros(5, dtype=torch.int64)))
    assert coverage(torch.tensor([7, 0, 0])) == 0.0  # the unknown item is not the catalogue


def test_intra_list_diversity_by_hand():
    # item 1: Action|Comedy (one field, 0.5 each); item 2: Action; item 3: Drama; item 4: none
    tokens = torch.tensor([[0, 0], [1, 2], [1, 0], [3, 0], [0, 0]])
    weights = torch.tensor([[0.0, 0.0], [0.5, 0.5], [1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    top = torch.tensor([[1, 2, 3], [2, 2, -1], [1, -1, -1], [1, 4, -1]])
    ild = intra_list_diversity(top, tokens, weights)
    near = 1 - 0.5 / math.sqrt(0.5)  # 1 - cos(items 1 and 2)
    assert ild[0].item() == pytest.approx((near + 1 + 1) / 3)
    assert ild[1].item() == pytest.approx(0.0)  # the same item twice: identical
    assert math.isnan(ild[2].item())  # one item: no pair
    assert ild[3].item() == pytest.approx(1.0)  # no attributes: similar to nothing
    metrics, per_user = beyond_accuracy(top, [3], popularity(), (tokens, weights))
    expected = ((near + 2) / 3 + 0.0 + 1.0) / 3  # the mean over lists with a pair
    assert metrics["diversity@3"] == pytest.approx(expected)


def test_full_protocol_keeps_top_lists_from_its_own_scores():
    # user 1 trained on item 2, its test item is 3; scores tie on items 1, 3 and 4
    table = [[0.0] * 5, [0.0, 5.0, 9.0, 5.0, 5.0], [0.0, 1.0, 2.0, 3.0, 4.0]]
    model = TableModel(table)
    args = (model, torch.tensor([1, 2]), torch.tensor([2, 4]), torch.tensor([1, 2]),
            torch.tensor([3, 1]), 5)  # fmt: skip
    result = rank_full(*args, ks=(2, 3), keep_top=True)
    # user 1: item 2 is seen; ties 1, 3, 4 go to the lower index. user 2: item 4 seen
    assert result.top.tolist() == [[1, 3, 4], [3, 2, 1]]
    assert result.users.tolist() == [1, 2]
    assert result.metrics == evaluate_full(*args, ks=(2, 3))
    # per-user values average to the reported metrics; ranks are pessimistic (user 1's
    # item 3 ties with two others: rank 2), the lists break ties by index
    assert result.per_user["hr@2"].tolist() == [0.0, 0.0]
    assert result.per_user["hr@3"].tolist() == [1.0, 1.0]
    assert result.per_user["ndcg@3"].mean().item() == result.metrics["ndcg@3"]
    # fewer candidates than K: padded with -1
    small = rank_full(*args, ks=(5,), keep_top=True)
    assert small.top[0].tolist() == [1, 3, 4, -1, -1]
