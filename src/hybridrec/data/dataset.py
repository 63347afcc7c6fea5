"""The encoded interactions as tensors, and fast ways to batch them.

``RecSysDataset`` keeps the seed's name and per-sample interface, but stores whole columns as
tensors, so a batch is one gather (``__getitems__``) rather than ``batch_size`` Python calls.
Training does not use a ``DataLoader`` at all: :func:`iterate_batches` shuffles the columns once
per epoch and yields contiguous slices, which costs nothing per batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from hybridrec.data.encoding import UNKNOWN_INDEX, IdEncoder
from hybridrec.data.io import ITEM, TARGET, TIMESTAMP, USER


class Batch(NamedTuple):
    """A mini-batch: ``user_idx`` and ``item_idx`` (B,) int64, ``target`` (B,) float32, and
    optional per-row loss weights ``weight`` (B,) float32 (``None``: all rows weigh 1).

    ``groups`` marks a batch of sampled negatives laid out by positive: its first
    ``groups`` rows are positives, then each positive's negatives in turn, the same number
    for each (0: no such layout)."""

    user_idx: torch.Tensor
    item_idx: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor | None = None
    groups: int = 0


@dataclass(frozen=True)
class UnknownCounts:
    """How many rows referred to ids the encoders have never seen."""

    rows: int
    rows_with_unknown: int
    unknown_users: int
    unknown_items: int

    def describe(self, name: str) -> str:
        """One line for the user, e.g. 'val.csv: 37 of 1000 rows with 12 unknown users'."""
        if not self.rows_with_unknown:
            return f"{name}: {self.rows} rows, all ids known"
        return (
            f"{name}: {self.rows_with_unknown} of {self.rows} rows with {self.unknown_users} "
            f"unknown users and {self.unknown_items} unknown items (scored as unknown)"
        )


class RecSysDataset(torch.utils.data.Dataset):
    """Encoded ``(user_idx, item_idx, target)`` triples held as three column tensors.

    Args:
        user_idx: (N,) dense user indices (0 = unknown user).
        item_idx: (N,) dense item indices (0 = unknown item).
        target: (N,) 0/1 labels.
        timestamp: (N,) float64 interaction times, or ``None`` when the data has none
            (sequence models then take each user's rows in file order).

    Example:
        >>> ds = RecSysDataset(torch.tensor([1, 2]), torch.tensor([3, 1]), torch.tensor([1.0, 0.0]))
        >>> ds[0]
        (tensor(1), tensor(3), tensor(1.))
        >>> loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_batch)
        >>> next(iter(loader)).item_idx
        tensor([3, 1])
    """

    def __init__(
        self,
        user_idx: torch.Tensor,
        item_idx: torch.Tensor,
        target: torch.Tensor,
        timestamp: torch.Tensor | None = None,
    ) -> None:
        if not (len(user_idx) == len(item_idx) == len(target)) or (
            timestamp is not None and len(timestamp) != len(target)
        ):
            raise ValueError(
                f"column lengths differ: {len(user_idx)} users, {len(item_idx)} items, "
                f"{len(target)} targets"
                + ("" if timestamp is None else f", {len(timestamp)} timestamps")
            )
        self.user_idx = user_idx.to(torch.int64)
        self.item_idx = item_idx.to(torch.int64)
        self.target = target.to(torch.float32)
        self.timestamp = None if timestamp is None else timestamp.to(torch.float64)

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, users: IdEncoder, items: IdEncoder
    ) -> tuple[RecSysDataset, UnknownCounts]:
        """Encode a frame from :func:`read_interactions`; unknown ids become index 0."""
        u = users.transform(frame[USER].to_numpy())
        i = items.transform(frame[ITEM].to_numpy())
        unknown_u, unknown_i = u == UNKNOWN_INDEX, i == UNKNOWN_INDEX
        counts = UnknownCounts(
            rows=len(frame),
            rows_with_unknown=int((unknown_u | unknown_i).sum()),
            unknown_users=int(pd.unique(frame[USER].to_numpy()[unknown_u]).size),
            unknown_items=int(pd.unique(frame[ITEM].to_numpy()[unknown_i]).size),
        )
        ds = cls(
            torch.from_numpy(u),
            torch.from_numpy(i),
            torch.from_numpy(np.array(frame[TARGET], dtype=np.float32)),
            torch.from_numpy(np.array(frame[TIMESTAMP], dtype=np.float64))
            if TIMESTAMP in frame.columns
            else None,
        )
        return ds, counts

    def __len__(self) -> int:
        return len(self.target)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.user_idx[index], self.item_idx[index], self.target[index]

    def __getitems__(self, indices: Sequence[int]) -> GatheredSamples:
        """A whole batch with one gather per column (used by ``DataLoader``): handed to
        :func:`collate_batch` as it is, or sample by sample to torch's default collate."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return GatheredSamples(Batch(self.user_idx[idx], self.item_idx[idx], self.target[idx]))

    def to(self, device: torch.device | str) -> RecSysDataset:
        """The same data on another device (training keeps it there for the whole run)."""
        return RecSysDataset(
            self.user_idx.to(device),
            self.item_idx.to(device),
            self.target.to(device),
            None if self.timestamp is None else self.timestamp.to(device),
        )


class GatheredSamples(Sequence):
    """A batch gathered column-wise that still reads as the list of ``(user, item, target)``
    samples torch's ``DataLoader`` contract for ``__getitems__`` asks for: so the seed's
    plain ``DataLoader(dataset, batch_size=...)`` (default collate) yields ``[users, items,
    targets]``, and :func:`collate_batch` takes the gathered :class:`Batch` with no
    per-sample work."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch

    def __len__(self) -> int:
        return len(self.batch.target)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[override]
        b = self.batch
        return b.user_idx[j], b.item_idx[j], b.target[j]


def collate_batch(batch: GatheredSamples | Batch) -> Batch:
    """``collate_fn`` for a ``DataLoader`` over :class:`RecSysDataset`: the batch is ready."""
    return batch.batch if isinstance(batch, GatheredSamples) else batch


def iterate_batches(
    data: RecSysDataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[Batch]:
    """Yield mini-batches; with ``shuffle``, one permutation per call (i.e. per epoch).

    Shuffling gathers each column once up front and then slices views, which is much cheaper
    than a random gather per batch.
    """
    u, i, t = data.user_idx, data.item_idx, data.target
    if shuffle:
        perm = torch.randperm(len(t), generator=generator, device="cpu").to(t.device)
        u, i, t = u[perm], i[perm], t[perm]
    for start in range(0, len(t), batch_size):
        end = start + batch_size
        yield Batch(u[start:end], i[start:end], t[start:end])
