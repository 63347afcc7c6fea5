"""Metrics as plain tensor functions (no model, no data loading)."""

from __future__ import annotations

import torch


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
