"""data/sampling.py: NegativeSampler draws seeded negatives, never a user's positive or the
unknown item, uniformly or by popularity."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridrec.data.sampling import NegativeSampler
from tests.helpers import keys


@st.composite
def interactions(draw):
    """A small catalogue and users who each know at most half of its items, so every user
    has negatives to draw (and the redraw loop cannot plausibly run out of rounds)."""
    num_items = draw(st.integers(3, 15))
    num_users = draw(st.integers(1, 6))
    users, items = [], []
    for user in range(1, num_users + 1):
        known = draw(
            st.sets(st.integers(1, num_items - 1), min_size=0, max_size=(num_items - 1) // 2)
        )
        users += [user] * len(known)
        items += sorted(known)
    if not users:  # the sampler needs at least one known positive
        users, items = [1], [1]
    return num_items, num_users, torch.tensor(users), torch.tensor(items)


@settings(max_examples=40, deadline=None)
@given(
    data=interactions(),
    k=st.integers(1, 6),
    seed=st.integers(0, 2**31 - 1),
    distribution=st.sampled_from(["uniform", "popularity"]),
)
def test_sampler_never_returns_a_positive_or_the_unknown_item(data, k, seed, distribution):
    num_items, num_users, users, items = data
    sampler = NegativeSampler(users, items, num_items, distribution)
    query = torch.arange(1, num_users + 1).repeat(3)  # every user, several times
    negatives = sampler.sample(query, k, torch.Generator().manual_seed(seed))
    assert negatives.shape == (len(query), k)
    assert negatives.dtype == torch.int64
    assert bool((negatives >= 1).all()) and bool((negatives < num_items).all())
    known = keys(users, items)
    drawn = keys(query.repeat_interleave(k), negatives.flatten())
    assert not (drawn & known)
    assert not sampler.is_positive(query.repeat_interleave(k), negatives.flatten()).any()


def test_sampler_is_positive_matches_the_pairs():
    sampler = NegativeSampler(torch.tensor([1, 1, 2]), torch.tensor([1, 3, 2]), num_items=4)
    users = torch.tensor([1, 1, 1, 2, 2, 2, 3])
    items = torch.tensor([1, 2, 3, 1, 2, 3, 3])
    expected = [True, False, True, False, True, False, False]
    assert sampler.is_positive(users, items).tolist() == expected


def test_sampler_same_seed_same_draws_and_fresh_draws_next_call():
    users, items = torch.tensor([1, 1, 2, 3]), torch.tensor([1, 2, 2, 5])
    sampler = NegativeSampler(users, items, num_items=50)
    query = torch.tensor([1, 2, 3] * 20)
    first_gen, second_gen = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    first = sampler.sample(query, 4, first_gen)
    assert torch.equal(first, sampler.sample(query, 4, second_gen))
    nxt = sampler.sample(query, 4, first_gen)
    assert not torch.equal(first, nxt)  # 240 draws from 49 items: equal only by a miracle
    assert torch.equal(nxt, sampler.sample(query, 4, second_gen))
    other = sampler.sample(query, 4, torch.Generator().manual_seed(8))
    assert not torch.equal(first, other)


def test_popularity_sampling_follows_the_item_counts():
    """Negatives are drawn with weight (count + 1), renormalised over the user's non-positives.

    Item 1 has 60 positives, items 2..4 have 3, 2 and 1, items 5..9 none; user 100 knows item 9
    only. Each empirical frequency must lie within 5 binomial standard deviations of its
    expected value, and popular items must be drawn more often than rare ones.
    """
    num_items = 10
    counts = {1: 60, 2: 3, 3: 2, 4: 1}
    users, items, next_user = [], [], 1
    for item, count in counts.items():
        for _ in range(count):
            users.append(next_user)
            items.append(item)
            next_user += 1
    users.append(100)
    items.append(9)  # the sampled user's only positive (so item 9 has count 1 too)
    sampler = NegativeSampler(torch.tensor(users), torch.tensor(items), num_items, "popularity")

    n = 40_000
    drawn = sampler.sample(torch.tensor([100]), n, torch.Generator().manual_seed(0)).flatten()
    frequency = torch.bincount(drawn, minlength=num_items).double() / n

    weight = torch.ones(num_items, dtype=torch.float64)
    for item, count in counts.items():
        weight[item] += count
    weight[9] += 1
    weight[0] = 0.0  # never the unknown item
    weight[9] = 0.0  # never the user's own positive
    expected = weight / weight.sum()
    bound = 5 * torch.sqrt(expected * (1 - expected) / n) + 1e-12
    assert frequency[0] == 0 and frequency[9] == 0
    assert bool(((frequency - expected).abs() <= bound).all()), (frequency, expected)
    assert frequency[1] > frequency[2] > frequency[3] > frequency[4] > frequency[5]
    # under uniform sampling item 1 would get ~1/8 of the draws; here it gets most of them
    assert frequency[1] > 0.5


def test_uniform_sampling_is_uniform_over_non_positives():
    sampler = NegativeSampler(torch.tensor([1] * 30 + [2]), torch.tensor([1] * 30 + [3]), 6)
    n = 20_000
    drawn = sampler.sample(torch.tensor([2]), n, torch.Generator().manual_seed(1)).flatten()
    frequency = torch.bincount(drawn, minlength=6).double() / n
    p = 1 / 4  # items 1, 2, 4, 5: the popular item 1 gets no extra weight
    bound = 5 * math.sqrt(p * (1 - p) / n)
    assert frequency[0] == 0 and frequency[3] == 0
    assert bool(((frequency[[1, 2, 4, 5]] - p).abs() <= bound).all()), frequency


def test_user_with_every_item_but_one_gets_that_one_small_catalogue():
    num_items = 6  # items 1..5; user 1 knows all but item 4
    sampler = NegativeSampler(torch.tensor([1, 1, 1, 1]), torch.tensor([1, 2, 3, 5]), num_items)
    negatives = sampler.sample(torch.tensor([1, 1, 1]), 10, torch.Generator().manual_seed(0))
    assert negatives.shape == (3, 10)
    assert bool((negatives == 4).all())


def test_user_with_every_item_but_one_gets_that_one_large_catalogue():
    num_items = 100  # items 1..99; user 1 knows all but item 42
    known = torch.tensor([i for i in range(1, num_items) if i != 42])
    sampler = NegativeSampler(torch.ones_like(known), known, num_items)
    negatives = sampler.sample(torch.tensor([1, 1]), 10, torch.Generator().manual_seed(0))
    assert bool((negatives == 42).all()), negatives


def test_sampler_rejects_a_bad_distribution_and_a_tiny_catalogue():
    with pytest.raises(ValueError, match="distribution"):
        NegativeSampler(torch.tensor([1]), torch.tensor([1]), 3, "zipf")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one known item"):
        NegativeSampler(torch.tensor([1]), torch.tensor([0]), 1)
