"""Training objectives: what one epoch's batches are and what loss a batch gives.

``fit`` owns the loop (optimiser, progress, validation, early stopping); an objective owns
the data of an epoch and the loss. A model names its objective among its capabilities
(``objective = "next_item"``, see :class:`~hybridrec.models.RecModel`); the default is
pointwise. A new kind of model with a new way to learn is one class here and one entry in
:data:`OBJECTIVES`.

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
import math
from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from hybridrec.config import TrainConfig
from hybridrec.data.dataset import Batch, RecSysDataset
from hybridrec.data.encoding import UNKNOWN_INDEX
from hybridrec.data.popularity import item_counts
from hybridrec.data.sampling import NegativeSampler
from hybridrec.data.sequences import pack_histories, recency_weights
from hybridrec.errors import ConfigError
from hybridrec.models import RecModel, capabilities
from hybridrec.retrieval import query_vectors, retrieval_factors
from hybridrec.sampled_softmax import SharedNegatives

#: Positives whose negatives are drawn in one call: bounds an epoch's memory to a chunk
#: (not the whole epoch's rows) while keeping the sampler's per-call overhead amortised.
SAMPLE_CHUNK = 1 << 16


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


def shard_order(
    order: torch.Tensor, batch_size: int, rank: int = 0, world: int = 1
) -> tuple[torch.Tensor, list[int]]:
    """Rank ``rank``'s part of each global batch of ``order``: ``(indices, sizes per step)``.

    ``order`` (an epoch's shuffled sample indices) is cut into global batches of
    ``batch_size``; each is split into ``world`` near-equal contiguous parts
    (``torch.tensor_split``) and part ``rank`` is kept. Every rank gets the same number of
    steps (DDP needs that); a last global batch smaller than ``world`` is dropped so that no
    rank gets an empty one. ``world == 1`` returns ``order`` itself.

    Example:
        >>> idx, sizes = shard_order(torch.arange(10), 4, rank=1, world=2)
        >>> idx.tolist(), sizes
        ([2, 3, 6, 7, 9], [2, 2, 1])
    """
    n = len(order)
    if world == 1:
        return order, [min(batch_size, n - start) for start in range(0, n, batch_size)]
    if batch_size < world:
        raise ConfigError(
            f"--batch-size {batch_size} is smaller than the {world} training processes; "
            "each process needs at least one sample per step"
        )
    full = n // batch_size
    # part `rank` of every full batch at once: the same columns of a (full, batch) view
    lo = _split_start(batch_size, world, rank)
    hi = lo + _split_size(batch_size, world, rank)
    parts = [order[: full * batch_size].view(full, batch_size)[:, lo:hi].reshape(-1)]
    sizes = [hi - lo] * full
    tail = order[full * batch_size :]
    if len(tail) >= world:
        part = tail.tensor_split(world)[rank]
        parts.append(part)
        sizes.append(len(part))
    return torch.cat(parts), sizes


def _split_size(n: int, parts: int, index: int) -> int:
    """Size of part ``index`` when ``torch.tensor_split`` cuts ``n`` into ``parts``."""
    return n // parts + (1 if index < n % parts else 0)


def _split_start(n: int, parts: int, index: int) -> int:
    return index * (n // parts) + min(index, n % parts)


def _slices(tensors: tuple[torch.Tensor, ...], sizes: list[int]) -> Iterator[Batch]:
    """Consecutive slices of the columns ``tensors`` (already in this rank's order)."""
    start = 0
    for size in sizes:
        yield Batch(*(t[start : start + size] for t in tensors))
        start += size


def _shuffled(
    columns: tuple[torch.Tensor, ...], batch_size: int, generator: torch.Generator
) -> Iterator[Batch]:
    """One epoch of batches over ``columns`` in a fresh random order (a single process)."""
    n = len(columns[0])
    order = torch.randperm(n, generator=generator).to(columns[0].device)
    sizes = [min(batch_size, n - start) for start in range(0, n, batch_size)]
    return _slices(tuple(c[order] for c in columns), sizes)


def _weighted_mean(losses: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean of per-row ``losses``, each times its weight (weights have mean 1 overall)."""
    return losses.mean() if weight is None else (losses * weight).mean()


def positive_weights(
    train: RecSysDataset, positive: torch.Tensor, config: TrainConfig
) -> torch.Tensor | None:
    """Recency weights of the positive rows (``--recency-half-life``), or ``None`` when the
    option is off or the data has no timestamps to order by."""
    if config.recency_half_life <= 0 or train.timestamp is None:
        return None
    every = bool(positive.all())  # positives-only data: no copies of the columns
    return recency_weights(
        train.user_idx if every else train.user_idx[positive],
        train.timestamp if every else train.timestamp[positive],
        config.recency_half_life,
        config.recency_floor,
    )


def catalogue_loss(
    model: nn.Module,
    user_idx: torch.Tensor,
    item_idx: torch.Tensor,
    weight: torch.Tensor | None,
    negatives: SharedNegatives | None = None,
) -> torch.Tensor:
    """Softmax cross-entropy of each positive against the catalogue, on the model's
    dot-product score (what two-stage retrieval ranks by).

    Sampled negatives are mostly obscure items, so they rarely teach a model to rank the
    positive above the *popular* items it competes with in a full ranking; a softmax over
    the catalogue does. ``negatives`` makes it a sampled softmax whose cost per row does
    not grow with the catalogue (:mod:`hybridrec.sampled_softmax`); without it the softmax
    is exact over every item.
    """
    _, items = retrieval_factors(model)
    if negatives is None:
        negatives = SharedNegatives(torch.zeros(items.num_embeddings), items.num_embeddings)
        negatives.to(items.weight.device)
    loss, _ = negatives.loss(
        query_vectors(model, user_idx), items, item_idx, weight, count_hits=False
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
        self.per_batch = max(1, math.ceil(config.batch_size / self.factor))

    def batches(
        self,
        generator: torch.Generator,
        *,
        rank: int = 0,
        world: int = 1,
        sample_generator: torch.Generator | None = None,
    ) -> Iterator[Batch]:
        bs = self.config.batch_size
        if not self.sampled and world == 1:
            return _shuffled(
                (self.data.user_idx, self.data.item_idx, self.data.target), bs, generator
            )
        if not self.sampled:  # the same permutation as with one process, then this rank's part
            order = torch.randperm(len(self.data), generator=generator).to(self.device)
            mine, sizes = shard_order(order, bs, rank, world)
            data = self.data
            return _slices((data.user_idx[mine], data.item_idx[mine], data.target[mine]), sizes)
        # every rank shuffles the positives alike and takes its part of each global batch
        order = torch.randperm(len(self.users), generator=generator)
        mine, sizes = shard_order(order, max(self.per_batch, world), rank, world)
        return self._sampled(mine, sizes, sample_generator or generator)

    @property
    def num_batches(self) -> int:
        """Steps of one single-process epoch."""
        if not self.sampled:
            return math.ceil(self.num_samples / self.config.batch_size)
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
            loss = _weighted_mean(-F.logsigmoid(margin), batch.weight)
            hits = (margin.detach() > 0).sum()
            positive = torch.ones_like(margin, dtype=torch.bool)
        else:
            logits = self._logits(model, batch)
            losses = F.binary_cross_entropy_with_logits(logits, batch.target, reduction="none")
            loss = _weighted_mean(losses, batch.weight)
            hits = ((logits.detach() > 0) == (batch.target > 0.5)).sum()
            positive = batch.target > 0.5
        if self.catalogue_weight > 0:  # only ever set for sampled training
            users, items = batch.user_idx[positive], batch.item_idx[positive]
            if len(users):
                weight = None if batch.weight is None else batch.weight[positive]
                term = catalogue_loss(model, users, items, weight, self.softmax)
                loss = loss + self.catalogue_weight * term
        return loss, hits, len(batch.user_idx)

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


class Softmax:
    """Each positive (user, item) against the whole catalogue: cross-entropy over
    ``score_all(user)`` (``--loss ce`` for the pointwise models).

    No negatives are sampled: every other item is a negative, each step. A step costs one
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

    @property
    def num_batches(self) -> int:
        """Steps of one single-process epoch."""
        return math.ceil(self.num_samples / self.config.batch_size)

    def batches(
        self,
        generator: torch.Generator,
        *,
        rank: int = 0,
        world: int = 1,
        sample_generator: torch.Generator | None = None,
    ) -> Iterator[Batch]:
        order = torch.randperm(self.num_samples, generator=generator).to(self.users.device)
        mine, sizes = shard_order(order, self.config.batch_size, rank, world)
        columns = [self.users[mine], self.items[mine]]
        columns.append(torch.ones_like(columns[0], dtype=torch.float32))
        if self.weights is not None:
            columns.append(self.weights[mine])
        return _slices(tuple(columns), sizes)

    def step(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, int]:
        logits = model.score_all(batch.user_idx)  # (B, I)
        logits[:, UNKNOWN_INDEX] = -torch.inf
        loss = _weighted_mean(
            F.cross_entropy(logits, batch.item_idx, reduction="none"), batch.weight
        )
        hits = (logits.detach().argmax(1) == batch.item_idx).sum()
        return loss, hits, len(logits)


class NextItem:
    """Next-item prediction along each user's chronological history (SASRec-style).

    Every user with at least two positives contributes their latest ``max_len + 1`` items:
    the model reads items ``0..t`` and is scored on item ``t + 1``. ``--batch-size`` counts
    predicted positions, so samples/s compare with pointwise models; a batch holds
    ``batch_size // max_len`` histories (at least one).

    Losses: ``bce`` scores the next item against ``--negatives`` uniformly sampled items per
    position; ``bpr`` uses the same negatives pairwise; ``ce`` (sasrec's default) is a
    softmax over the catalogue: exact up to ``--softmax-negatives`` items, a sampled softmax
    with shared, log-Q-corrected negatives above (:mod:`hybridrec.sampled_softmax`), so a
    position's cost does not grow with the catalogue. Sampled negatives are not filtered
    against the user's history (an accidental hit on one of the ~N_user/N_items of the
    catalogue they know is rare and costs only noise); a negative equal to the target
    itself is dropped.
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
                "none has more than one in the rows trained on (without --val, one row of "
                "each user is held out first to choose the epochs: --val none trains on all)"
            )
        self.num_samples = int((self.histories[:, 1:] != UNKNOWN_INDEX).sum())
        self.per_batch = max(1, config.batch_size // max_len)
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
            loss, hits = self.softmax.loss(states, items, targets)
            return loss, hits, n
        k = self.config.negatives
        negatives = torch.randint(1, self.num_items, (n, k), device=states.device)
        pos = (states * items(targets)).sum(-1)  # (N,)
        neg = torch.einsum("nd,nkd->nk", states, items(negatives))  # (N, k)
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
