"""Training objectives: what one epoch's batches are and what loss a batch gives.

``fit`` owns the loop (optimiser, progress, validation, early stopping); an objective owns
the data of an epoch and the loss. A model names its objective among its capabilities
(``objective = "next_item"``, see :class:`~hybridrec.models.RecModel`); the default is
pointwise. A new kind of model with a new way to learn is one module in this package and
one entry in :data:`OBJECTIVES` and :func:`make_objective`.

- :class:`Pointwise`: (user, item) pairs. Labelled rows as they are (BCE), or positives with
  freshly sampled negatives every epoch (BCE), or (positive, negative) pairs (BPR).
- :class:`Softmax`: the same models with ``--loss ce``: each positive against the whole
  catalogue (cross-entropy over ``score_all``), no sampling.
- :class:`NextItem`: each user's ordered history; at every position the model predicts the
  next item, against sampled negatives (BCE/BPR) or the whole catalogue (``ce``).

Positives-only data is shaped by two options of :class:`~hybridrec.config.TrainConfig`:
with timestamps, each positive (and each negative drawn for it) carries a recency weight
(:func:`~hybridrec.data.sequences.recency_weights`, ``--recency-half-life``), and models
with a user-item dot product add :func:`catalogue_loss` (``--catalogue-weight``) to their
sampled loss. Labelled 0/1 rows are trained as they are.

Multi-process training (``torchrun``): ``batches(generator, rank=r, world=w)`` gives rank
``r`` its share of each epoch. Every rank shuffles with the same ``generator`` (same seed,
same permutation), and each global batch of ``batch_size`` samples is split into ``w``
contiguous parts (:func:`shard_order`); rank ``r`` trains on part ``r``. The ranks' parts are
disjoint, cover the epoch, and a step's parts together are exactly the single-process batch,
so with gradients averaged over ranks the total batch is unchanged. Sampled negatives come
from ``sample_generator``, which each rank seeds differently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch import nn

from hybridrec.config import TrainConfig
from hybridrec.data.dataset import RecSysDataset
from hybridrec.errors import ConfigError
from hybridrec.models import RecModel, capabilities
from hybridrec.objectives.batching import positive_weights, shard_order
from hybridrec.objectives.next_item import NextItem
from hybridrec.objectives.pointwise import SAMPLE_CHUNK, Pointwise, catalogue_loss
from hybridrec.objectives.softmax import Softmax

__all__ = [
    "OBJECTIVES",
    "SAMPLE_CHUNK",
    "NextItem",
    "Objective",
    "Pointwise",
    "Softmax",
    "catalogue_loss",
    "make_objective",
    "positive_weights",
    "shard_order",
]


class Objective(Protocol):
    """One way of learning from the training data."""

    #: Samples (rows, or predicted positions) in one epoch.
    num_samples: int
    #: Whether the embedding tables may take sparse gradients (``--sparse-embeddings``).
    supports_sparse: bool

    @property
    def num_batches(self) -> int:
        """Steps of one single-process epoch: sizes the progress bar."""
        ...

    def batches(
        self,
        generator: torch.Generator,
        *,
        rank: int = 0,
        world: int = 1,
        sample_generator: torch.Generator | None = None,
    ) -> Iterator[Any]:
        """Rank ``rank``'s share of one epoch of batches, shuffled with ``generator`` (the
        same on every rank); negatives drawn with ``sample_generator`` (default:
        ``generator``)."""
        ...

    def step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(mean loss, correct predictions, samples)`` of a batch; the loss has a graph."""
        ...


def make_objective(
    model: nn.Module, train: RecSysDataset, config: TrainConfig, device: torch.device
) -> Objective:
    """The objective ``model`` declares (its ``objective`` capability), built on ``train``."""
    declared = capabilities(model)
    if config.loss == "auto":  # the loss the model trains best with
        config = dataclasses.replace(config, loss=declared.default_loss)
    # a registered model knows its catalogue; a bare module (a test's) has the data's
    registered = isinstance(model, RecModel)
    num_items = model.config.num_items if registered else int(train.item_idx.max()) + 1
    name = declared.objective
    if name == "pointwise" and config.loss == "ce":
        return Softmax(train, config, device)
    if name == "pointwise":
        catalogue = config.catalogue_weight if declared.retrieval else 0.0
        return Pointwise(train, config, device, num_items, catalogue_weight=catalogue)
    if name == "next_item":
        return NextItem(train, config, device, num_items, model.config.max_len)
    raise ConfigError(f"{type(model).__name__} asks for an unknown objective {name!r}")


#: Objective names a model may declare.
OBJECTIVES = ("pointwise", "next_item")
