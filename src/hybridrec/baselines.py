"""Baselines every trained model is shown beside."""

from __future__ import annotations

import torch

from hybridrec.data.dataset import RecSysDataset


def popularity_logits(
    train: RecSysDataset, data: RecSysDataset, prior_strength: float = 10.0
) -> torch.Tensor:
    """Logits (N,) for ``data`` from each item's positive rate in ``train``, nothing else.

    The rate is shrunk toward the global positive rate with ``prior_strength`` pseudo-rows,
    so rare items do not get extreme scores; unknown items get the global rate.
    """
    num_items = int(max(train.item_idx.max().item(), data.item_idx.max().item())) + 1
    positives = torch.bincount(train.item_idx, weights=train.target.double(), minlength=num_items)
    counts = torch.bincount(train.item_idx, minlength=num_items).double()
    base_rate = train.target.double().mean().clamp(1e-6, 1 - 1e-6)
    rate = (positives + prior_strength * base_rate) / (counts + prior_strength)
    rate = rate.clamp(1e-6, 1 - 1e-6)
    return torch.logit(rate[data.item_idx]).float()
