"""Metric maths as plain tensor functions: no model, no data loading.

Pointwise (:func:`accuracy`, :func:`auc`) and ranking metrics from ranks
(:func:`metrics_from_ranks`: HR, NDCG, Recall, Precision, MAP @K, MRR, per-user AUC; the
same per user from :func:`per_user_metrics`). Beyond-accuracy metrics of the recommended
lists are in :mod:`hybridrec.evaluation.beyond`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from hybridrec.config import AT_K_METRICS
from hybridrec.errors import ConfigError

#: Metrics reported at every cut-off K ("hr@10", ...); "mrr" and "auc" have no K. The
#: names ``--early-stop`` accepts are the same tuple (:data:`hybridrec.config.AT_K_METRICS`).
RANKING_METRICS = AT_K_METRICS


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Share of rows where ``logit > 0`` agrees with the 0/1 target."""
    if len(target) == 0:
        return float("nan")
    return ((logits > 0) == (target > 0.5)).float().mean().item()


def auc(scores: torch.Tensor, target: torch.Tensor) -> float:
    """Area under the ROC curve: P(score of a random positive > score of a random negative).

    Ties count one half (average ranks, the Mann-Whitney U statistic). NaN when the rows hold
    only one class, since the AUC is undefined then.
    """
    scores = scores.detach().double().flatten().cpu()
    positive = target.detach().flatten().cpu() > 0.5
    num_pos = int(positive.sum())
    num_neg = len(positive) - num_pos
    if num_pos == 0 or num_neg == 0:
        return float("nan")
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    _, inverse, counts = torch.unique_consecutive(
        sorted_scores, return_inverse=True, return_counts=True
    )
    # 1-based rank of the last element of each tie group, then the group's average rank.
    ends = torch.cumsum(counts, 0).double()
    average_rank = ends - (counts.double() - 1) / 2
    ranks = torch.empty_like(scores)
    ranks[order] = average_rank[inverse]
    rank_sum = ranks[positive].sum().item()
    return (rank_sum - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg)


def metrics_from_ranks(
    ranks: torch.Tensor,
    neg_above: torch.Tensor,
    num_relevant: torch.Tensor,
    num_candidates: torch.Tensor,
    ks: Sequence[int],
) -> dict[str, float]:
    """Ranking metrics from the 0-based ranks of each user's relevant items.

    Pure tensor maths, shared by both protocols so they cannot disagree on a definition.

    Args:
        ranks: (U, T) 0-based pessimistic rank of each relevant item among the user's
            candidates; ``inf`` for an item that could not be ranked (a miss). Entries from
            column ``num_relevant[u]`` on are padding and ignored. A row's p-th smallest rank
            must be >= p, as it is when the items are ranked among the same candidates
            (otherwise NDCG and MAP can exceed 1).
        neg_above: (U, T) number of non-relevant candidates scoring >= the item (for AUC).
        num_relevant: (U,) real entries per row; rows with 0 are not evaluated.
        num_candidates: (U,) non-relevant candidates per row (AUC's denominator).
        ks: cut-offs K.

    Returns:
        ``"{metric}@{k}"`` for each metric in :data:`RANKING_METRICS` and K, ``"mrr"``,
        ``"auc"`` (mean over rows with at least one negative) and ``"users"`` (rows evaluated).
        Means are NaN when no row has a relevant item.

    Example:
        >>> m = metrics_from_ranks(torch.tensor([[0.0, 3.0]]), torch.tensor([[0, 2]]),
        ...                        torch.tensor([2]), torch.tensor([4]), ks=[2])
        >>> m["hr@2"], m["recall@2"], m["mrr"], m["auc"]
        (1.0, 0.5, 1.0, 0.75)
    """
    return average_metrics(per_user_metrics(ranks, neg_above, num_relevant, num_candidates, ks))


def average_metrics(per_user: dict[str, torch.Tensor]) -> dict[str, float]:
    """:func:`metrics_from_ranks`'s dict from :func:`per_user_metrics`'s (which it does not
    change): each metric averaged over the evaluated rows, AUC over those with negatives."""
    per_user = dict(per_user)
    keep = per_user.pop("evaluated")
    ks = sorted({int(name.split("@")[1]) for name in per_user if "@" in name})
    users = int(keep.sum())
    out: dict[str, float] = {}
    if users == 0:
        nan = float("nan")
        out.update({f"{name}@{k}": nan for k in ks for name in RANKING_METRICS})
        out.update(mrr=nan, auc=nan, users=0.0)
        return out
    for name, values in per_user.items():
        values = values[keep]
        if name == "auc":  # only rows with a negative have an AUC
            values = values[~torch.isnan(values)]
            out[name] = values.mean().item() if len(values) else float("nan")
        else:
            out[name] = values.mean().item()
    out["users"] = float(users)
    return out


def per_user_metrics(
    ranks: torch.Tensor,
    neg_above: torch.Tensor,
    num_relevant: torch.Tensor,
    num_candidates: torch.Tensor,
    ks: Sequence[int],
) -> dict[str, torch.Tensor]:
    """Each row's ranking metrics: what :func:`metrics_from_ranks` averages, kept per user
    so results can be written out or broken down by user group.

    Same arguments as :func:`metrics_from_ranks`. Returns (U,) float64 tensors
    ``"{metric}@{k}"``, ``"mrr"`` and ``"auc"`` (NaN for a row without negatives), plus the
    bool ``"evaluated"`` (rows with a relevant item; the others hold NaN).
    """
    ks = check_ks(ks)
    ranks = torch.as_tensor(ranks).double().cpu()
    if ranks.dim() == 1:
        ranks = ranks[:, None]
    neg_above = torch.as_tensor(neg_above).double().cpu().reshape(ranks.shape)
    n_rel = torch.as_tensor(num_relevant).cpu().long().reshape(-1)
    n_neg = torch.as_tensor(num_candidates).double().cpu().reshape(-1)
    keep = n_rel > 0
    n_rel_f = n_rel.double().clamp(min=1.0)  # rows with none are NaN'd at the end

    width = ranks.shape[1]
    valid = torch.arange(width)[None, :] < n_rel[:, None]  # (U, T)
    inf = torch.tensor(math.inf, dtype=torch.float64)
    ranks = torch.where(valid & ~torch.isnan(ranks), ranks, inf)
    # Ascending ranks per user; count_le[p] = how many relevant items rank <= ranks[p] (ties
    # included), which is the number of hits up to and including that position.
    ranks, _ = torch.sort(ranks, dim=1)
    count_le = torch.searchsorted(ranks.contiguous(), ranks.contiguous(), right=True).double()
    position = torch.arange(width, dtype=torch.float64)
    discount = 1.0 / torch.log2(ranks + 2.0)  # 0 where the rank is inf

    out: dict[str, torch.Tensor] = {}
    for k in ks:
        hit = ranks < k  # (U, T)
        hits = hit.sum(1).double()
        n_cut = n_rel_f.clamp(max=k)  # at most K relevant items fit in the top K
        ideal = ((position[None, :] < n_cut[:, None]) / torch.log2(position + 2.0)).sum(1)
        precision_at_hit = torch.where(hit, count_le / (ranks + 1.0), 0.0)
        out[f"hr@{k}"] = (hits > 0).double()
        out[f"ndcg@{k}"] = torch.where(hit, discount, 0.0).sum(1) / ideal
        out[f"recall@{k}"] = hits / n_rel_f
        out[f"precision@{k}"] = hits / k
        out[f"map@{k}"] = precision_at_hit.sum(1) / n_cut
    if width:
        out["mrr"] = 1.0 / (ranks[:, 0] + 1.0)
    else:
        out["mrr"] = torch.zeros(len(n_rel), dtype=torch.float64)
    denom = n_neg[:, None].clamp(min=1.0)
    above = torch.where(valid, neg_above, 0.0).clamp(min=0.0)
    item_auc = torch.where(valid, 1.0 - torch.minimum(above, denom) / denom, 0.0)
    out["auc"] = torch.where(n_neg > 0, item_auc.sum(1) / n_rel_f, math.nan)
    nan = torch.tensor(math.nan, dtype=torch.float64)
    out = {name: torch.where(keep, values, nan) for name, values in out.items()}
    out["evaluated"] = keep
    return out


def check_ks(ks: Sequence[int]) -> list[int]:
    """The cut-offs K, sorted and deduplicated; an error for none or a K below 1."""
    values = [int(k) for k in ks]
    if not values or any(k < 1 for k in values):
        raise ConfigError(f"cut-offs K must be positive integers, got {list(ks)}")
    return sorted(set(values))
