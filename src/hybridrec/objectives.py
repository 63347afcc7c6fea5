"""Training objectives: what one epoch's batches are and what loss a batch gives.

``fit`` owns the loop (optimiser, progress, validation, early stopping); an objective owns
the data of an epoch and the loss. A model names its objective in a class attribute
(``objective = "next_item"``); models without one are trained pointwise. A new kind of model
with a new way to learn is one class here and one entry in :data:`OBJECTIVES`.

- :class:`Pointwise`: (user, item) pairs. Labelled rows as they are (BCE), or positives with
  freshly sampled negatives every epoch (BCE), or (positive, negative) pairs (BPR).
- :class:`NextItem`: each user's ordered history; at every position the model predicts the
  next item, against sampled negatives (BCE/BPR) or the whole catalogue (``ce``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from hybridrec.config import TrainConfig
from hybridrec.data.dataset import Batch, RecSysDataset, iterate_batches
from hybridrec.data.encoding import UNKNOWN_INDEX
from hybridrec.data.sampling import NegativeSampler
from hybridrec.data.sequences import pack_histories
from hybridrec.errors import ConfigError


class Objective(Protocol):
    """One way of learning from the training data."""

    #: Samples (rows, or predicted positions) in one epoch: sizes the progress bar.
    num_samples: int

    def batches(self, generator: torch.Generator) -> Iterator[Any]:
        """One epoch of batches, shuffled with ``generator``."""
        ...

    def step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(mean loss, correct predictions, samples)`` of a batch; the loss has a graph."""
        ...


class Pointwise:
    """(user, item) rows: as labelled, or positives with fresh sampled negatives."""

    def __init__(
        self, train: RecSysDataset, config: TrainConfig, device: torch.device, num_items: int
    ) -> None:
        if config.loss not in ("bce", "bpr"):
            raise ConfigError(
                f"--loss {config.loss} is for sequence models (sasrec); "
                "use --loss bce or --loss bpr with this model"
            )
        self.config = config
        self.device = device
        labelled = bool((train.target < 0.5).any())
        self.pairwise = config.loss == "bpr"
        self.sampled = self.pairwise or not labelled
        if not self.sampled:
            self.data = train.to(device)
            self.num_samples = len(train)
            return
        positive = train.target > 0.5
        if not bool(positive.any()):
            raise ConfigError(
                "the training data has no positive rows (target 1) to sample negatives against"
            )
        self.users, self.items = train.user_idx[positive], train.item_idx[positive]
        self.sampler = NegativeSampler(self.users, self.items, num_items, config.sampling)  # type: ignore[arg-type]
        factor = config.negatives if self.pairwise else config.negatives + 1
        self.num_samples = len(self.users) * factor

    def batches(self, generator: torch.Generator) -> Iterator[Batch]:
        if not self.sampled:
            return iterate_batches(
                self.data, self.config.batch_size, shuffle=True, generator=generator
            )
        k = self.config.negatives
        negatives = self.sampler.sample(self.users, k, generator).flatten()  # (P * k,)
        users = self.users.repeat_interleave(k)
        if self.pairwise:  # (user, positive, negative) triples; the negative rides in `target`
            rows = RecSysDataset(users, self.items.repeat_interleave(k), negatives.float())
        else:
            rows = RecSysDataset(
                torch.cat([self.users, users]),
                torch.cat([self.items, negatives]),
                torch.cat([torch.ones(len(self.users)), torch.zeros(len(users))]),
            )
        return iterate_batches(
            rows.to(self.device), self.config.batch_size, shuffle=True, generator=generator
        )

    def step(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, int]:
        if self.pairwise:
            margin = model(batch.user_idx, batch.item_idx) - model(
                batch.user_idx,
                batch.target.long(),  # target holds the negative
            )
            return -F.logsigmoid(margin).mean(), (margin.detach() > 0).sum(), len(margin)
        logits = model(batch.user_idx, batch.item_idx)
        loss = F.binary_cross_entropy_with_logits(logits, batch.target)
        hits = ((logits.detach() > 0) == (batch.target > 0.5)).sum()
        return loss, hits, len(logits)


class NextItem:
    """Next-item prediction along each user's chronological history (SASRec-style).

    Every user with at least two positives contributes their latest ``max_len + 1`` items:
    the model reads items ``0..t`` and is scored on item ``t + 1``. ``--batch-size`` counts
    predicted positions, so samples/s compare with pointwise models; a batch holds
    ``batch_size // max_len`` histories (at least one).

    Losses: ``bce`` (default) scores the next item against ``--negatives`` uniformly sampled
    items per position; ``bpr`` uses the same negatives pairwise; ``ce`` is a softmax over
    the whole catalogue. Sampled negatives are not filtered against the user's history (an
    accidental hit on one of the ~N_user/N_items of the catalogue they know is rare and
    costs only noise); a negative equal to the target itself is dropped.
    """

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
        histories = pack_histories(
            train.user_idx[positive],
            train.item_idx[positive],
            num_users,
            max_len + 1,
            None if train.timestamp is None else train.timestamp[positive],
        )
        lengths = (histories != UNKNOWN_INDEX).sum(1)
        self.histories = histories[lengths >= 2].to(device)  # (S, max_len + 1)
        if len(self.histories) == 0:
            raise ConfigError(
                "sequence models need users with at least two positive interactions; "
                "none has more than one"
            )
        self.num_samples = int((self.histories[:, 1:] != UNKNOWN_INDEX).sum())
        self.per_batch = max(1, config.batch_size // max_len)

    def batches(self, generator: torch.Generator) -> Iterator[torch.Tensor]:
        order = torch.randperm(len(self.histories), generator=generator).to(self.device)
        for start in range(0, len(order), self.per_batch):
            batch = self.histories[order[start : start + self.per_batch]]
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
        items = model.item_embedding.weight
        if self.config.loss == "ce":
            logits = states @ items.T  # (N, I)
            logits[:, UNKNOWN_INDEX] = -torch.inf
            loss = F.cross_entropy(logits, targets)
            hits = (logits.detach().argmax(1) == targets).sum()
            return loss, hits, n
        k = self.config.negatives
        negatives = torch.randint(1, self.num_items, (n, k), device=states.device)
        pos = (states * items[targets]).sum(-1)  # (N,)
        neg = torch.einsum("nd,nkd->nk", states, items[negatives])  # (N, k)
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


def make_objective(
    model: nn.Module, train: RecSysDataset, config: TrainConfig, device: torch.device
) -> Objective:
    """The objective ``model`` declares (``model.objective``), built on ``train``."""
    name = getattr(model, "objective", "pointwise")
    model_config = getattr(model, "config", None)
    num_items = getattr(model_config, "num_items", int(train.item_idx.max()) + 1)
    if name == "pointwise":
        return Pointwise(train, config, device, num_items)
    if name == "next_item":
        return NextItem(train, config, device, num_items, model_config.max_len)  # type: ignore[union-attr]
    raise ConfigError(f"{type(model).__name__} asks for an unknown objective {name!r}")


#: Objective names a model may declare.
OBJECTIVES = ("pointwise", "next_item")
