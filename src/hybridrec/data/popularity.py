"""Item popularity, counted one way for every part of hybridrec.

The popularity model ranks by it, unknown users are recommended by it (``SeenItems``
stores it), the sampled softmax draws its negatives from it, and the demo's labelled-data
baseline turns it into a positive rate. All of them count a training row once per
occurrence, positives only, so they agree on what "popular" means.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hybridrec.data.dataset import RecSysDataset


def item_counts(item_idx: Any, num_items: int, target: Any = None) -> torch.Tensor:
    """int64 (num_items,): training positives per item index, repeated rows counted each time.

    Args:
        item_idx: (N,) item indices of the training rows (tensor or array).
        num_items: length of the result (``IdEncoder.num_embeddings``).
        target: (N,) 0/1 labels; rows with ``target <= 0.5`` are not counted. None: every
            row is a positive.

    Example:
        >>> item_counts(torch.tensor([2, 2, 1, 3]), 4, target=torch.tensor([1, 1, 1, 0])).tolist()
        [0, 1, 2, 0]
    """
    items = torch.as_tensor(np.asarray(item_idx) if not torch.is_tensor(item_idx) else item_idx)
    items = items.reshape(-1).long().cpu()
    if target is not None:
        items = items[torch.as_tensor(target).reshape(-1).cpu() > 0.5]
    return torch.bincount(items, minlength=num_items)


def popularity_logits(
    train: RecSysDataset, data: RecSysDataset, prior_strength: float = 10.0
) -> torch.Tensor:
    """Logits (N,) for ``data``'s rows from each item's positive rate in labelled ``train``.

    The popularity baseline for 0/1-labelled data: the rate (:func:`item_counts` of the
    positives over all rows of the item) is shrunk toward the global positive rate with
    ``prior_strength`` pseudo-rows, so rare items do not get extreme scores; unknown items
    get the global rate.
    """
    num_items = int(max(train.item_idx.max().item(), data.item_idx.max().item())) + 1
    positives = item_counts(train.item_idx, num_items, target=train.target).double()
    rows = item_counts(train.item_idx, num_items).double()
    base_rate = train.target.double().mean().clamp(1e-6, 1 - 1e-6)
    rate = (positives + prior_strength * base_rate) / (rows + prior_strength)
    return torch.logit(rate.clamp(1e-6, 1 - 1e-6)[data.item_idx]).float()
