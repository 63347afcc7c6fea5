"""Next-item prediction along each user's history: the objective of sequence models."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from hybridrec.config import TrainConfig
from hybridrec.data.dataset import RecSysDataset
from hybridrec.data.encoding import UNKNOWN_INDEX
from hybridrec.data.popularity import item_counts
from hybridrec.data.sequences import history_windows, pack_histories
from hybridrec.errors import ConfigError
from hybridrec.models.layers import group_dots
from hybridrec.objectives.batching import shard_order
from hybridrec.sampled_softmax import KnownItems, SharedNegatives


class NextItem:
    """Next-item prediction along each user's chronological history (SASRec-style).

    Every user with at least two positives contributes their latest ``max_len + 1`` items
    (``--history-windows latest``, the default) or their whole history in windows of that
    length (``all``, :func:`~hybridrec.data.sequences.history_windows`; no better on
    MovieLens-100K's val split, where what is old predicts the next item least): the model
    reads items ``0..t`` of a window and is scored on item ``t + 1``. ``--batch-size`` counts
    predicted positions, so samples/s compare with pointwise models; a batch holds
    ``batch_size // max_len`` histories (at least one).

    Losses: ``bce`` scores the next item against ``--negatives`` uniformly sampled items per
    position; ``bpr`` uses the same negatives pairwise; ``ce`` (sasrec's default) is a
    softmax over the catalogue: exact up to ``--softmax-negatives`` items, a sampled softmax
    with shared, log-Q-corrected negatives above (:mod:`hybridrec.sampled_softmax`), so a
    position's cost does not grow with the catalogue. Sampled negatives are not filtered
    against the user's history (an accidental hit on one of the ~N_user/N_items of the
    catalogue they know is rare and costs only noise); a negative equal to the target
    itself is dropped. With ``--known-negatives exclude`` (the default) the softmax, exact
    or sampled, does not count the other items of the history window a position belongs
    to as its negatives, earlier or later ones: ranking never recommends them.
    """

    #: Items are looked up through the embedding module: the table can be sparse.
    supports_sparse = True

    def __init__(
        self,
        train: RecSysDataset,
        config: TrainConfig,
        device: torch.device,
        num_items: int,
        max_len: int,
    ) -> None:
        self.config, self.device, self.num_items = config, device, num_items
        positive = train.target > 0.5
        if not bool(positive.any()):
            raise ConfigError("the training data has no positive rows (target 1) to learn from")
        num_users = int(train.user_idx.max()) + 1
        rows = train.user_idx[positive], train.item_idx[positive]
        time = None if train.timestamp is None else train.timestamp[positive]
        if config.history_windows == "all":
            histories = history_windows(*rows, max_len + 1, time)
        else:
            histories = pack_histories(*rows, num_users, max_len + 1, time)
        lengths = (histories != UNKNOWN_INDEX).sum(1)
        self.histories = histories[lengths >= 2].to(device)  # (S, max_len + 1)
        if len(self.histories) == 0:
            raise ConfigError(
                "sequence models need users with at least two positive interactions; "
                "none has more than one in the rows trained on (without --val, one row of "
                "each user is held out first to choose the epochs: --val none trains on all)"
            )
        # predicted positions: a next item with an item before it (a window's first item
        # is never a target)
        real = self.histories != UNKNOWN_INDEX
        self.num_samples = int((real[:, 1:] & real[:, :-1]).sum())
        self.per_batch = max(1, config.batch // max_len)
        counts = item_counts(train.item_idx[positive], num_items)
        self.softmax = SharedNegatives(counts, config.softmax_negatives).to(device)

    @property
    def num_batches(self) -> int:
        """Steps of one single-process epoch (batches of whole histories)."""
        return math.ceil(len(self.histories) / self.per_batch)

    def batches(
        self,
        generator: torch.Generator,
        *,
        rank: int = 0,
        world: int = 1,
        sample_generator: torch.Generator | None = None,
    ) -> Iterator[torch.Tensor]:
        # negatives are drawn in step() from the global RNG, which fit seeds per rank
        order = torch.randperm(len(self.histories), generator=generator).to(self.device)
        mine, sizes = shard_order(order, max(self.per_batch, world), rank, world)
        start = 0
        for size in sizes:
            batch = self.histories[mine[start : start + size]]
            start += size
            # drop columns that are padding in every row: shorter attention, same result
            # (data-dependent, so skipped on accelerators to avoid a host sync per step)
            if self.device.type == "cpu":
                first = int((batch != UNKNOWN_INDEX).any(0).int().argmax())
                batch = batch[:, min(first, batch.shape[1] - 2) :]
            yield batch

    def step(self, model: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        inputs, targets = batch[:, :-1], batch[:, 1:]
        valid = (targets != UNKNOWN_INDEX) & (inputs != UNKNOWN_INDEX)
        states = model.encode(inputs)[valid]  # (N, D) states that have a next item
        targets = targets[valid]  # (N,)
        n = len(targets)
        items = model.item_embedding
        if self.config.loss == "ce":
            known = None
            if self.config.known_negatives == "exclude":  # the items of each row's window
                rows = torch.arange(len(batch), device=batch.device)[:, None]
                windows = rows.expand_as(batch)
                known = KnownItems(windows[:, 1:][valid], windows.reshape(-1),
                                   batch.reshape(-1), len(batch))  # fmt: skip
            loss, hits = self.softmax.loss(states, items, targets, known=known)
            return loss, hits, n
        k = self.config.negatives
        negatives = torch.randint(1, self.num_items, (n, k), device=states.device)
        pos = (states * items(targets)).sum(-1)  # (N,)
        neg = group_dots(states, items(negatives))  # (N, k)
        keep = negatives != targets[:, None]
        if self.config.loss == "bpr":
            margin = pos[:, None] - neg
            loss = -(F.logsigmoid(margin) * keep).sum() / keep.sum().clamp(min=1)
            return loss, (margin.detach() > 0).all(1).sum(), n
        loss_pos = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos), reduction="sum")
        loss_neg = (
            F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg), reduction="none") * keep
        ).sum()
        loss = (loss_pos + loss_neg) / (n + keep.sum())
        hits = ((pos.detach() > 0).sum() + ((neg.detach() < 0) & keep).sum()) * n / (n + keep.sum())
        return loss, hits, n
