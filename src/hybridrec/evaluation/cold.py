"""The cold-start protocol: rank each user's held-out items among a fixed set of items.

With a cold-items split (``hybridrec split --method cold-items``) the test items never
appeared in training, so a full ranking would mostly measure how far below the warm items a
model puts them. Following the LightFM paper (Kula 2015) and ColdRec, each test user's
held-out items are ranked among *all held-out cold items* instead, which asks the one
question that matters for a new item: which users will want it.

Items with equal features can get equal scores, so ties are handled explicitly: for the
top-K metrics, tied items are ordered by a seeded random permutation (what a service
returning K items would do); for AUC a tied pair counts half.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hybridrec.data.encoding import UNKNOWN_INDEX
from hybridrec.evaluation.metrics import check_ks, metrics_from_ranks
from hybridrec.models import model_device

#: (user, candidate) pairs scored per forward call.
_PAIRS_PER_CALL = 1 << 20


@torch.no_grad()
def evaluate_cold(
    model: nn.Module,
    test_user_idx: torch.Tensor,
    test_item_idx: torch.Tensor,
    candidates: torch.Tensor | None = None,
    ks: Sequence[int] = (20,),
    seed: int = 0,
) -> dict[str, float]:
    """Ranking metrics of each test user's items among ``candidates``.

    Args:
        model: any registered model (``forward(user_idx, item_idx) -> logits``).
        test_user_idx, test_item_idx: (M,) held-out pairs; unknown users (index 0) skipped.
        candidates: item indices every user's items are ranked among; by default the
            distinct test items (the cold items of the split).
        ks: cut-offs K.
        seed: the permutation that orders tied scores.

    Returns:
        ``metrics_from_ranks``'s dict (``recall@K``, ``ndcg@K``, ..., ``auc`` with ties
        counting half) plus ``"candidates"``.
    """
    ks = check_ks(ks)
    keep = (test_user_idx != UNKNOWN_INDEX) & (test_item_idx != UNKNOWN_INDEX)
    test_u, test_i = test_user_idx[keep].long().cpu(), test_item_idx[keep].long().cpu()
    if candidates is None:
        candidates = test_i
    cand = torch.unique(candidates.long().cpu())
    cand = cand[cand != UNKNOWN_INDEX]
    users, user_row = torch.unique(test_u, return_inverse=True)
    # only test items among the candidates count (others cannot be ranked)
    column = torch.searchsorted(cand, test_i).clamp(max=max(len(cand) - 1, 0))
    inside = (cand[column] == test_i) if len(cand) else torch.zeros_like(test_i, dtype=torch.bool)
    relevant = torch.zeros(len(users), len(cand), dtype=torch.bool)
    relevant[user_row[inside], column[inside]] = True
    scores = _scores(model, users, cand)  # (U, C)
    order = torch.randperm(len(cand), generator=torch.Generator().manual_seed(seed))
    tiebreak = torch.empty_like(order)
    tiebreak[order] = torch.arange(len(cand))
    num_relevant = relevant.sum(1)
    width = max(int(num_relevant.max()) if len(users) else 0, 1)
    ranks = torch.full((len(users), width), float("inf"), dtype=torch.float64)
    neg_above = torch.zeros(len(users), width, dtype=torch.float64)
    for row in range(len(users)):
        s, rel = scores[row], relevant[row]
        pos = torch.nonzero(rel).squeeze(-1)
        higher = s[None, :] > s[pos, None]  # (P, C)
        tied = s[None, :] == s[pos, None]
        before = tied & (tiebreak[None, :] < tiebreak[pos, None])
        ranks[row, : len(pos)] = (higher | before).sum(1).double()
        negative = ~rel
        neg_above[row, : len(pos)] = (higher & negative).sum(1).double() + 0.5 * (
            tied & negative
        ).sum(1).double()
    num_negatives = (~relevant).sum(1)
    out = metrics_from_ranks(ranks, neg_above, num_relevant, num_negatives, ks)
    out["candidates"] = float(len(cand))
    return out


def _scores(model: nn.Module, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """(U, C) logits of every (user, candidate) pair, through ``forward`` in chunks."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        rows = max(1, _PAIRS_PER_CALL // max(len(items), 1))
        out = []
        for start in range(0, len(users), rows):
            u = users[start : start + rows]
            pair_u = u.repeat_interleave(len(items)).to(device)
            pair_i = items.repeat(len(u)).to(device)
            out.append(model(pair_u, pair_i).float().cpu().view(len(u), len(items)))
        return torch.cat(out) if out else torch.zeros(0, len(items))
    finally:
        model.train(was_training)
