"""Top-K ranking evaluation: HR, NDCG, Recall, Precision, MAP @K plus MRR and per-user AUC.

Two protocols:

* **full** (:func:`evaluate_full`): each test user's held-out items are ranked against every
  item the user did not interact with in training. This is the unbiased protocol; sampled
  metrics can even rank models in a different order (Krichene & Rendle, KDD 2020).
* **sampled** (:func:`evaluate_sampled`): each test item is ranked against a fixed set of
  negatives only (e.g. the 100 of the NCF leave-one-out files), which is cheap and comparable
  with published numbers.

Ranks are *pessimistic*: an item tied with another candidate is ranked below it, so a model
that gives every item the same score gets no credit (optimistic ties would let a constant model
reach HR@K = 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from hybridrec.data.encoding import UNKNOWN_INDEX
from hybridrec.errors import ConfigError
from hybridrec.evaluation.metrics import (
    average_metrics,
    check_ks,
    metrics_from_ranks,
    per_user_metrics,
)
from hybridrec.models import model_device

#: Elements of the (users, test items, items) comparison tensor per chunk of users.
_CHUNK_ELEMENTS = 20_000_000
#: Pairs per ``model(user, item)`` call in the sampled protocol.
_SCORE_BATCH = 262_144


@torch.no_grad()
def evaluate_full(
    model: nn.Module,
    train_user_idx: torch.Tensor,
    train_item_idx: torch.Tensor,
    test_user_idx: torch.Tensor,
    test_item_idx: torch.Tensor,
    num_items: int,
    ks: Sequence[int] = (10,),
    chunk_users: int | None = None,
    device: torch.device | str | None = None,
    show_progress: bool = False,
) -> dict[str, float]:
    """Full-ranking metrics: each test user's items against all items not seen in training.

    Candidates of user u are items ``1..num_items-1`` without u's training items, except
    that u's own test items always stay candidates (a test item also in train is still
    ranked). Test pairs are deduplicated; a user's test items form one relevant set.

    Args:
        model: has ``score_all(user_idx (B,)) -> (B, num_items)`` logits.
        train_user_idx, train_item_idx: (N,) training pairs whose items are excluded.
        test_user_idx, test_item_idx: (M,) held-out pairs to rank.
        num_items: item embedding rows, the unknown row 0 included.
        ks: cut-offs K.
        chunk_users: users scored per ``score_all`` call; by default enough to keep the
            (users, test items, items) comparison around 2e7 elements.
        device: where to score; defaults to the model's device.
        show_progress: a progress bar over the users (the cost is users x items model
            scores: minutes for 100K users of a 1M-item catalogue).

    Returns:
        :func:`metrics_from_ranks`'s dict plus ``"unknown_test_items"`` (test rows with item
        index 0, counted as misses), ``"unknown_test_users"`` (rows with user index 0,
        skipped) and ``"test_items_in_train"`` (test pairs also in train, ranked as usual).
        :func:`rank_full` keeps the per-user results and top-K lists too.
    """
    return rank_full(
        model, train_user_idx, train_item_idx, test_user_idx, test_item_idx, num_items,
        ks=ks, chunk_users=chunk_users, device=device, show_progress=show_progress,
    ).metrics  # fmt: skip


@dataclass
class FullRanking:
    """What the full protocol computed, kept for more than the averages.

    ``metrics``: :func:`evaluate_full`'s dict. ``users`` (U,): the evaluated users' indices,
    sorted; ``per_user``: their (U,) metrics (:func:`per_user_metrics`); ``items`` and
    ``ranks`` (U, T): each user's held-out items (0 = padding or unknown) and their 0-based
    ranks (``inf`` = unknown item; padding where ``items`` is 0 past ``num_relevant``);
    ``num_relevant`` (U,); ``top`` (U, max K): each user's recommended items among the
    candidates, best first, ties to the lower index, ``-1`` past the user's candidates
    (None when not asked for).
    """

    metrics: dict[str, float]
    users: torch.Tensor
    per_user: dict[str, torch.Tensor]
    items: torch.Tensor
    ranks: torch.Tensor
    num_relevant: torch.Tensor
    top: torch.Tensor | None = None


@torch.no_grad()
def rank_full(
    model: nn.Module,
    train_user_idx: torch.Tensor,
    train_item_idx: torch.Tensor,
    test_user_idx: torch.Tensor,
    test_item_idx: torch.Tensor,
    num_items: int,
    ks: Sequence[int] = (10,),
    chunk_users: int | None = None,
    device: torch.device | str | None = None,
    show_progress: bool = False,
    keep_top: bool = False,
) -> FullRanking:
    """The full protocol of :func:`evaluate_full`, returning per-user results as well.

    ``keep_top``: also keep each user's top max(K) candidates, taken from the same scores
    (no second scoring pass; (users, K) memory), for the beyond-accuracy metrics.
    """
    ks = check_ks(ks)
    train_u, train_i = _pairs(train_user_idx, train_item_idx, num_items, "train")
    test_u, test_i = _pairs(test_user_idx, test_item_idx, num_items, "test")
    unknown_users = int((test_u == UNKNOWN_INDEX).sum())
    known = test_u != UNKNOWN_INDEX
    test_u, test_i = test_u[known], test_i[known]
    unknown_items = int((test_i == UNKNOWN_INDEX).sum())

    test_u, test_i = _dedupe_test(test_u, test_i, num_items)
    in_train = _count_in_train(test_u, test_i, train_u, train_i, num_items)
    users, row, slot, width = _group(test_u)
    items = torch.zeros(len(users), width, dtype=torch.int64)
    items[row, slot] = test_i
    num_relevant = torch.bincount(row, minlength=len(users))
    filled = torch.arange(width)[None, :] < num_relevant[:, None]
    rankable = filled & (items != UNKNOWN_INDEX)

    # Training pairs of test users, sorted by test-user row so a chunk is one slice.
    train_row, train_i = _pairs_by_row(users, train_u, train_i)

    if chunk_users is None:
        chunk_users = max(1, _CHUNK_ELEMENTS // (num_items * max(width, 1)))
    if chunk_users < 1:
        raise ConfigError(f"chunk_users must be >= 1, got {chunk_users}")
    device = torch.device(device) if device is not None else model_device(model)

    ranks = torch.full((len(users), width), math.inf, dtype=torch.float64)
    neg_above = torch.zeros(len(users), width, dtype=torch.float64)
    num_negatives = torch.zeros(len(users), dtype=torch.float64)
    top_width = min(max(ks), num_items)  # a K beyond the catalogue lists every item
    top = torch.full((len(users), top_width), -1, dtype=torch.int64) if keep_top else None
    was_training = model.training
    model.eval()
    try:
        bar = tqdm(total=len(users), desc="ranking", unit="user", leave=False,
                   disable=not show_progress)  # fmt: skip
        for start in range(0, len(users), chunk_users):
            end = min(start + chunk_users, len(users))
            size = end - start
            lo, hi = torch.searchsorted(train_row, torch.tensor([start, end])).tolist()
            relevant = torch.zeros(size, num_items, dtype=torch.bool)
            relevant.scatter_(1, items[start:end], True)
            relevant[:, UNKNOWN_INDEX] = False  # padding and unknown items
            candidate = torch.ones(size, num_items, dtype=torch.bool)
            candidate[train_row[lo:hi] - start, train_i[lo:hi]] = False
            candidate |= relevant
            candidate[:, UNKNOWN_INDEX] = False
            negative = candidate & ~relevant

            scores = model.score_all(users[start:end].to(device))
            scores = torch.nan_to_num(scores, nan=-math.inf)  # NaN ranks last, not nowhere
            candidate, negative = candidate.to(device), negative.to(device)
            chunk_items = items[start:end].to(device)
            own = scores.gather(1, chunk_items)  # (C, T)
            at_least = scores[:, None, :] >= own[:, :, None]  # (C, T, I)
            rank = (at_least & candidate[:, None, :]).sum(-1) - 1  # minus the item itself
            above = (at_least & negative[:, None, :]).sum(-1)
            ok = rankable[start:end]
            ranks[start:end] = torch.where(ok, rank.double().cpu(), math.inf)
            neg_above[start:end] = above.double().cpu()
            num_negatives[start:end] = negative.sum(1).double().cpu()
            if top is not None:
                top[start:end] = _top_candidates(scores, candidate, top.shape[1]).cpu()
            bar.update(size)
    finally:
        bar.close()
        model.train(was_training)

    # An unranked (unknown) item is a miss: every negative counts as scoring above it.
    neg_above = torch.where(rankable, neg_above, num_negatives[:, None])
    per_user = per_user_metrics(ranks, neg_above, num_relevant, num_negatives, ks)
    out = average_metrics(per_user)
    out["unknown_test_items"] = float(unknown_items)
    out["unknown_test_users"] = float(unknown_users)
    out["test_items_in_train"] = float(in_train)
    per_user.pop("evaluated")
    return FullRanking(out, users, per_user, items, ranks, num_relevant, top)


def _top_candidates(scores: torch.Tensor, candidate: torch.Tensor, k: int) -> torch.Tensor:
    """(C, k) each row's best candidates, best first, ties to the lower item index (as
    :func:`hybridrec.recommend.topk.top_k`); ``-1`` past a row's candidates."""
    masked = scores.float().masked_fill(~candidate, -math.inf)
    kk = min(k, masked.shape[1])
    values, index = torch.topk(masked, kk, dim=1)
    # rows where an item outside the top ties with the k-th: sort those rows whole
    straddle = (masked >= values[:, -1:]).sum(1) > kk
    if bool(straddle.any()):
        _, order = torch.sort(masked[straddle], dim=1, descending=True, stable=True)
        index[straddle] = order[:, :kk]
        values[straddle] = masked[straddle].gather(1, order[:, :kk])
    # inside the top, equal scores in index order: sort by index, then stably by score
    by_index = torch.argsort(index, dim=1)
    index, values = index.gather(1, by_index), values.gather(1, by_index)
    by_score = torch.sort(values, dim=1, descending=True, stable=True).indices
    index = index.gather(1, by_score)
    index = torch.where(candidate.gather(1, index), index, -1)
    out = torch.full((len(scores), k), -1, dtype=torch.int64, device=scores.device)
    out[:, :kk] = index
    return out


@torch.no_grad()
def evaluate_sampled(
    model: nn.Module,
    train_user_idx: torch.Tensor,
    train_item_idx: torch.Tensor,
    test_user_idx: torch.Tensor,
    test_item_idx: torch.Tensor,
    num_items: int,
    ks: Sequence[int] = (10,),
    candidates: tuple[torch.Tensor, torch.Tensor] | None = None,
    num_negatives: int = 100,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Sampled metrics: each test item ranked against its user's negatives only.

    Every test pair is its own query with one relevant item (the NCF leave-one-out protocol),
    so the user's other test items never compete with it; metrics are averaged over queries.
    Duplicate test pairs are one query.

    Args:
        model: has ``forward(user_idx (B,), item_idx (B,)) -> (B,)`` logits.
        train_user_idx, train_item_idx: (N,) training pairs (only used to sample negatives).
        test_user_idx, test_item_idx: (M,) held-out pairs to rank.
        num_items: item embedding rows, the unknown row 0 included.
        ks: cut-offs K.
        candidates: long-form ``(user_idx, item_idx)`` negatives, e.g. from
            :func:`read_candidates`; pairs with an unknown id (index 0) are dropped and
            duplicates removed. A query's own item is never its own negative.
            ``None`` samples negatives instead.
        num_negatives: negatives sampled per user, uniformly without replacement from the
            items the user has in neither train nor test (fewer if not enough exist).
        seed: seeds the sampling (on CPU, so results do not depend on ``device``).
        device: where to score; defaults to the model's device.

    Returns:
        :func:`metrics_from_ranks`'s dict where ``"users"`` counts distinct users, plus
        ``"queries"`` (test rows ranked), ``"negatives"`` (mean negatives per query),
        ``"unknown_test_items"`` (rows with item 0, counted as misses),
        ``"unknown_test_users"`` (rows with user 0, skipped), ``"unknown_candidates"``
        (candidate pairs dropped) and ``"test_items_without_candidates"`` (test rows whose user
        has no negatives, skipped since any rank would be meaningless) and
        ``"test_items_in_train"`` (test pairs also in train, ranked as usual).
    """
    ks = check_ks(ks)
    if num_negatives < 1:
        raise ConfigError(f"num_negatives must be >= 1, got {num_negatives}")
    train_u, train_i = _pairs(train_user_idx, train_item_idx, num_items, "train")
    test_u, test_i = _pairs(test_user_idx, test_item_idx, num_items, "test")
    unknown_users = int((test_u == UNKNOWN_INDEX).sum())
    known = test_u != UNKNOWN_INDEX
    test_u, test_i = _dedupe_test(test_u[known], test_i[known], num_items)
    in_train = _count_in_train(test_u, test_i, train_u, train_i, num_items)
    users = torch.unique(test_u)

    unknown_candidates = 0
    if candidates is None:
        neg_users, negatives = _sample_negatives(
            users, train_u, train_i, test_u, test_i, num_items, num_negatives, seed
        )
    else:
        neg_users, negatives, unknown_candidates = _given_negatives(candidates, num_items)

    # Each query's row of negatives (never its own item); queries without any are skipped.
    position = torch.searchsorted(neg_users, test_u).clamp(max=max(len(neg_users) - 1, 0))
    if len(neg_users):
        query_neg = negatives[position]  # (Q, N)
        query_neg[neg_users[position] != test_u] = UNKNOWN_INDEX
    else:
        query_neg = torch.zeros(len(test_u), 0, dtype=torch.int64)
    query_neg = torch.where(query_neg == test_i[:, None], UNKNOWN_INDEX, query_neg)
    has = (query_neg != UNKNOWN_INDEX).any(1)
    without = int((~has).sum())
    test_u, test_i, query_neg = test_u[has], test_i[has], query_neg[has]
    is_negative = query_neg != UNKNOWN_INDEX

    device = torch.device(device) if device is not None else model_device(model)
    items = torch.cat([test_i[:, None], query_neg], dim=1)  # column 0 = the test item
    scores = _score_pairs(model, test_u[:, None].expand_as(items), items, device)
    own = scores[:, :1]
    rank = ((scores[:, 1:] >= own) & is_negative).sum(1).double()
    known_item = test_i != UNKNOWN_INDEX
    num_neg = is_negative.sum(1).double()
    rank = torch.where(known_item, rank, math.inf)
    neg_above = torch.where(known_item, rank, num_neg)

    out = metrics_from_ranks(
        rank[:, None], neg_above[:, None], torch.ones(len(rank), dtype=torch.int64), num_neg, ks
    )
    out["users"] = float(torch.unique(test_u).numel())
    out["queries"] = float(len(rank))
    out["negatives"] = num_neg.mean().item() if len(rank) else float("nan")
    out["unknown_test_items"] = float(int((~known_item).sum()))
    out["unknown_test_users"] = float(unknown_users)
    out["unknown_candidates"] = float(unknown_candidates)
    out["test_items_without_candidates"] = float(without)
    out["test_items_in_train"] = float(in_train)
    return out


def _given_negatives(
    candidates: tuple[torch.Tensor, torch.Tensor], num_items: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(users, (U, W) negatives padded with 0, pairs dropped for an unknown id)`` of
    long-form candidate pairs, duplicates removed."""
    cand_u, cand_i = _pairs(candidates[0], candidates[1], num_items, "candidate")
    ok = (cand_u != UNKNOWN_INDEX) & (cand_i != UNKNOWN_INDEX)
    key = torch.unique(cand_u[ok] * num_items + cand_i[ok])
    cand_u, cand_i = key // num_items, key % num_items
    neg_users, row, slot, width = _group(cand_u)
    negatives = torch.zeros(len(neg_users), width, dtype=torch.int64)
    negatives[row, slot] = cand_i  # 0 = padding
    return neg_users, negatives, int((~ok).sum())


def _pairs(
    user_idx: torch.Tensor, item_idx: torch.Tensor, num_items: int, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs as CPU int64, checked: a bad index would silently hit the wrong row."""
    u = torch.as_tensor(user_idx).detach().cpu().long().reshape(-1)
    i = torch.as_tensor(item_idx).detach().cpu().long().reshape(-1)
    if len(u) != len(i):
        raise ValueError(f"{name} user and item indices differ in length: {len(u)} vs {len(i)}")
    if len(u) and (u.min() < 0 or i.min() < 0 or i.max() >= num_items):
        raise ValueError(f"{name} indices must be >= 0 and items < num_items={num_items}")
    return u, i


def _dedupe_test(
    user_idx: torch.Tensor, item_idx: torch.Tensor, num_items: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Known (user, item) test pairs once each, sorted; every unknown-item row stays, since
    distinct raw ids may all have become index 0."""
    ranked = item_idx != UNKNOWN_INDEX
    key = torch.unique(user_idx[ranked] * num_items + item_idx[ranked])
    users = torch.cat([key // num_items, user_idx[~ranked]])
    items = torch.cat([key % num_items, item_idx[~ranked]])
    return users, items


def _count_in_train(
    test_u: torch.Tensor,
    test_i: torch.Tensor,
    train_u: torch.Tensor,
    train_i: torch.Tensor,
    num_items: int,
) -> int:
    """Known test pairs that are also training pairs: ranked as usual (the user's own
    test item is always a candidate), so a test file that leaks from train lifts the
    figures; the count lets the report say so."""
    known = test_i != UNKNOWN_INDEX
    users = test_u[known]
    if not len(users) or not len(train_u):
        return 0
    # the test users' training pairs only: at 20M training rows a test set of 10,000 users
    # then costs a gather, not a sort of every training pair (~2 s)
    of_test = torch.zeros(int(max(users.max(), train_u.max())) + 1, dtype=torch.bool)
    of_test[users] = True
    mine = of_test[train_u]
    keys = users * num_items + test_i[known]
    return int(torch.isin(keys, train_u[mine] * num_items + train_i[mine]).sum())


def _group(user_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Group rows by user: ``(users, row, slot, width)`` so row i goes to ``[row[i], slot[i]]``.

    ``users`` is sorted; ``width`` is the largest group. Rows keep their order inside a group.
    """
    users, row, counts = torch.unique(user_idx, return_inverse=True, return_counts=True)
    order = torch.argsort(row, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(row)
    slot[order] = torch.arange(len(row)) - starts[row[order]]
    width = int(counts.max()) if len(counts) else 0
    return users, row, slot, width


def _sample_negatives(
    users: torch.Tensor,
    train_u: torch.Tensor,
    train_i: torch.Tensor,
    test_u: torch.Tensor,
    test_i: torch.Tensor,
    num_items: int,
    num_negatives: int,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(users, negatives (U, N))``: uniform draws without replacement, 0 = padding.

    Random keys per (user, item) with seen items set to +inf; the N smallest keys are a
    uniform sample without replacement. Done in chunks of users to bound memory.
    """
    generator = torch.Generator().manual_seed(seed)
    seen_u = torch.cat([train_u, test_u])
    seen_i = torch.cat([train_i, test_i])
    seen_row, seen_i = _pairs_by_row(users, seen_u, seen_i)

    take = min(num_negatives, num_items - 1)
    negatives = torch.zeros(len(users), take, dtype=torch.int64)
    chunk = max(1, _CHUNK_ELEMENTS // (4 * num_items))
    for start in range(0, len(users), chunk):
        end = min(start + chunk, len(users))
        keys = torch.rand(end - start, num_items, generator=generator)
        lo, hi = torch.searchsorted(seen_row, torch.tensor([start, end])).tolist()
        keys[seen_row[lo:hi] - start, seen_i[lo:hi]] = math.inf
        keys[:, UNKNOWN_INDEX] = math.inf
        values, picked = torch.topk(keys, take, dim=1, largest=False, sorted=True)
        negatives[start:end] = torch.where(torch.isinf(values), UNKNOWN_INDEX, picked)
    return users, negatives


def _score_pairs(
    model: nn.Module, users: torch.Tensor, items: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """``model(users, items)`` for a (Q, N) grid of pairs, in big flat batches, on CPU."""
    flat_u, flat_i = users.reshape(-1), items.reshape(-1)
    parts = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(flat_u), _SCORE_BATCH):
            u = flat_u[start : start + _SCORE_BATCH].to(device)
            i = flat_i[start : start + _SCORE_BATCH].to(device)
            parts.append(model(u, i).cpu())
    finally:
        model.train(was_training)
    scores = torch.cat(parts) if parts else torch.zeros(0)
    return torch.nan_to_num(scores, nan=-math.inf).reshape(items.shape)


def _pairs_by_row(
    users: torch.Tensor, pair_users: torch.Tensor, pair_items: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(row, item)`` of the pairs whose user is in ``users`` (sorted, unique), where row is
    the user's position in ``users``; sorted by row (stably), so one user's pairs, or a chunk
    of users', are one contiguous slice."""
    row_of = torch.full((int(users.max()) + 1 if len(users) else 1,), -1, dtype=torch.int64)
    row_of[users] = torch.arange(len(users))
    in_range = pair_users < len(row_of)
    row = torch.full_like(pair_users, -1)
    row[in_range] = row_of[pair_users[in_range]]
    mine = row >= 0
    row, items = row[mine], pair_items[mine]
    order = torch.argsort(row, stable=True)
    return row[order], items[order]
