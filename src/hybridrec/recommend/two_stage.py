"""Two-stage top-K for large catalogues: retrieve candidates cheaply, then score them exactly.

Stage 1 ranks every item by ``u . i + prior(i)`` (one matrix product, see
:mod:`hybridrec.retrieval`) and keeps the best ``N`` items that may be recommended; stage 2
scores only those with the full model. The scores are the model's own, so a result differs
from the exhaustive one only where an exhaustive top-k item falls outside the candidates.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from hybridrec.errors import ConfigError
from hybridrec.models import model_device, models_with
from hybridrec.models.featured import table_vectors
from hybridrec.recommend.checks import positive_int
from hybridrec.recommend.topk import top_k
from hybridrec.retrieval import item_prior, query_vectors, retrieval_factors, supports_retrieval

#: ``num_candidates="auto"`` (what ``hybridrec recommend`` and the service use): catalogues
#: of more than :data:`AUTO_MIN_ITEMS` items are ranked two-stage with
#: :data:`AUTO_CANDIDATES` candidates when the model can retrieve, every item otherwise.
#: Exhaustive ranking costs users x items full-model scores: at MovieLens-20M's shape (27K
#: items) 26 ms per user on one core against 1.3 ms two-stage, which returned the same
#: top-10 for all of 10,000 users; at 1M items ~1 s against ~14 ms (docs/benchmarks.md).
#: Small catalogues (MovieLens-100K, -1M) stay exhaustive and exact.
AUTO = "auto"
AUTO_MIN_ITEMS = 10_000
AUTO_CANDIDATES = 1_000


def check_num_candidates(
    model: nn.Module, model_name: str, num_candidates: Any
) -> int | None:  # fmt: skip
    """``num_candidates`` as an int (None: exhaustive), refused where it cannot work;
    ``"auto"`` resolved by the catalogue size (:data:`AUTO_MIN_ITEMS`).

    Raises:
        ConfigError: not ``"auto"`` or an integer >= 1, or ``model`` has no user and item
            embeddings.
    """
    if num_candidates is None:
        return None
    if isinstance(num_candidates, str) and num_candidates == AUTO:
        known_items = int(model.config.num_items) - 1  # type: ignore[union-attr]
        large = known_items > AUTO_MIN_ITEMS and supports_retrieval(model)
        return AUTO_CANDIDATES if large else None
    num_candidates = positive_int(num_candidates, "num_candidates")
    if not supports_retrieval(model):
        raise ConfigError(
            f"model {model_name} has no user and item embeddings to retrieve "
            f"candidates by; two-stage top-K (num_candidates) needs one of "
            f"{', '.join(models_with(retrieval=True))}: leave num_candidates unset to score "
            "every item"
        )
    return num_candidates


def stage1_prior(model: nn.Module) -> torch.Tensor:
    """(num_items,) float32: :func:`hybridrec.retrieval.item_prior` of ``model``, the per-item
    term added to the dot product in stage 1."""
    with torch.no_grad():
        return item_prior(model).float()


def two_stage_logits(
    model: nn.Module,
    users: np.ndarray,
    mask: torch.Tensor,
    n: int,
    prior: torch.Tensor,
    batch_size: int,
) -> torch.Tensor:
    """float32 (len(users), num_items): the model's logits for each user's ``n`` stage-1
    candidates, ``-inf`` everywhere else.

    Stage 1 ranks by ``u . i + prior(i)`` with ``mask`` applied first, so the candidates
    are the best ``n`` items that may be recommended (ties: lower index). As in
    :func:`hybridrec.recommend.topk.score_users`, on CPU each user gets its own matrix
    product and model call, so a user's result does not depend on the users beside it; an
    accelerator scores the candidate pairs ``batch_size`` at a time.
    """
    _, item_embedding = retrieval_factors(model)
    device = model_device(model)
    cpu = device.type == "cpu"
    index = torch.as_tensor(users, dtype=torch.int64, device=device)
    table = table_vectors(item_embedding).T
    if cpu:
        dots = [query_vectors(model, index[j : j + 1]) @ table for j in range(len(users))]
        stage1 = torch.cat(dots).float()
    else:
        stage1 = (query_vectors(model, index) @ table).float()
    stage1 = (stage1 + prior).masked_fill(mask, -torch.inf)
    candidates = [top for top, _ in top_k(stage1, n)]
    logits = torch.full_like(stage1, -torch.inf)
    counts = np.array([len(c) for c in candidates], dtype=np.int64)
    if counts.sum() == 0:
        return logits
    rows = torch.as_tensor(np.repeat(np.arange(len(users)), counts), device=device)
    cols = torch.as_tensor(np.concatenate(candidates), dtype=torch.int64, device=device)
    pair_users = index[rows]
    if cpu:
        bounds = np.concatenate([[0], np.cumsum(counts)])
        calls = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
    else:
        total = int(counts.sum())
        calls = [(a, min(a + batch_size, total)) for a in range(0, total, batch_size)]
    for a, b in calls:
        logits[rows[a:b], cols[a:b]] = model(pair_users[a:b], cols[a:b]).float()
    return logits
