"""The full-catalogue softmax objective (``--loss ce`` for the pointwise models)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from hybridrec.config import TrainConfig
from hybridrec.data.dataset import Batch, RecSysDataset
from hybridrec.data.encoding import UNKNOWN_INDEX
from hybridrec.data.sampling import NegativeSampler
from hybridrec.errors import ConfigError
from hybridrec.objectives.batching import positive_weights, shard_order, slices, weighted_mean


class Softmax:
    """Each positive (user, item) against the whole catalogue: cross-entropy over
    ``score_all(user)`` (``--loss ce`` for the pointwise models).

    No negatives are sampled: every other item is a negative, each step, except (with
    ``--known-negatives exclude``, the default) the user's other training items, which a
    ranking never recommends: they are left out of the row's softmax. A step costs one
    ``score_all`` per row, which is a matrix product for ``mf``/``gmf`` but a full MLP pass
    over every item for ``hybrid``/``mlp``/``neumf`` (use a small ``--batch-size`` there).
    ``score_all`` reads whole tables, so the tables take dense gradients.
    """

    supports_sparse = False

    def __init__(self, train: RecSysDataset, config: TrainConfig, device: torch.device) -> None:
        positive = train.target > 0.5
        if not bool(positive.any()):
            raise ConfigError("the training data has no positive rows (target 1) to learn from")
        self.config = config
        self.users = train.user_idx[positive].to(device)
        self.items = train.item_idx[positive].to(device)
        weights = positive_weights(train, positive, config)
        self.weights = None if weights is None else weights.to(device)
        self.num_samples = len(self.users)
        # the sorted (user, item) keys list a batch's users' items without a loop
        self.known = None
        if config.known_negatives == "exclude":
            num_items = max(2, int(self.items.max()) + 1)
            self.known = NegativeSampler(self.users, self.items, num_items)

    @property
    def num_batches(self) -> int:
        """Steps of one single-process epoch."""
        return math.ceil(self.num_samples / self.config.batch)

    def batches(
        self,
        generator: torch.Generator,
        *,
        rank: int = 0,
        world: int = 1,
        sample_generator: torch.Generator | None = None,
    ) -> Iterator[Batch]:
        order = torch.randperm(self.num_samples, generator=generator).to(self.users.device)
        mine, sizes = shard_order(order, self.config.batch, rank, world)
        columns = [self.users[mine], self.items[mine]]
        columns.append(torch.ones_like(columns[0], dtype=torch.float32))
        if self.weights is not None:
            columns.append(self.weights[mine])
        return slices(tuple(columns), sizes)

    def step(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, int]:
        logits = model.score_all(batch.user_idx)  # (B, I)
        logits[:, UNKNOWN_INDEX] = -torch.inf
        if self.known is not None:
            logits = self._without_known(logits, batch)
        loss = weighted_mean(
            F.cross_entropy(logits, batch.item_idx, reduction="none"), batch.weight
        )
        hits = (logits.detach().argmax(1) == batch.item_idx).sum()
        return loss, hits, len(logits)

    def _without_known(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """``logits`` with each row's other training items of its user at -inf (the row's
        own positive stays: its target is always finite, so the loss is too)."""
        owner, seen = self.known.items_of(batch.user_idx)  # type: ignore[union-attr]
        owner, seen = owner.to(logits.device), seen.to(logits.device)
        other = seen != batch.item_idx[owner]
        excluded = torch.tensor(-torch.inf, dtype=logits.dtype, device=logits.device)
        return logits.index_put((owner[other], seen[other]), excluded)
