"""sampled_softmax.py: the catalogue softmax, exact below the threshold and estimated with
shared log-Q-corrected negatives above it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hybridrec.sampled_softmax import KnownItems, SharedNegatives, known_bias


def _queries(seed: int = 0, rows: int = 6, items: int = 30, dim: int = 4):
    g = torch.Generator().manual_seed(seed)
    table = nn.Embedding(items, dim)
    with torch.no_grad():
        table.weight.copy_(torch.randn(items, dim, generator=g))
    queries = torch.randn(rows, dim, generator=g)
    targets = torch.randint(1, items, (rows,), generator=g)
    return queries, table, targets


@pytest.mark.parametrize("power", [0.0, 1.0])
def test_sampled_softmax_tends_to_the_exact_loss(power):
    """Importance-sampled partition function: with many draws the loss is the exact one,
    whatever the proposal (uniform or popularity-skewed)."""
    queries, table, targets = _queries()
    counts = torch.arange(30) ** 2  # a skewed "popularity"
    exact, _ = SharedNegatives(counts, 29).loss(queries, table, targets)
    sampled = SharedNegatives(counts, 200_000, power=power, exact=False)
    loss, _ = sampled.loss(queries, table, targets, generator=torch.Generator().manual_seed(1))
    assert loss.item() == pytest.approx(exact.item(), rel=0.01)
    few = SharedNegatives(counts, 5, power=power, exact=False)
    rough, _ = few.loss(queries, table, targets, generator=torch.Generator().manual_seed(1))
    assert abs(rough.item() - exact.item()) > 1e-4  # a real estimate, not the exact path


def test_sampled_softmax_masks_accidental_hits_and_costs_s_columns():
    queries, table, targets = _queries(rows=3, items=10)
    neg = SharedNegatives(torch.ones(10), 4, exact=False)
    candidates = neg.candidates(torch.Generator().manual_seed(0))
    assert candidates.shape == (4,) and bool((candidates >= 1).all())
    # a batch whose positive is every candidate: all negatives masked, loss 0
    only = SharedNegatives(torch.tensor([0, 1]), 3, exact=False)  # one known item
    loss, hits = only.loss(queries[:1], nn.Embedding(2, 4), torch.tensor([1]))
    assert loss.item() == pytest.approx(0.0, abs=1e-6) and hits.item() == 1


def test_exact_mode_below_the_threshold_matches_a_dense_softmax():
    queries, table, targets = _queries()
    loss, _ = SharedNegatives(torch.ones(30), 2048).loss(queries, table, targets)
    logits = queries @ table.weight.T
    logits[:, 0] = -torch.inf
    assert loss.item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, targets).item(), rel=1e-6
    )


def test_log_sum_exp_gradient_and_accidental_hits():
    from hybridrec.sampled_softmax import _LogSumExp, accidental_hits

    x = torch.randn(3, 5, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(_LogSumExp.apply, (x,))
    assert torch.allclose(_LogSumExp.apply(x), torch.logsumexp(x, 1))
    # float32 rows as training meets them: wide logits, and hits masked with the lowest float
    wide = torch.randn(4, 300) * 30
    wide[1, ::3] = torch.finfo(torch.float32).min
    wide[2] = torch.finfo(torch.float32).min  # every candidate masked: finite, not NaN
    assert torch.allclose(_LogSumExp.apply(wide), torch.logsumexp(wide, 1), rtol=1e-6)
    candidates = torch.randint(1, 6, (40,))
    targets = torch.randint(1, 6, (7,))
    rows, cols = accidental_hits(candidates, targets)
    expected = (candidates[None, :] == targets[:, None]).nonzero()
    got = torch.stack([rows, cols], 1)
    assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, expected.tolist()))


def test_sampled_loss_counts_repeated_draws_once_each_draw():
    """Scoring each distinct drawn item once, weighted by its count, is the estimator over
    all S draws (with repeats), to rounding."""
    torch.manual_seed(0)
    counts = torch.cat([torch.zeros(1), torch.arange(200, 0, -1).float() ** 2])  # skewed
    negatives = SharedNegatives(counts, 64)
    assert not negatives.exact
    table = nn.Embedding(201, 4)
    queries, targets = torch.randn(6, 4), torch.randint(1, 201, (6,))
    loss, _ = negatives.loss(queries, table, targets, generator=torch.Generator().manual_seed(3))
    drawn = negatives.candidates(torch.Generator().manual_seed(3))
    assert len(torch.unique(drawn)) < len(drawn)  # the case under test: repeats
    logits = queries @ table(drawn).T - negatives._log_expected[drawn]
    logits = logits.masked_fill(drawn[None, :] == targets[:, None], -torch.inf)
    positive = (queries * table(targets)).sum(-1)
    every_draw = torch.nn.functional.softplus(torch.logsumexp(logits, 1) - positive).mean()
    assert torch.allclose(loss, every_draw, rtol=1e-5, atol=1e-6)


def _known_case():
    """Rows 0-2 of group 0 (which knows items 3, 7 and each row's target) and rows 3-5 of
    group 1 (knows 2, 9); 0 pads a group's items."""
    queries, table, targets = _queries()
    group = torch.tensor([0, 0, 0, 1, 1, 1])
    group_items = [[0, 3, 7, *targets[:3].tolist()], [2, 9, *targets[3:].tolist(), 0]]
    item_group = torch.tensor([g for g, row in enumerate(group_items) for _ in row])
    items = torch.tensor([item for row in group_items for item in row])
    return queries, table, targets, KnownItems(group, item_group, items, 2)


def _excluded_dense_loss(queries, table, targets, known):
    """The exact softmax with each row's known items (its target aside) dropped."""
    logits = queries @ table.weight.T
    logits[:, 0] = -torch.inf
    for row, g in enumerate(known.group.tolist()):
        for item in known.items[known.item_group == g].tolist():
            if item and item != targets[row]:
                logits[row, item] = -torch.inf
    return torch.nn.functional.cross_entropy(logits, targets)


def test_known_items_are_not_negatives_in_the_exact_softmax():
    queries, table, targets, known = _known_case()
    neg = SharedNegatives(torch.ones(30), 2048)
    loss, _ = neg.loss(queries, table, targets, known=known)
    expected = _excluded_dense_loss(queries, table, targets, known)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    plain, _ = neg.loss(queries, table, targets)
    assert loss.item() < plain.item()  # fewer negatives: a smaller partition function
    # a known item gets no gradient through the rows that know it
    table.zero_grad()
    neg.loss(queries[:3], table, targets[:3], known=known._replace(group=known.group[:3]))[
        0
    ].backward()
    for item in (3, 7):
        if item not in targets[:3].tolist():
            assert torch.all(table.weight.grad[item] == 0)


def test_known_items_are_not_negatives_in_the_sampled_softmax():
    """With many draws the sampled loss tends to the exact loss without the known items."""
    queries, table, targets, known = _known_case()
    counts = torch.arange(30) ** 2
    sampled = SharedNegatives(counts, 200_000, exact=False)
    generator = torch.Generator().manual_seed(1)
    loss, _ = sampled.loss(queries, table, targets, generator=generator, known=known)
    expected = _excluded_dense_loss(queries, table, targets, known)
    assert loss.item() == pytest.approx(expected.item(), rel=0.01)


def test_known_bias_marks_each_groups_items_among_the_candidates():
    generator = torch.Generator().manual_seed(0)
    candidates = torch.unique(torch.randint(1, 50, (30,), generator=generator))
    item_group = torch.randint(0, 4, (40,), generator=generator)
    items = torch.randint(0, 50, (40,), generator=generator)
    group = torch.tensor([3, 0, 0, 2, 1])
    lookup = torch.full((50,), -1)
    mask = known_bias(candidates, KnownItems(group, item_group, items, 4), lookup) < 0
    assert bool((lookup == -1).all())  # left as found
    expected = torch.stack(
        [torch.isin(candidates, items[(item_group == g) & (items > 0)]) for g in group.tolist()]
    )
    assert torch.equal(mask, expected)


def test_a_row_with_every_candidate_known_stays_finite():
    """Known items get a large finite negative logit, not -inf: a row left with no negative
    has a finite loss and gradient (no NaN into the weights)."""
    queries, table, targets = _queries(rows=1, items=6)
    sampled = SharedNegatives(torch.ones(6), 3, exact=False)
    every = torch.arange(1, 6)
    known = KnownItems(torch.tensor([0]), torch.zeros(5, dtype=torch.int64), every, 1)
    table.zero_grad()
    loss, _ = sampled.loss(queries, table, targets, known=known)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert bool(torch.isfinite(table.weight.grad).all())
