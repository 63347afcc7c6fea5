"""Beyond-accuracy metrics of recommended top-K lists: what gets recommended, not whether
the held-out item was hit.

Every function reads the lists a ranking protocol already made (``top``: (U, K) item
indices, best first, ``-1`` where a user had fewer than K candidates) and the training
popularity of each item, so they cost O(users x K + items) memory and no extra scoring.
Item index 0 is the unknown item and is never part of the catalogue.

Definitions (one per function, with its source):

- coverage@K: share of the catalogue in at least one list (RecBole ``ItemCoverage``;
  Ge et al. 2010);
- Gini index@K: inequality of how often items are recommended, 0 = all equally often
  (RecBole ``GiniIndex``; Fleder & Hosanagar 2009);
- average popularity@K: mean training popularity of a list's items (RecBole
  ``AveragePopularity``; ARP of Abdollahpouri et al. 2019);
- novelty@K: mean self-information ``-log2 p(i)`` of a list's items, ``p(i)`` the share of
  training users who interacted with ``i`` (Vargas & Castells 2011, "Rank and relevance in
  novelty and diversity metrics"; Microsoft Recommenders ``novelty``; Zhou et al. 2010);
- tail share@K: share of a list's items in the long tail (APLT of Abdollahpouri et al.
  2017; RecBole ``TailPercentage``), the tail defined by :meth:`ItemPopularity.tail`;
- intra-list diversity@K: mean pairwise ``1 - cosine`` of a list's items' attribute
  vectors (Ziegler et al. 2005; Castells et al., "Novelty and diversity in recommender
  systems", 2015; Microsoft Recommenders ``diversity``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hybridrec.data.encoding import UNKNOWN_INDEX

#: The short head holds the most popular items that together make up this share of the
#: training interactions; every other item is in the long tail (the 80/20 split).
HEAD_SHARE = 0.8
#: Elements of the (users, K, K, tokens, tokens) comparison per chunk of intra-list diversity.
_CHUNK_ELEMENTS = 20_000_000
#: Per-user beyond-accuracy metrics (the others, coverage and Gini, describe all lists).
PER_USER_BEYOND = ("popularity", "novelty", "tail", "diversity")
#: Metrics over all users' lists together.
AGGREGATE_BEYOND = ("coverage", "gini")


@dataclass(frozen=True)
class ItemPopularity:
    """How many distinct training users interacted with each item.

    ``counts`` (num_items,) int64, row 0 (unknown) included and 0; ``num_users`` distinct
    training users. One popularity for every metric, so they describe the same thing.
    """

    counts: torch.Tensor
    num_users: int

    @classmethod
    def from_pairs(
        cls, user_idx: torch.Tensor, item_idx: torch.Tensor, num_items: int
    ) -> ItemPopularity:
        """From training ``(user, item)`` index pairs; repeated pairs count once, pairs of
        the unknown user or item not at all.

        Example:
            >>> p = ItemPopularity.from_pairs(torch.tensor([1, 1, 1, 2]),
            ...                               torch.tensor([1, 1, 2, 1]), num_items=3)
            >>> p.counts.tolist(), p.num_users
            ([0, 2, 1], 2)
        """
        u = torch.as_tensor(user_idx).long().cpu().reshape(-1)
        i = torch.as_tensor(item_idx).long().cpu().reshape(-1)
        ok = (u != UNKNOWN_INDEX) & (i != UNKNOWN_INDEX)
        key = torch.unique(u[ok] * num_items + i[ok])
        counts = torch.bincount(key % num_items, minlength=num_items)
        return cls(counts, int(torch.unique(key // num_items).numel()))

    def self_information(self) -> torch.Tensor:
        """(num_items,) ``-log2(k_i / |U|)`` in bits; an item no training user had counts as
        one user's (``log2 |U|``), so it is the most novel rather than infinite."""
        users = max(self.num_users, 1)
        return -torch.log2(self.counts.clamp(min=1).double() / users)

    def tail(self, head_share: float = HEAD_SHARE) -> torch.Tensor:
        """(num_items,) bool: the long tail, every item outside the short head.

        The head is the most popular items that together make up ``head_share`` of the
        training interactions (counted as above); items tied with the least popular of
        them are head too, so the split never depends on item order. Items without
        training interactions are tail; the unknown item is neither.

        Example:
            >>> ItemPopularity(torch.tensor([0, 6, 2, 1, 1]), 6).tail().tolist()
            [False, False, False, True, True]
        """
        counts = self.counts.clone()
        counts[UNKNOWN_INDEX] = 0
        total = int(counts.sum())
        tail = torch.ones(len(counts), dtype=torch.bool)
        tail[UNKNOWN_INDEX] = False
        if total == 0:
            return tail
        ordered, _ = torch.sort(counts, descending=True)
        reached = torch.cumsum(ordered, 0) >= head_share * total
        threshold = ordered[int(torch.nonzero(reached)[0])]
        tail &= counts < threshold
        return tail


def catalogue_counts(top: torch.Tensor, num_items: int) -> torch.Tensor:
    """(num_items,) how many lists each item appears in (``-1`` padding ignored)."""
    flat = top.reshape(-1)
    return torch.bincount(flat[flat > UNKNOWN_INDEX], minlength=num_items)


def coverage(rec_counts: torch.Tensor) -> float:
    """Item coverage: share of catalogue items (index 1 on) recommended to anyone.

    ``|union of R_u| / |I|`` (RecBole ``ItemCoverage``).

    Example:
        >>> coverage(torch.tensor([0, 3, 0, 1, 0]))
        0.5
    """
    catalogue = rec_counts[1:]
    return float((catalogue > 0).double().mean()) if len(catalogue) else math.nan


def gini_index(rec_counts: torch.Tensor) -> float:
    """Gini index of how often each catalogue item is recommended.

    With the counts of all ``n`` catalogue items (zeros included) sorted ascending,
    ``G = sum_j (2j - n - 1) c_j / (n sum_j c_j)``: 0 when every item is recommended equally
    often, ``(n - 1) / n`` when one item takes every slot (RecBole ``GiniIndex``).

    Example:
        >>> gini_index(torch.tensor([0, 4, 0, 0, 0]))
        0.75
    """
    counts, _ = torch.sort(rec_counts[1:].double())
    n, total = len(counts), float(counts.sum())
    if n == 0 or total == 0:
        return math.nan
    j = torch.arange(1, n + 1, dtype=torch.float64)
    return float(((2 * j - n - 1) * counts).sum()) / (n * total)


def list_mean(top: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """(U,) mean of ``values[item]`` over each list's items; NaN for an empty list.

    With the training counts this is average popularity, with
    :meth:`ItemPopularity.self_information` novelty, with the tail mask tail share.
    """
    present = top > UNKNOWN_INDEX
    gathered = values.double()[top.clamp(min=0)]
    total = torch.where(present, gathered, 0.0).sum(1)
    size = present.sum(1).double()
    return torch.where(size > 0, total / size.clamp(min=1.0), math.nan)


def intra_list_diversity(
    top: torch.Tensor, tokens: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """(U,) mean pairwise ``1 - cos(v_a, v_b)`` over each list's item pairs; NaN for a list
    of fewer than two items (Ziegler et al. 2005; Microsoft Recommenders ``diversity``).

    ``v_i`` is item i's bag of attribute tokens: ``tokens`` (items, L) and ``weights``
    (items, L) are the encoded features a featured model stores (each attribute field has
    weight 1, split among a multi-valued field's tokens; a numeric field is its decile
    token), so ``v_i . v_j = sum w_ia w_jb [t_ia == t_jb]``. Using the encoded attributes
    rather than learned vectors makes the value independent of training. An item with no
    tokens has similarity 0 to everything.
    """
    users, k = top.shape
    out = torch.full((users,), math.nan, dtype=torch.float64)
    width = tokens.shape[1]
    chunk = max(1, _CHUNK_ELEMENTS // max(1, k * k * width * width))
    pair = torch.triu(torch.ones(k, k, dtype=torch.bool), diagonal=1)
    for start in range(0, users, chunk):
        rows = top[start : start + chunk]
        present = rows > UNKNOWN_INDEX
        t = tokens[rows.clamp(min=0)]  # (C, K, L)
        w = weights[rows.clamp(min=0)].double() * present[..., None]
        same = t[:, :, None, :, None] == t[:, None, :, None, :]  # (C, K, K, L, L)
        both = w[:, :, None, :, None] * w[:, None, :, None, :]
        dot = (same * both).sum((-1, -2))  # (C, K, K)
        norm = torch.diagonal(dot, dim1=1, dim2=2).sqrt()
        cos = dot / (norm[:, :, None] * norm[:, None, :]).clamp(min=1e-12)
        counted = pair & present[:, :, None] & present[:, None, :]
        pairs = counted.sum((1, 2)).double()
        distance = torch.where(counted, 1.0 - cos, 0.0).sum((1, 2))
        out[start : start + chunk] = torch.where(pairs > 0, distance / pairs.clamp(min=1), math.nan)
    return out


def beyond_accuracy(
    top: torch.Tensor,
    ks: Sequence[int],
    popularity: ItemPopularity,
    item_features: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Every beyond-accuracy metric at every K from the lists ``top`` (U, >= max K).

    Args:
        top: each user's recommended item indices, best first; ``-1`` = no item.
        ks: cut-offs K; a list's first K items are its top K.
        popularity: training popularity (:class:`ItemPopularity`), which defines average
            popularity, novelty and the tail.
        item_features: ``(tokens, weights)`` of every item for intra-list diversity
            (see :func:`intra_list_diversity`); None leaves it out.

    Returns:
        ``(metrics, per_user)``: ``metrics`` has ``coverage@K``, ``gini@K``,
        ``popularity@K``, ``novelty@K``, ``tail@K`` (and ``diversity@K``), the per-user
        ones averaged over users with a non-empty list, plus ``tail_items`` (size of the
        long tail) and ``catalogue_items``; ``per_user`` has the (U,) values of the
        per-user ones.
    """
    num_items = len(popularity.counts)
    info = popularity.self_information()
    tail = popularity.tail()
    metrics: dict[str, float] = {}
    per_user: dict[str, torch.Tensor] = {}
    for k in ks:
        lists = top[:, :k]
        rec_counts = catalogue_counts(lists, num_items)
        metrics[f"coverage@{k}"] = coverage(rec_counts)
        metrics[f"gini@{k}"] = gini_index(rec_counts)
        per_user[f"popularity@{k}"] = list_mean(lists, popularity.counts)
        per_user[f"novelty@{k}"] = list_mean(lists, info)
        per_user[f"tail@{k}"] = list_mean(lists, tail)
        if item_features is not None:
            per_user[f"diversity@{k}"] = intra_list_diversity(lists, *item_features)
    for name, values in per_user.items():
        known = values[~torch.isnan(values)]
        metrics[name] = float(known.mean()) if len(known) else math.nan
    metrics["tail_items"] = float(tail.sum())
    metrics["catalogue_items"] = float(num_items - 1)
    return metrics, per_user
