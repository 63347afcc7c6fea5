"""Pointwise objectives: (user, item) rows as labelled, or positives with freshly sampled
negatives (BCE) or (positive, negative) pairs (BPR), plus the catalogue softmax term."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from hybridrec.config import TrainConfig
from hybridrec.data.dataset import Batch, RecSysDataset
from hybridrec.data.popularity import item_counts
from hybridrec.data.sampling import NegativeSampler
from hybridrec.errors import ConfigError
from hybridrec.objectives.batching import (
    positive_weights,
    shard_order,
    shuffled,
    slices,
    weighted_mean,
)
from hybridrec.retrieval import query_vectors, retrieval_factors
from hybridrec.sampled_softmax import KnownItems, SharedNegatives

#: Positives whose negatives are drawn in one call: bounds an epoch's memory to a chunk
#: (not the whole epoch's rows) while keeping the sampler's per-call overhead amortised.
SAMPLE_CHUNK = 1 << 16


def catalogue_loss(
    model: nn.Module,
    user_idx: torch.Tensor,
    item_idx: torch.Tensor,
    weight: torch.Tensor | None,
    negatives: SharedNegatives | None = None,
    known: KnownItems | None = None,
) -> torch.Tensor:
    """Softmax cross-entropy of each positive against the catalogue, on the model's
    dot-product score (what two-stage retrieval ranks by).

    Sampled negatives are mostly obscure items, so they rarely teach a model to rank the
    positive above the *popular* items it competes with in a full ranking; a softmax over
    the catalogue does. ``negatives`` makes it a sampled softmax whose cost per row does
    not grow with the catalogue (:mod:`hybridrec.sampled_softmax`); without it the softmax
    is exact over every item. ``known`` items are not a row's negatives.
    """
    _, items = retrieval_factors(model)
    if negatives is None:
        negatives = SharedNegatives(torch.zeros(items.num_embeddings), items.num_embeddings)
        negatives.to(items.weight.device)
    loss, _ = negatives.loss(
        query_vectors(model, user_idx), items, item_idx, weight, count_hits=False, known=known
    )
    return loss


class Pointwise:
    """(user, item) rows: as labelled, or positives with fresh sampled negatives.

    Sampled epochs are generated as they are consumed: the positives are shuffled, and each
    batch holds ``ceil(batch_size / (k + 1))`` of them with their ``k`` negatives (BPR:
    ``k`` pairs per positive), drawn :data:`SAMPLE_CHUNK` positives at a time. Memory is
    bounded by a chunk, not by the epoch's ``(k + 1) * positives`` rows.
    """

    #: Every parameter is reached through embedding lookups or dense layers: the tables can
    #: take sparse gradients.
    supports_sparse = True

    def __init__(
        self,
        train: RecSysDataset,
        config: TrainConfig,
        device: torch.device,
        num_items: int,
        catalogue_weight: float = 0.0,
    ) -> None:
        if config.loss not in ("bce", "bpr"):
            raise ConfigError(f"Pointwise trains with --loss bce or bpr, got {config.loss}")
        self.config = config
        self.device = device
        self.catalogue_weight = 0.0
        self.softmax: SharedNegatives | None = None
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
        if bool(positive.all()):  # positives-only data: the columns as they are, no copy
            self.users, self.items = train.user_idx, train.item_idx
        else:
            self.users, self.items = train.user_idx[positive], train.item_idx[positive]
        self.weights = positive_weights(train, positive, config)  # (P,) or None
        self.catalogue_weight = catalogue_weight
        if catalogue_weight > 0:
            counts = item_counts(self.items, num_items)
            self.softmax = SharedNegatives(counts, config.softmax_negatives).to(device)
        self.sampler = NegativeSampler(self.users, self.items, num_items, config.sampling)  # type: ignore[arg-type]
        full = self.sampler.saturated_users()
        if len(full):  # found now, not as a sampler failure mid-epoch
            raise ConfigError(
                f"{len(full)} user(s) (index {int(full[0])} first) interacted with every one "
                f"of the {num_items - 1} items, so no negative can be drawn for them: sampled "
                "training needs items a user has not seen (add an item catalogue with --items, "
                "or give labelled 0/1 rows)"
            )
        self.factor = config.negatives if self.pairwise else config.negatives + 1
        self.num_samples = len(self.users) * self.factor
        self.per_batch = max(1, math.ceil(config.batch / self.factor))

    def batches(
        self,
        generator: torch.Generator,
        *,
        rank: int = 0,
        world: int = 1,
        sample_generator: torch.Generator | None = None,
    ) -> Iterator[Batch]:
        bs = self.config.batch
        if not self.sampled and world == 1:
            return shuffled(
                (self.data.user_idx, self.data.item_idx, self.data.target), bs, generator
            )
        if not self.sampled:  # the same permutation as with one process, then this rank's part
            order = torch.randperm(len(self.data), generator=generator).to(self.device)
            mine, sizes = shard_order(order, bs, rank, world)
            data = self.data
            return slices((data.user_idx[mine], data.item_idx[mine], data.target[mine]), sizes)
        # every rank shuffles the positives alike and takes its part of each global batch
        order = torch.randperm(len(self.users), generator=generator)
        mine, sizes = shard_order(order, max(self.per_batch, world), rank, world)
        return self._sampled(mine, sizes, sample_generator or generator)

    @property
    def num_batches(self) -> int:
        """Steps of one single-process epoch."""
        if not self.sampled:
            return math.ceil(self.num_samples / self.config.batch)
        return math.ceil(len(self.users) / self.per_batch)

    def _sampled(
        self, mine: torch.Tensor, sizes: list[int], generator: torch.Generator
    ) -> Iterator[Batch]:
        """Batches of the positives ``mine`` (cut by ``sizes``) with negatives drawn for
        them, a chunk of batches at a time."""
        k, start, index = self.config.negatives, 0, 0
        while index < len(sizes):
            group = [sizes[index]]
            while index + len(group) < len(sizes) and sum(group) < SAMPLE_CHUNK:
                group.append(sizes[index + len(group)])
            index += len(group)
            rows = mine[start : start + sum(group)]
            start += sum(group)
            users, items = self.users[rows], self.items[rows]
            negatives = self.sampler.sample(users, k, generator)  # (n, k)
            weights = None if self.weights is None else self.weights[rows]
            offset = 0
            for size in group:
                part = slice(offset, offset + size)
                offset += size
                yield self._batch(users[part], items[part], negatives[part], weights, part)

    def _batch(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        negatives: torch.Tensor,
        weights: torch.Tensor | None,
        part: slice,
    ) -> Batch:
        """One batch: BCE rows (positives, then their negatives) or BPR triples."""
        k = negatives.shape[1]
        w = None if weights is None else weights[part]
        repeated = users.repeat_interleave(k)
        if self.pairwise:  # (user, positive, negative) triples; the negative rides in `target`
            columns = [repeated, items.repeat_interleave(k), negatives.flatten().float()]
            weight = None if w is None else w.repeat_interleave(k)
        else:  # a negative weighs what the positive it was drawn for weighs
            n = len(users)
            columns = [
                torch.cat([users, repeated]),
                torch.cat([items, negatives.flatten()]),
                torch.cat([torch.ones(n), torch.zeros(n * k)]),
            ]
            weight = None if w is None else torch.cat([w, w.repeat_interleave(k)])
        weight = None if weight is None else weight.to(self.device)
        groups = 0 if self.pairwise else len(users)
        return Batch(*(c.to(self.device) for c in columns), weight=weight, groups=groups)

    def step(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, int]:
        if self.pairwise:
            margin = model(batch.user_idx, batch.item_idx) - model(
                batch.user_idx,
                batch.target.long(),  # target holds the negative
            )
            loss = weighted_mean(-F.logsigmoid(margin), batch.weight)
            hits = (margin.detach() > 0).sum()
            positive = torch.ones_like(margin, dtype=torch.bool)
        else:
            logits = self._logits(model, batch)
            losses = F.binary_cross_entropy_with_logits(logits, batch.target, reduction="none")
            loss = weighted_mean(losses, batch.weight)
            hits = ((logits.detach() > 0) == (batch.target > 0.5)).sum()
            positive = batch.target > 0.5
        if self.catalogue_weight > 0:  # only ever set for sampled training
            term = self._catalogue_term(model, batch, positive)
            if term is not None:
                loss = loss + self.catalogue_weight * term
        return loss, hits, len(batch.user_idx)

    def _catalogue_term(
        self, model: nn.Module, batch: Batch, positive: torch.Tensor
    ) -> torch.Tensor | None:
        """The catalogue softmax of the batch's positives (None: it has none). A BCE batch's
        positives are its first ``groups`` rows: a slice, where a boolean mask would cost a
        nonzero and a gather per column (and on a GPU a wait for the device every step)."""
        if batch.groups:
            rows: slice | torch.Tensor = slice(0, batch.groups)
        else:
            rows = positive
        users, items = batch.user_idx[rows], batch.item_idx[rows]
        if not len(users):
            return None
        weight = None if batch.weight is None else batch.weight[rows]
        known = None
        # the users' other training items; only when the softmax is exact: finding them
        # among sampled candidates costs what the users' histories cost (~290K items a
        # step at ML-20M's shape), the exact softmax's own cost bounds that here
        if self.config.known_negatives == "exclude" and self.softmax.exact:
            distinct, group = torch.unique(users, return_inverse=True)
            owner, seen = self.sampler.items_of(distinct)
            known = KnownItems(group, owner.to(users.device), seen.to(users.device), len(distinct))
        return catalogue_loss(model, users, items, weight, self.softmax, known)

    def _logits(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """The BCE batch's logits, in its row order. A sampled batch is its ``P`` positives,
        then their ``k`` negatives each, positive by positive (:meth:`_batch`); a model with
        ``score_groups`` scores it as ``P`` groups of ``k + 1`` items, paying for each
        user's part once per group instead of once per row."""
        score_groups = getattr(model, "score_groups", None)
        n = batch.groups
        if not n or score_groups is None:
            return model(batch.user_idx, batch.item_idx)
        items = torch.cat([batch.item_idx[:n, None], batch.item_idx[n:].view(n, -1)], 1)
        logits = score_groups(batch.user_idx[:n], items)  # (P, k + 1)
        return torch.cat([logits[:, 0], logits[:, 1:].reshape(-1)])
