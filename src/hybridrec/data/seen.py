"""What each user interacted with in training: the items recommendations leave out.

A data structure of the model directory (``seen.npz``), kept apart from the artifact code
that stores it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from hybridrec.data.popularity import item_counts

#: ``newer`` counts are capped here (uint8): the recency weight reaches its floor long
#: before (0.5 ** (a / 8) < 0.05 from a = 35 at the default half-life; 65 at 15), so a larger count
#: changes no weight, and the store costs one byte per pair.
NEWER_CAP = 255


@dataclass(frozen=True, eq=False)
class SeenItems:
    """Each user's training positives as CSR arrays, and each item's positive count.

    Row ``u`` (a user index, 0 = unknown and always empty) holds the item indices
    ``items[indptr[u]:indptr[u + 1]]``, sorted and without duplicates. Recommendations
    exclude them; ``item_counts`` ranks items for users the model does not know.

    Attributes:
        indptr: int64 (num_users + 1,), ``num_users`` counting the unknown row 0.
        items: int32 item indices of all users, row after row.
        item_counts: int64 (num_items,) training positives per item index (repeated rows
            count each time, as the popularity model counts them).
        newer: uint8 (len(items),) or None: for each pair, how many of the user's training
            positives are more recent (capped at :data:`NEWER_CAP`; a repeated pair counts
            its latest time). Stored when the data had timestamps, so that an update
            (``hybridrec update``) can weight a user's old positives by recency as the
            training did; without it every old positive would weigh the same and an update
            would fit the distant past as closely as the recent one.

    Example:
        >>> seen = SeenItems.from_pairs([1, 1, 2, 1], [3, 2, 3, 3], num_users=3, num_items=4)
        >>> seen.of(1).tolist(), seen.of(2).tolist(), seen.item_counts.tolist()
        ([2, 3], [3], [0, 0, 1, 3])
    """

    indptr: np.ndarray
    items: np.ndarray
    item_counts: np.ndarray
    newer: np.ndarray | None = None

    @classmethod
    def from_pairs(
        cls,
        user_idx: Any,
        item_idx: Any,
        *,
        num_users: int,
        num_items: int,
        newer: Any = None,
    ) -> SeenItems:
        """Build from encoded positive ``(user, item)`` pairs; duplicates are allowed.

        Args:
            user_idx, item_idx: (N,) indices of the positive training rows.
            num_users, num_items: embedding rows (``IdEncoder.num_embeddings``).
            newer: (N,) optional recency of each row (its user's rows that are more recent,
                :func:`~hybridrec.data.sequences.interactions_newer`); capped and kept
                per pair, the smallest of a repeated pair's.
        """
        users = np.asarray(user_idx, dtype=np.int64).reshape(-1)
        items = np.asarray(item_idx, dtype=np.int64).reshape(-1)
        if len(users) != len(items):
            raise ValueError(f"got {len(users)} user indices but {len(items)} item indices")
        if len(users) and (users.min() < 0 or users.max() >= num_users):
            raise ValueError(f"user indices must lie in 0..{num_users - 1}")
        if len(items) and (items.min() < 0 or items.max() >= num_items):
            raise ValueError(f"item indices must lie in 0..{num_items - 1}")
        counts = item_counts(items, num_items).numpy()
        if newer is not None:
            return cls._with_newer(users, items, newer, num_users, num_items, counts)
        # one sorted key per pair: sorts by user, then item, and drops repeated pairs
        # (sort + neighbour test, not np.unique: same result, ~100x faster on 20M keys here)
        keys = np.sort(users * num_items + items)
        keys = keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys
        row, col = keys // num_items, keys % num_items
        return cls(_indptr(row, num_users), col.astype(np.int32), counts)

    @classmethod
    def _with_newer(
        cls, users: np.ndarray, items: np.ndarray, newer: Any, num_users: int,
        num_items: int, counts: np.ndarray,
    ) -> SeenItems:  # fmt: skip
        """:meth:`from_pairs` carrying each pair's (smallest) recency along."""
        age = np.minimum(np.asarray(newer, dtype=np.int64).reshape(-1), NEWER_CAP)
        if len(age) != len(users) or (len(age) and age.min() < 0):
            raise ValueError("newer must hold one count >= 0 per pair")
        pair = users * num_items + items
        if num_users * num_items < 2**54:  # the recency in the low byte of one sort key
            keys = np.sort(pair * (NEWER_CAP + 1) + age)
            pair, age = keys // (NEWER_CAP + 1), keys % (NEWER_CAP + 1)
        else:
            order = np.lexsort((age, pair))
            pair, age = pair[order], age[order]
        first = np.r_[True, pair[1:] != pair[:-1]] if len(pair) else np.zeros(0, dtype=bool)
        pair, age = pair[first], age[first]  # a repeated pair keeps its latest time
        row, col = pair // num_items, pair % num_items
        return cls(_indptr(row, num_users), col.astype(np.int32), counts, age.astype(np.uint8))

    @classmethod
    def empty(cls, num_users: int, num_items: int) -> SeenItems:
        """Nothing seen, every count zero: what a model saved without ``seen.npz`` gets."""
        return cls(
            np.zeros(num_users + 1, dtype=np.int64),
            np.zeros(0, dtype=np.int32),
            np.zeros(num_items, dtype=np.int64),
        )

    @property
    def num_users(self) -> int:
        return len(self.indptr) - 1

    @property
    def num_items(self) -> int:
        return len(self.item_counts)

    def of(self, user: int) -> np.ndarray:
        """Sorted item indices user index ``user`` has as training positives."""
        return self.items[self.indptr[user] : self.indptr[user + 1]]

    def newer_of(self, user: int) -> np.ndarray | None:
        """The recency of each of :meth:`of`'s items (None when none is stored)."""
        if self.newer is None:
            return None
        return self.newer[self.indptr[user] : self.indptr[user + 1]]

    def to_bytes(self) -> bytes:
        """The ``seen.npz`` payload (numpy arrays only, so loading runs no code)."""
        buffer = io.BytesIO()
        arrays = {"indptr": self.indptr, "items": self.items, "item_counts": self.item_counts}
        if self.newer is not None:
            arrays["newer"] = self.newer
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, *, num_users: int, num_items: int) -> SeenItems:
        """Parse and check a ``seen.npz`` payload against the model's table sizes.

        Raises:
            ValueError: the payload is not such a file or does not fit the sizes.
        """
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            missing = {"indptr", "items", "item_counts"} - set(npz.files)
            if missing:
                raise ValueError(f"it has no array(s) {', '.join(sorted(missing))}")
            indptr = npz["indptr"].astype(np.int64, copy=False)
            items = npz["items"].astype(np.int32, copy=False)
            counts = npz["item_counts"].astype(np.int64, copy=False)
            newer = npz["newer"] if "newer" in npz.files else None
        if indptr.shape != (num_users + 1,) or counts.shape != (num_items,):
            raise ValueError(
                f"it is sized for {len(indptr) - 1} users and {len(counts)} items, "
                f"the id maps for {num_users} and {num_items}"
            )
        if indptr[0] != 0 or indptr[-1] != len(items) or (np.diff(indptr) < 0).any():
            raise ValueError("its indptr is not a valid CSR row index")
        if len(items) and (items.min() < 0 or items.max() >= num_items):
            raise ValueError(f"its item indices do not all lie in 0..{num_items - 1}")
        if newer is not None and (newer.dtype != np.uint8 or newer.shape != items.shape):
            raise ValueError("its newer array is not one uint8 per stored pair")
        return cls(indptr, items, counts, newer)


def _indptr(row: np.ndarray, num_users: int) -> np.ndarray:
    """CSR row index of sorted row numbers."""
    indptr = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=num_users), out=indptr[1:])
    return indptr
