"""Two-stage top-K for large catalogues: retrieve by dot product, re-rank with the full model.

Scoring every item with a model's MLP costs O(num_items) MLP evaluations per user. The dot
product of the user and item embeddings (the collaborative part of ``hybrid``, ``mf``,
``gmf`` and NeuMF's GMF branch) is one matrix product, so stage 1 takes the
``num_candidates`` best items by it, exactly, and stage 2 scores only those with the full
model. ``recall_at_k`` measures what stage 1 loses against exhaustive scoring.
"""

from __future__ import annotations

import torch
from torch import nn

from hybridrec.data.encoding import UNKNOWN_INDEX
from hybridrec.models import capabilities
from hybridrec.models.featured import rows_with_ids, table_vectors


def supports_retrieval(model: nn.Module) -> bool:
    """Whether ``model`` declares the ``user_embedding``/``item_embedding`` tables stage 1
    needs (its ``retrieval`` capability)."""
    return capabilities(model).retrieval


def retrieval_factors(model: nn.Module) -> tuple[nn.Embedding, nn.Embedding]:
    """The user and item embeddings whose dot product stage 1 ranks by."""
    if not supports_retrieval(model):
        raise ValueError(
            f"{type(model).__name__} has no user/item embeddings to retrieve by; "
            "use exhaustive scoring (score_all)"
        )
    return model.user_embedding, model.item_embedding


def query_vectors(model: nn.Module, user_idx: torch.Tensor) -> torch.Tensor:
    """(B, D) user vectors whose dot product with the item embeddings stage 1 ranks by.

    The model's ``retrieval_query``: the user embedding, unless the model says better (GMF
    weights each dimension of ``u * i`` by its output layer, so its query is ``u * h``).
    """
    retrieval_factors(model)  # refuses a model without the tables
    return model.retrieval_query(user_idx)


@torch.no_grad()
def exhaustive_topk(
    model: nn.Module, user_idx: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` (items, logits), each (B, k), by scoring every item with the full model."""
    scores = model.score_all(user_idx)  # (B, I)
    scores[:, UNKNOWN_INDEX] = float("-inf")
    top = torch.topk(scores, k, dim=1)
    return top.indices, top.values


@torch.no_grad()
def item_prior(model: nn.Module, num_users: int = 64, seed: int = 0) -> torch.Tensor:
    """(I,) the part of each item's score that the dot product misses, for a typical user.

    Averaged over a sample of users: ``score_all(u) - u . i``. For ``hybrid`` this is the
    MLP's item effect (popularity and the like), which a pure dot product cannot retrieve.
    Computed once per model; stage 1 then ranks by ``[u, 1] . [i, prior(i)]``, still one
    matrix product.
    """
    users, items = retrieval_factors(model)
    generator = torch.Generator().manual_seed(seed)
    known = rows_with_ids(users)  # a cold user's scores carry a popularity term of their own
    n = min(num_users, len(known))
    sample = known[torch.randperm(len(known), generator=generator)[:n]].to(items.weight.device)
    total = torch.zeros(items.num_embeddings, device=items.weight.device)
    vectors = table_vectors(items)
    for user in sample:  # one user at a time: score_all may build (B, I, hidden) tensors
        u = user.view(1)
        total += (model.score_all(u) - query_vectors(model, u) @ vectors.T)[0]
    return total / n


@torch.no_grad()
def two_stage_topk(
    model: nn.Module,
    user_idx: torch.Tensor,
    k: int,
    num_candidates: int = 1000,
    prior: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` (items, logits), each (B, k): dot-product retrieval, then full re-ranking.

    Args:
        model: a model with ``user_embedding``/``item_embedding`` and ``forward``.
        user_idx: (B,) users.
        k: results per user.
        num_candidates: items kept by stage 1 per user (at least ``k``).
        prior: optional (I,) item term added to the dot product in stage 1
            (:func:`item_prior`); compute it once and reuse it.
    """
    _, items = retrieval_factors(model)
    num_candidates = max(k, min(num_candidates, items.num_embeddings - 1))
    dots = query_vectors(model, user_idx) @ table_vectors(items).T  # (B, I): one product
    if prior is not None:
        dots = dots + prior
    dots[:, UNKNOWN_INDEX] = float("-inf")
    candidates = torch.topk(dots, num_candidates, dim=1).indices  # (B, N)
    b, n = candidates.shape
    logits = model(user_idx.repeat_interleave(n), candidates.reshape(-1)).view(b, n)
    top = torch.topk(logits, k, dim=1)
    return torch.gather(candidates, 1, top.indices), top.values


def recall_at_k(found: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean share of each row of ``reference`` (B, k) that also appears in ``found`` (B, k)."""
    hits = (found[:, :, None] == reference[:, None, :]).any(dim=1)  # (B, k)
    return hits.float().mean().item()
