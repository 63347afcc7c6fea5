"""Full-catalogue top-K: every item scored for a chunk of users, the best ``k`` kept.

Every caller that ranks uses these functions: :class:`Recommender` (known users, the
popularity fallback, new users, similar items), two-stage retrieval, and the service's cache,
which must answer exactly as ``recommend`` does. Two rules make a user's result depend only
on that user: ties are broken by the lower item index, whatever order ``torch.topk``
returned them in, and on CPU each user is scored by its own model call
(:func:`score_users`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from hybridrec.data.encoding import UNKNOWN_INDEX, IdEncoder
from hybridrec.data.seen import SeenItems
from hybridrec.models import model_device
from hybridrec.recommend.checks import id_list, unique
from hybridrec.recommend.result import IdsLike

#: Elements of the (users, items, widest layer) activations per ``score_all`` call.
_CHUNK_ELEMENTS = 20_000_000
#: On an accelerator, users per ``score_all`` call are padded to a multiple of this.
_ROW_ALIGN = 8


def score_users(model: nn.Module, users: np.ndarray) -> torch.Tensor:
    """float32 logits (len(users), num_items) of ``model.score_all`` for user indices.

    On CPU each user is scored by its own ``score_all`` call. CPU matrix products round a
    row differently depending on how many rows they multiply (a matrix-vector kernel for
    one row, remainder blocks for odd counts), so this is what makes ``recommend`` and
    ``recommend_many`` agree bit for bit; it also keeps a single request cheap (padding
    one user to an aligned batch cost 8x the work). Accelerators get one padded call.
    """
    device = model_device(model)
    if device.type == "cpu":
        rows = [model.score_all(torch.as_tensor(users[j : j + 1])) for j in range(len(users))]
        return torch.cat(rows).float() if rows else torch.zeros(0, model.config.num_items)
    padded = np.zeros(-(-len(users) // _ROW_ALIGN) * _ROW_ALIGN, dtype=np.int64)
    padded[: len(users)] = users  # padding rows are the unknown user, then dropped
    logits = model.score_all(torch.as_tensor(padded, device=device))
    return logits[: len(users)].float()


def default_chunk_users(model: nn.Module, num_items: int) -> int:
    """Users per ``score_all`` call: about 2e7 activations (users x items x the widest
    linear layer, since MLP models run every layer on every user-item pair), rounded down
    to a multiple of 8 (see ``_ROW_ALIGN``) and at least 8."""
    linear = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    per_user = num_items * max([1, *linear])
    users = _CHUNK_ELEMENTS // per_user
    return max(_ROW_ALIGN, users // _ROW_ALIGN * _ROW_ALIGN)


def top_k(scores: torch.Tensor, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per row, ``(column indices, scores)`` of the ``k`` best finite scores, best first.

    Ties are broken by the lower column index, whatever order ``torch.topk`` returned them
    in, so a row's result depends only on its scores. ``-inf`` marks excluded columns; a row
    with fewer than ``k`` finite scores returns all of them.
    """
    kk = min(k, scores.shape[1])
    values, indices = torch.topk(scores, kk, dim=1)
    kth = values[:, -1:]
    # the top set is exact when nothing outside it ties with the k-th score
    exact = ((scores >= kth).sum(dim=1) == kk) & torch.isfinite(kth[:, 0])
    values_np, indices_np = values.cpu().numpy(), indices.cpu().numpy()
    kth_np, exact_np = kth[:, 0].cpu().numpy(), exact.cpu().numpy()
    out = []
    for r in range(scores.shape[0]):
        if exact_np[r]:
            order = np.lexsort((indices_np[r], -values_np[r]))
            out.append((indices_np[r][order], values_np[r][order]))
            continue
        row = scores[r].cpu().numpy()
        candidates = np.flatnonzero((row >= kth_np[r]) & np.isfinite(row))  # ascending index
        best = candidates[np.argsort(-row[candidates], kind="stable")[:kk]]
        out.append((best, row[best]))
    return out


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Probabilities from logits, computed by torch as the model's own scores are."""
    return torch.sigmoid(torch.as_tensor(logits, dtype=torch.float32)).numpy()


def exclusion_mask(
    seen: SeenItems,
    users: np.ndarray,
    exclude_seen: bool,
    allowed: torch.Tensor | None,
    device: torch.device,
) -> torch.Tensor:
    """(len(users), num_items) True where an item must not be recommended: item 0 always,
    the users' training positives with ``exclude_seen``, items outside ``allowed``."""
    mask = torch.zeros(len(users), seen.num_items, dtype=torch.bool, device=device)
    mask[:, UNKNOWN_INDEX] = True
    if exclude_seen:
        indptr = seen.indptr
        starts, lengths = indptr[users], indptr[users + 1] - indptr[users]
        rows = np.repeat(np.arange(len(users)), lengths)
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        cols = seen.items[np.repeat(starts, lengths) + offsets]
        rows_t = torch.as_tensor(rows, device=device)
        mask[rows_t, torch.as_tensor(cols, dtype=torch.int64, device=device)] = True
    if allowed is not None:
        mask |= ~allowed
    return mask


def allowed_items(
    encoder: IdEncoder, items: IdsLike | None, device: torch.device
) -> tuple[torch.Tensor | None, list[Any]]:
    """``(allowed (num_items,) bool or None for all, unknown raw ids)`` for a candidate list."""
    if items is None:
        return None, []
    raw = id_list(items, "items")
    index = encoder.transform(raw) if raw else np.zeros(0, dtype=np.int64)
    allowed = torch.zeros(encoder.num_embeddings, dtype=torch.bool, device=device)
    allowed[torch.as_tensor(index[index != UNKNOWN_INDEX], device=device)] = True
    return allowed, unique(raw[j] for j in np.flatnonzero(index == UNKNOWN_INDEX))
