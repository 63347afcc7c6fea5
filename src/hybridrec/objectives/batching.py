"""How an epoch's samples are cut into batches: shuffled slices for one process, each
rank's share of every global batch for several (``torchrun``), and the per-row weights the
losses average with."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from hybridrec.config import TrainConfig
from hybridrec.data.dataset import Batch, RecSysDataset
from hybridrec.data.sequences import recency_weights
from hybridrec.errors import ConfigError


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


def slices(tensors: tuple[torch.Tensor, ...], sizes: list[int]) -> Iterator[Batch]:
    """Consecutive slices of the columns ``tensors`` (already in this rank's order)."""
    start = 0
    for size in sizes:
        yield Batch(*(t[start : start + size] for t in tensors))
        start += size


def shuffled(
    columns: tuple[torch.Tensor, ...], batch_size: int, generator: torch.Generator
) -> Iterator[Batch]:
    """One epoch of batches over ``columns`` in a fresh random order (a single process)."""
    n = len(columns[0])
    order = torch.randperm(n, generator=generator).to(columns[0].device)
    sizes = [min(batch_size, n - start) for start in range(0, n, batch_size)]
    return slices(tuple(c[order] for c in columns), sizes)


def weighted_mean(losses: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
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
