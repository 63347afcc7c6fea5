"""Batch size and learning rate that follow the size of an epoch.

A step's fixed costs (Python, kernel launches, the optimiser's row gathers, the catalogue
softmax's shared draws) are paid per batch, so with 2,048 samples a step a
MovieLens-20M-sized epoch (180M sampled rows) spends a third of its time on them. Large
epochs therefore take larger batches: 4,096 samples from 4M per epoch and 8,192 from 16M,
the sizes large-scale recommender training runs with (DLRM and TorchRec examples use
thousands to tens of thousands). Fewer, larger steps move Adam less per epoch, so the
learning rate grows with the square root of the batch (Malladi et al., 2022, "On the SDEs
and Scaling Rules for Adaptive Gradient Algorithms", the square-root rule for Adam).
Measured on planted low-rank data of 2.9M positives (docs/benchmarks.md): 8,192 with the
learning rate doubled ranked as well after each epoch as 2,048, in ~25% less time per
epoch. Epochs below 4M samples (MovieLens-100K and 1M) keep 2,048 and 0.005, where the
defaults were tuned.

The rule covers the pointwise objective (the hybrid, mf and NCF models). Next-item and
full-softmax training keep the small-data defaults: their batches count histories and
catalogue rows, and their defaults were chosen at 2,048.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace

from torch import nn

from hybridrec.config import DEFAULT_BATCH_SIZE, DEFAULT_LEARNING_RATE, TrainConfig
from hybridrec.data.dataset import RecSysDataset
from hybridrec.models import capabilities

logger = logging.getLogger(__name__)

#: ``(samples per epoch at least, batch size)``, largest first.
BATCH_TIERS = ((16_000_000, 8192), (4_000_000, 4096))


def epoch_samples(model: nn.Module | str, train: RecSysDataset, config: TrainConfig) -> int | None:
    """Samples of one pointwise epoch on ``train``: its rows when labelled, else each
    positive with its sampled negatives; ``None`` for the other objectives."""
    declared = capabilities(model)
    loss = declared.default_loss if config.loss == "auto" else config.loss
    if declared.objective != "pointwise" or loss == "ce":
        return None
    labelled = bool((train.target < 0.5).any())
    if labelled and loss == "bce":
        return len(train)
    positives = int((train.target > 0.5).sum())
    return positives * (config.negatives if loss == "bpr" else config.negatives + 1)


def default_batch_size(samples: int | None) -> int:
    """The default batch for an epoch of ``samples`` (``None``: not scaled)."""
    for threshold, size in BATCH_TIERS:
        if samples is not None and samples >= threshold:
            return size
    return DEFAULT_BATCH_SIZE


def left_to_data(config: TrainConfig) -> list[str]:
    """The options of ``batch_size`` and ``learning_rate`` that :func:`with_data_defaults`
    will choose (unset): recorded with a model, so that ``hybridrec update`` chooses them
    again for its own rows instead of inheriting a choice made for other data."""
    return [name for name in ("batch_size", "learning_rate") if getattr(config, name) is None]


def with_data_defaults(
    model: nn.Module | str, train: RecSysDataset, config: TrainConfig
) -> TrainConfig:
    """``config`` with an unset ``--batch-size`` and ``--lr`` chosen for ``train``'s size.

    A batch given by the user is kept as it is, and so is its learning rate default
    (0.005): only the default batch brings its own learning rate.
    """
    if config.batch_size is not None and config.learning_rate is not None:
        return config
    batch, lr = config.batch_size, config.learning_rate
    if batch is None:
        samples = epoch_samples(model, train, config)
        batch = default_batch_size(samples)
        if lr is None:
            lr = DEFAULT_LEARNING_RATE * math.sqrt(batch / DEFAULT_BATCH_SIZE)
        if batch != DEFAULT_BATCH_SIZE:
            logger.info(
                f"{samples:,} samples per epoch: batch size {batch:,}, learning rate {lr:.4g} "
                "(--batch-size and --lr choose others)"
            )
    if lr is None:
        lr = DEFAULT_LEARNING_RATE
    return replace(config, batch_size=batch, learning_rate=lr)
